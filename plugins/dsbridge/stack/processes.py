"""Start and stop the stack's own processes, each the leader of its own process group.

Stopping signals the whole group (a component's children go with it) and only if the recorded
pid still leads its own group, so a reused pid of an unrelated process is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ProcessError(RuntimeError):
    """A process could not be started or stopped."""


def spawn(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> int:
    """Start `argv` in a new session, output appended to `log_path`; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def leads_own_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def stop_group(
    pid: int,
    gone: Callable[[], bool] | None = None,
    grace: float = 15.0,
    kill_timeout: float = 5.0,
) -> None:
    """SIGTERM the group led by `pid`, SIGKILL after `grace` seconds; bounded in time."""
    gone = gone or (lambda: not alive(pid))
    if gone() or not leads_own_group(pid):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_timeout)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.05)
    if not gone():
        raise ProcessError(f"process group {pid} did not exit after SIGKILL")
