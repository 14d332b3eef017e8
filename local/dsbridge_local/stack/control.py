"""The files through which the stack's commands and its supervisor talk (all under the state dir).

- ``pids.json``: the current pid of each component (what `down` may stop); every update is a locked
  read-modify-write and an atomic replace, so no writer loses another's. ``supervisor.pid``: the
  supervisor's.
- ``status.json``: written by the supervisor on every change (start-up steps, each component's
  pid, state, restarts, last exit code, since); read by `up`, `status`, `stop_component`.
- ``control/<name>.hold``: keep ``name`` stopped (``stop_component``); the supervisor does not
  restart a held component. ``control/<name>.start``: start it now (``start_component``).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PIDS = "pids.json"
SUPERVISOR_PID = "supervisor.pid"
STATUS = "status.json"
CONTROL = "control"


def write_private_json(path: Path, content: Any) -> None:
    """Replace ``path`` atomically (readers never see half a file), mode 600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@contextmanager
def _locked(state_dir: Path) -> Generator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".pids.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_pids(state_dir: Path) -> dict[str, int]:
    return {name: int(pid) for name, pid in (_read_json(state_dir / PIDS) or {}).items()}


def record_pid(state_dir: Path, name: str, pid: int) -> None:
    with _locked(state_dir):
        pids = read_pids(state_dir)
        pids[name] = pid
        write_private_json(state_dir / PIDS, pids)


def record_supervisor(state_dir: Path, pid: int) -> None:
    (state_dir / SUPERVISOR_PID).write_text(str(pid))


def read_supervisor(state_dir: Path) -> int | None:
    try:
        return int((state_dir / SUPERVISOR_PID).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def read_status(state_dir: Path) -> dict[str, Any] | None:
    found = _read_json(state_dir / STATUS)
    return dict(found) if found else None


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    write_private_json(state_dir / STATUS, status)


def _marker(state_dir: Path, name: str, kind: str) -> Path:
    return state_dir / CONTROL / f"{name}.{kind}"


def hold(state_dir: Path, name: str) -> None:
    path = _marker(state_dir, name, "hold")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def held(state_dir: Path, name: str) -> bool:
    return _marker(state_dir, name, "hold").exists()


def request_start(state_dir: Path, name: str) -> None:
    """Ask for ``name`` to be started now; the request is written before the hold is released."""
    path = _marker(state_dir, name, "start")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    _marker(state_dir, name, "hold").unlink(missing_ok=True)


def start_requested(state_dir: Path, name: str) -> bool:
    return _marker(state_dir, name, "start").exists()


def take_start_request(state_dir: Path, name: str) -> bool:
    """Consume a start request for ``name``; True if there was one."""
    try:
        _marker(state_dir, name, "start").unlink()
    except FileNotFoundError:
        return False
    return True


def clear(state_dir: Path) -> None:
    """Forget every hold and request (a new stack starts with none)."""
    folder = state_dir / CONTROL
    if folder.is_dir():
        for marker in folder.iterdir():
            marker.unlink(missing_ok=True)
