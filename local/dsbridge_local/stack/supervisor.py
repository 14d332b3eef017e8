"""Keeps the stack running: starts every component in order, restarts one that dies, and says so.

Why: `dsbridge up` used to spawn detached processes and exit. When the scheduler, triggerer and
dag-processor died, nothing restarted them and requests sat queued with no error, alert or
callback. Now `up` starts this supervisor (`python -m dsbridge_local.stack.supervisor --state-dir …`),
the parent of every component, which

- restarts a component that exits, with backoff (1 s doubling to 30 s) and a bound (5 restarts
  per component per 10 minutes); after that it stays down (state ``failed``) and is reported
  unhealthy. Each restart and each give-up is logged to ``<logs>/supervisor.log`` and raised as an
  alert (``component_restarted`` / ``component_failed``) in the stack's alerts file;
- leaves alone a component held stopped on purpose (``stop_component``) and starts it again when
  asked (``start_component``), through the marker files of `dsbridge_local.stack.control`;
- writes ``<state_dir>/status.json`` on every change.

A component is its process group. When its leader dies, what is left of the group is stopped
(PostgreSQL backends would keep the old server's shared memory, API workers its port), except
members still watching work in a group of their own -- a LocalExecutor worker and the task it runs --
which are stopped when that work ends (at most `LEFTOVER_DRAIN` seconds), so a scheduler crash does
not kill tasks in flight.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dsbridge_local.stack import control
from dsbridge_local.stack.processes import group_members, live_processes, stop_members, supervising

Launcher = Callable[[], "subprocess.Popen[bytes]"]
Alert = Callable[[dict[str, Any]], None]

LEFTOVER_DRAIN = 600.0
LEFTOVER_KILL_AFTER = 5.0
TICK = 0.25


class Stopping(Exception):
    """The supervisor was asked to stop (SIGTERM) while it was starting the stack."""


class StartupError(RuntimeError):
    """A component did not come up; the message names it and its log."""


@dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts per component per `window` seconds, with doubling backoff."""

    max_restarts: int = 5
    window: float = 600.0
    first_backoff: float = 1.0
    max_backoff: float = 30.0

    def backoff(self, recent: int) -> float:
        return float(min(self.max_backoff, self.first_backoff * 2**recent))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Child:
    """One supervised component: how to start it and what became of it."""

    name: str
    launch: Launcher
    proc: subprocess.Popen[bytes] | None = None
    state: str = "pending"
    restarts: int = 0
    recent: deque[float] = field(default_factory=deque)
    last_exit_code: int | None = None
    since: str = field(default_factory=_now)
    restart_at: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def report(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "state": self.state,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "since": self.since,
        }


@dataclass
class Leftover:
    """What remained of a component's process group after its leader died."""

    component: str
    pgid: int
    drain_until: float
    signalled: dict[int, float] = field(default_factory=dict)


