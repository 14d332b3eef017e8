"""``python -m dsbridge_local.service`` starts a real server that a supervisor can run and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dsbridge.callback.event import encode
from dsbridge.callback.signing import new_secret, sign_headers
from dsbridge_local.ports import free_port
from tests.unit.client.events import event

ROOT = Path(__file__).resolve().parents[3]


def test_module_entry_point_serves_and_verifies(tmp_path: Path) -> None:
    secret, port, token = new_secret(), free_port(), "main-test-admin-token-0123456789"
    env = os.environ | {
        "DSBRIDGE_SERVICE_SECRETS": f"{new_secret()},{secret}",
        "DSBRIDGE_SERVICE_ADMIN_TOKEN": token,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "local")]),
    }
    cmd = [sys.executable, "-m", "dsbridge_local.service", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--db", str(tmp_path / "events.sqlite3")]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not become healthy within 15 s"
            time.sleep(0.05)
        sent = event()
        body = encode(sent)
        r = httpx.post(f"{base}/callbacks/dsbridge", content=body, headers=sign_headers(secret, sent["event_id"], body))
        assert r.status_code == 200, r.text
        assert httpx.get(f"{base}/events/{sent['event_id']}").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/events/{sent['event_id']}", headers=auth).json()["deliveries"] == 1
        assert secret not in " ".join(cmd) and token not in " ".join(cmd)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    assert proc.returncode is not None


@pytest.mark.parametrize("missing", ["DSBRIDGE_SERVICE_SECRETS", "DSBRIDGE_SERVICE_ADMIN_TOKEN"])
def test_missing_setting_exits_with_message(tmp_path: Path, missing: str) -> None:
    env = os.environ | {
        "DSBRIDGE_SERVICE_SECRETS": new_secret(),
        "DSBRIDGE_SERVICE_ADMIN_TOKEN": "main-test-admin-token-0123456789",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "local")]),
    }
    del env[missing]
    cmd = [sys.executable, "-m", "dsbridge_local.service", "--port", "1", "--db", str(tmp_path / "x.sqlite3")]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=30, text=True)
    assert done.returncode == 2
    assert missing in done.stderr
