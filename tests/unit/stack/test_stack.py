"""`up` refuses busy ports and twins; `down` stops exactly what `up` recorded, and only that."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dsbridge.stack.processes import alive, spawn, stop_group
from dsbridge.stack.stack import StackConfig, StackError, check_ports_free, down, up


@pytest.fixture
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(state_dir=tmp_path / "state", base_port=_free_base())


def _free_base() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1]) % 20000 + 20000


def test_busy_port_is_named_with_its_component(cfg: StackConfig):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", cfg.ports["service"]))
        busy.listen()
        with pytest.raises(StackError, match=rf"{cfg.ports['service']} \(service\).*--base-port"):
            check_ports_free(cfg)
        with pytest.raises(StackError, match="already in use"):
            up(cfg, progress=lambda _msg: None)
    assert not cfg.pids_file.exists()


def test_down_without_a_stack_says_so(cfg: StackConfig):
    said: list[str] = []
    assert down(cfg, progress=said.append) == []
    assert said == ["no stack is running"]


def test_down_stops_recorded_process_groups_only(cfg: StackConfig, tmp_path: Path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    recorded = spawn(sleeper, env={}, log_path=tmp_path / "recorded.log")
    stranger = spawn(sleeper, env={}, log_path=tmp_path / "stranger.log")
    try:
        cfg.state_dir.mkdir(parents=True)
        cfg.pids_file.write_text(json.dumps({"service": recorded}))
        assert down(cfg, progress=lambda _msg: None) == ["service"]
        assert not alive(recorded)
        assert alive(stranger)
        assert not cfg.pids_file.exists()
        assert down(cfg, progress=lambda _msg: None) == []  # a second down is harmless
    finally:
        stop_group(stranger, grace=2)
        stop_group(recorded, grace=2)


def test_a_pid_that_leads_no_group_is_not_signalled():
    """A recorded pid reused by some other process (not a group leader) is left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # our own group
    try:
        stop_group(other.pid, grace=0.2, kill_timeout=0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=10)
