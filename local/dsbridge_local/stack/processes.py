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
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A process could not be started or stopped."""


def launch(
    argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, output appended to `log_path` (for a parent that watches it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def spawn(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> int:
    """Start `argv` in a new session, output appended to `log_path`; return its pid."""
    return launch(argv, env=env, log_path=log_path, cwd=cwd).pid


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
    first_signal: signal.Signals = signal.SIGTERM,
) -> None:
    """Signal the group led by `pid` (SIGTERM), SIGKILL after `grace` seconds; bounded in time."""
    gone = gone or (lambda: not alive(pid))
    if gone() or not leads_own_group(pid):
        return
    for sig, wait in ((first_signal, grace), (signal.SIGKILL, kill_timeout)):
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


@dataclass(frozen=True)
class Proc:
    """One live (not zombie) process, as /proc shows it."""

    pid: int
    ppid: int
    pgid: int


def live_processes() -> list[Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and fields[0] != "Z":
            found.append(Proc(int(entry.name), int(fields[1]), int(fields[2])))
    return found


def group_members(pgid: int, table: list[Proc] | None = None) -> list[int]:
    """Live processes of group `pgid` (its leader may be gone; Linux reuses no pid while they live)."""
    return [p.pid for p in (live_processes() if table is None else table) if p.pgid == pgid]


def supervising(pgid: int, table: list[Proc]) -> set[int]:
    """Members of `pgid` with a live child in another group: they still watch work of their own
    (a LocalExecutor worker and the task it runs)."""
    members = set(group_members(pgid, table))
    return {p.ppid for p in table if p.ppid in members and p.pgid != pgid}


def stop_members(pgid: int, grace: float = 5.0, kill_timeout: float = 5.0) -> None:
    """SIGTERM what is left of group `pgid` (its leader gone), SIGKILL after `grace`; bounded."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_timeout)):
        if not group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.1)