class Supervisor:
    """Watches the components in `launchers` (in start order); see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        launchers: dict[str, Launcher],
        *,
        log_file: Path,
        alert: Alert,
        policy: RestartPolicy | None = None,
        drain: float = LEFTOVER_DRAIN,
        needs: dict[str, list[str]] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.needs = needs or {}
        self.children = {name: Child(name, launch) for name, launch in launchers.items()}
        self.log_file = log_file
        self.alert = alert
        self.policy = policy or RestartPolicy()
        self.drain = drain
        self.phase = "starting"
        self.steps: list[str] = []
        self.error: str | None = None
        self.leftovers: list[Leftover] = []
        self.stop_requested = False
        self._written: dict[str, Any] | None = None

    # --- reporting ------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", encoding="utf-8") as log:
            log.write(f"{_now()} {message}\n")

    def write_status(self) -> None:
        content = {
            "version": 1,
            "supervisor": {"pid": os.getpid(), "phase": self.phase},
            "steps": self.steps,
            "error": self.error,
            "components": {name: child.report() for name, child in self.children.items()},
            "leftovers": [{"component": left.component, "pgid": left.pgid} for left in self.leftovers],
        }
        if content != self._written:
            control.write_status(self.state_dir, content)
            self._written = content

    def _set(self, child: Child, state: str) -> None:
        child.state, child.since = state, _now()

    # --- starting -------------------------------------------------------------------------------

    def start(self, name: str) -> subprocess.Popen[bytes]:
        child = self.children[name]
        self._launch(child)
        self.log(f"started {name} (pid {child.pid})")
        self.write_status()
        assert child.proc is not None
        return child.proc

    def _launch(self, child: Child) -> None:
        child.proc = child.launch()
        control.record_pid(self.state_dir, child.name, child.proc.pid)
        self._set(child, "running")

    def _relaunch(self, child: Child, verb: str) -> bool:
        """Launch `child` again; one that cannot even start is handled as if it had exited."""
        try:
            self._launch(child)
        except Exception as exc:
            self.log(f"could not {verb} {child.name}: {exc}")
            self._exited(child, None, None)
            return False
        return True

    def step(self, message: str) -> None:
        """One line of start-up progress (`up` prints it)."""
        self.steps.append(message)
        self.log(message.strip())
        self.write_status()

    def check_stop(self) -> None:
        if self.stop_requested:
            raise Stopping

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float, log: Path | None = None) -> float:
        """Poll `check` (bounded); fail at once if a started component exits. Return the seconds."""
        began = time.monotonic()
        while True:
            self.check_stop()
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is not None:
                    self._set(child, "failed")
                    child.last_exit_code = child.proc.returncode
                    raise StartupError(
                        f"{child.name} exited with code {child.proc.returncode} while the stack was starting"
                    )
            if check():
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise StartupError(f"{what} was not ready within {timeout:.0f}s; see {log}{log_tail(log)}")
            time.sleep(0.2)

    def started(self) -> None:
        self.phase = "up"
        self.log("every component is up; watching")
        self.write_status()

    def failed(self, error: str) -> None:
        self.phase, self.error = "failed", error
        self.log(f"start-up failed: {error}")
        self.write_status()

    # --- watching -------------------------------------------------------------------------------

    def watch(self, timeout: float | None = None) -> None:
        """Tick until asked to stop (or `timeout` seconds, for tests)."""
        began = time.monotonic()
        while not self.stop_requested and (timeout is None or time.monotonic() - began < timeout):
            try:
                self.tick()
            except Exception:
                self.log(f"supervisor error (it keeps watching):\n{traceback.format_exc()}")
                time.sleep(1.0)
            time.sleep(TICK)

    def tick(self) -> None:
        for child in self.children.values():
            if child.state != "pending":
                self._watch(child)
        self._drain_leftovers()
        self.write_status()

    def _watch(self, child: Child) -> None:
        if child.state == "running" and child.proc is not None and child.proc.poll() is not None:
            self._exited(child, child.proc.pid, child.proc.returncode)
        requested = control.take_start_request(self.state_dir, child.name)
        if child.state == "running":
            return  # a start request for a running component asks for nothing
        held = control.held(self.state_dir, child.name)
        if requested or (child.state == "stopped" and not held):
            self._start_on_request(child)
        elif child.state == "restarting" and held:
            self._set(child, "stopped")
            self.log(f"{child.name} is held stopped; not restarting it")
        elif child.state == "restarting" and time.monotonic() >= child.restart_at and not self._waiting_for(child):
            self._restart(child)

    def _waiting_for(self, child: Child) -> list[str]:
        """What `child` needs that is not running now (it is restarted once they are)."""
        return [name for name in self.needs.get(child.name, []) if self.children[name].state != "running"]

    def _exited(self, child: Child, pid: int | None, code: int | None) -> None:
        child.last_exit_code = code
        if pid is not None and group_members(pid):
            self.leftovers.append(Leftover(child.name, pid, time.monotonic() + self.drain))
        if control.held(self.state_dir, child.name) or control.start_requested(self.state_dir, child.name):
            self._set(child, "stopped")
            self.log(f"{child.name} (pid {pid}) stopped on request (exit {code})")
            return
        now = time.monotonic()
        while child.recent and now - child.recent[0] > self.policy.window:
            child.recent.popleft()
        if len(child.recent) >= self.policy.max_restarts:
            self._give_up(child, pid, code)
            return
        delay = self.policy.backoff(len(child.recent))
        child.restart_at = now + delay
        self._set(child, "restarting")
        self.log(
            f"{child.name} (pid {pid}) exited with code {code}; restarting in {delay:g}s "
            f"(restart {len(child.recent) + 1} of at most {self.policy.max_restarts} per {self.policy.window:g}s)"
        )

    def _give_up(self, child: Child, pid: int | None, code: int | None) -> None:
        self._set(child, "failed")
        message = (
            f"{child.name} (pid {pid}) exited with code {code} after {len(child.recent)} restarts in "
            f"{self.policy.window:g}s; it stays down (`dsbridge status` names it; `dsbridge down` and "
            f"`dsbridge up` start the stack again)"
        )
        self.log(message)
        self.alert(
            {
                "event": "component_failed",
                "component": child.name,
                "pid": pid,
                "exit_code": code,
                "restarts": child.restarts,
                "message": message,
            }
        )

    def _restart(self, child: Child) -> None:
        previous, code = child.pid, child.last_exit_code
        child.recent.append(time.monotonic())
        child.restarts += 1
        if not self._relaunch(child, "restart"):
            return
        message = f"restarted {child.name} (pid {child.pid}, was {previous}, exit {code}; restart {child.restarts})"
        self.log(message)
        self.alert(
            {
                "event": "component_restarted",
                "component": child.name,
                "pid": child.pid,
                "previous_pid": previous,
                "exit_code": code,
                "restarts": child.restarts,
                "message": message,
            }
        )

    def _start_on_request(self, child: Child) -> None:
        """Started on purpose (`start_component`): no alert, not counted, a fresh restart budget."""
        child.recent.clear()
        if not self._relaunch(child, "start"):
            return
        self.log(f"started {child.name} on request (pid {child.pid})")

    def _drain_leftovers(self) -> None:
        if not self.leftovers:
            return
        table, now = live_processes(), time.monotonic()
        for left in list(self.leftovers):
            members = group_members(left.pgid, table)
            if not members:
                self.leftovers.remove(left)
                continue
            busy = supervising(left.pgid, table) if now < left.drain_until else set()
            for pid in members:
                if pid in busy:
                    continue
                sent = left.signalled.get(pid)
                if sent is None:
                    _signal_member(pid, left.pgid, signal.SIGTERM)
                    left.signalled[pid] = now
                elif now - sent > LEFTOVER_KILL_AFTER:
                    _signal_member(pid, left.pgid, signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop watching; what was left of dead components goes too (the components stay up:
        `dsbridge down` stops them, in order, after this)."""
        for left in self.leftovers:
            stop_members(left.pgid, grace=3.0, kill_timeout=3.0)
        self.leftovers.clear()
        self.phase = "stopped"
        self.log("supervisor stopped")
        self.write_status()


def _signal_member(pid: int, pgid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pgid:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    return "\n  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-lines:])


def file_alert(alerts_file: Path) -> Alert:
    """Alerts through dsbridge's alert notifier (imported on the first alert: it loads Airflow)."""

    def alert(payload: dict[str, Any]) -> None:
        from dsbridge.notifiers.log import raise_alert

        raise_alert(payload, str(alerts_file))

    return alert


def run(sup: Supervisor, start: Callable[[Supervisor], None]) -> int:
    """Start the stack with `start`, then watch until SIGTERM; the exit code says how start-up went."""

    def request_stop(_signum: int, _frame: object) -> None:
        sup.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    sup.log(f"supervisor starting (pid {os.getpid()})")
    try:
        start(sup)
    except Stopping:
        sup.shutdown()
        return 0
    except Exception as exc:
        if sup.stop_requested:
            sup.shutdown()
            return 0
        sup.failed(str(exc))
        return 1
    sup.started()
    sup.watch()
    sup.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsbridge_local.stack.supervisor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--state-dir", type=Path, required=True, help="the stack's state dir (with config.json)")
    args = parser.parse_args(argv)
    from dsbridge_local.stack import startup

    cfg = startup.load_config(args.state_dir)
    return run(startup.supervisor_for(cfg), lambda sup: startup.start_stack(sup, cfg))


if __name__ == "__main__":
    sys.exit(main())
