"""The supervisor restarts a component that dies (bounded, with backoff, alerted), leaves a held one
stopped, writes status.json, and `dsbridge status` names what is unhealthy.

The components are tiny `python -c` processes in a test-only table, not Airflow.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsbridge_local.cli.main import main
from dsbridge_local.stack import control
from dsbridge_local.stack.processes import alive, group_members, launch, live_processes, stop_group
from dsbridge_local.stack.stack import StackConfig, recorded_pids, start_component, stop_component
from dsbridge_local.stack.supervisor import RestartPolicy, StartupError, Supervisor, file_alert, run

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
EXITS_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]
# A leader with a child in its group (as a scheduler has its executor workers).
PARENT = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]{opts}); time.sleep(120)"
CHILD = "import time; time.sleep(120)"
# ...and a child that itself watches work in a group of its own (a worker running a task).
WORKER = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
    "time.sleep(120)"
)
FAST = RestartPolicy(max_restarts=2, window=60.0, first_backoff=0.05, max_backoff=0.2)

MakeSupervisor = Callable[..., Supervisor]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make_supervisor(state: Path) -> Iterator[MakeSupervisor]:
    made: list[Supervisor] = []

    def make(table: dict[str, list[str]], policy: RestartPolicy = FAST) -> Supervisor:
        launchers = {
            name: functools.partial(launch, argv, env={}, log_path=state / "logs" / f"{name}.log")
            for name, argv in table.items()
        }
        sup = Supervisor(
            state,
            launchers,
            log_file=state / "logs" / "supervisor.log",
            alert=file_alert(state / "logs" / "alerts.jsonl"),
            policy=policy,
        )
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop_requested = True
        for child in sup.children.values():
            if child.proc is not None:
                stop_group(child.proc.pid, grace=2.0)
        sup.shutdown()


def tick_until(sup: Supervisor, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {control.read_status(sup.state_dir)}"
        sup.tick()
        time.sleep(0.02)


def tick_for(sup: Supervisor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sup.tick()
        time.sleep(0.02)


def alerts(state: Path) -> list[dict[str, Any]]:
    path = state / "logs" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def component(state: Path, name: str) -> dict[str, Any]:
    return dict((control.read_status(state) or {})["components"][name])


def test_a_component_that_dies_is_restarted_alerted_and_recorded(make_supervisor: MakeSupervisor, state: Path):
    sup = make_supervisor({"dummy": SLEEPER})
    first = sup.start("dummy").pid
    os.kill(first, signal.SIGKILL)
    tick_until(sup, lambda: sup.children["dummy"].restarts == 1 and sup.children["dummy"].state == "running")

    now = control.read_pids(state)["dummy"]
    assert now != first and alive(now)
    seen = component(state, "dummy")
    assert {k: seen[k] for k in ("pid", "state", "restarts", "last_exit_code")} == {
        "pid": now,
        "state": "running",
        "restarts": 1,
        "last_exit_code": -9,
    }
    assert seen["since"]
    [alert] = alerts(state)
    assert alert["event"] == "component_restarted"
    assert (alert["component"], alert["pid"], alert["previous_pid"], alert["exit_code"]) == ("dummy", now, first, -9)
    log = (state / "logs" / "supervisor.log").read_text()
    assert f"dummy (pid {first}) exited with code -9; restarting" in log
    assert f"restarted dummy (pid {now}" in log


def test_a_component_that_keeps_dying_stays_down_after_the_bound(make_supervisor: MakeSupervisor, state: Path):
    sup = make_supervisor({"flaky": EXITS_3})
    sup.start("flaky")
    tick_until(sup, lambda: sup.children["flaky"].state == "failed")
    tick_for(sup, 0.5)

    seen = component(state, "flaky")
    assert (seen["state"], seen["restarts"], seen["last_exit_code"]) == ("failed", 2, 3)
    assert [a["event"] for a in alerts(state)] == ["component_restarted", "component_restarted", "component_failed"]
    assert "stays down" in alerts(state)[-1]["message"]


def test_backoff_doubles_from_1s_to_30s():
    assert [RestartPolicy().backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert (RestartPolicy().max_restarts, RestartPolicy().window) == (5, 600.0)


def test_a_held_component_stays_stopped_until_it_is_asked_to_start(make_supervisor: MakeSupervisor, state: Path):
    sup = make_supervisor({"dummy": SLEEPER})
    first = sup.start("dummy").pid
    control.hold(state, "dummy")
    os.kill(first, signal.SIGTERM)
    tick_until(sup, lambda: sup.children["dummy"].state == "stopped")
    tick_for(sup, 0.5)
    assert component(state, "dummy")["state"] == "stopped" and not alive(first)

    control.request_start(state, "dummy")
    tick_until(sup, lambda: sup.children["dummy"].state == "running")
    again = component(state, "dummy")
    assert again["pid"] != first and alive(again["pid"]) and again["restarts"] == 0
    assert alerts(state) == []  # on purpose: no alert, no restart counted
    assert not control.start_requested(state, "dummy") and not control.held(state, "dummy")


def test_a_failed_component_starts_again_on_request(make_supervisor: MakeSupervisor, state: Path):
    sup = make_supervisor({"flaky": EXITS_3})
    sup.start("flaky")
    tick_until(sup, lambda: sup.children["flaky"].state == "failed")
    sup.children["flaky"].launch = functools.partial(launch, SLEEPER, env={}, log_path=state / "logs" / "fixed.log")
    control.request_start(state, "flaky")
    tick_until(sup, lambda: sup.children["flaky"].state == "running")
    assert alive(component(state, "flaky")["pid"])


def test_what_is_left_of_a_dead_leaders_group_is_stopped(make_supervisor: MakeSupervisor):
    parent = [sys.executable, "-c", PARENT.format(child=CHILD, opts="")]
    sup = make_supervisor({"parent": parent})
    leader = sup.start("parent").pid
    wait_for(lambda: len(group_members(leader)) == 2)
    os.kill(leader, signal.SIGKILL)
    tick_until(sup, lambda: not group_members(leader) and sup.children["parent"].state == "running")


def test_a_leftover_still_watching_work_of_its_own_is_left_to_finish(make_supervisor: MakeSupervisor):
    parent = [sys.executable, "-c", PARENT.format(child=WORKER, opts="")]
    sup = make_supervisor({"parent": parent})
    leader = sup.start("parent").pid
    wait_for(lambda: len(group_members(leader)) == 2 and _children_elsewhere(leader))
    [worker] = [pid for pid in group_members(leader) if pid != leader]
    [task] = _children_elsewhere(leader)
    try:
        os.kill(leader, signal.SIGKILL)
        tick_for(sup, 1.0)
        assert alive(worker) and alive(task)  # the worker still watches its task
        sup.leftovers[0].drain_until = 0.0  # the drain limit passed
        tick_until(sup, lambda: not sup.leftovers)
        assert not group_members(leader) and alive(task)
    finally:
        stop_group(task, grace=1.0)


def test_startup_fails_naming_a_component_that_exits(make_supervisor: MakeSupervisor, state: Path):
    sup = make_supervisor({"steady": SLEEPER, "flaky": EXITS_3})

    def start(s: Supervisor) -> None:
        s.start("steady")
        s.start("flaky")
        s.wait_for(lambda: False, "never", 30)

    with pytest.raises(StartupError, match="flaky exited with code 3 while the stack was starting"):
        start(sup)
    assert run(sup, start) == 1
    report = control.read_status(state) or {}
    assert report["supervisor"]["phase"] == "failed"
    assert "flaky exited with code 3" in report["error"]


def test_status_exits_non_zero_naming_the_dead_component(
    make_supervisor: MakeSupervisor, state: Path, capsys: pytest.CaptureFixture[str]
):
    sup = make_supervisor({"steady": SLEEPER, "flaky": EXITS_3})
    sup.start("steady")
    sup.start("flaky")
    tick_until(sup, lambda: sup.children["flaky"].state == "failed")
    control.record_supervisor(state, os.getpid())  # this test's process plays the supervisor
    capsys.readouterr()

    assert main(["status", "--state-dir", str(state), "--base-port", "37900"]) == 1
    out, err = capsys.readouterr()
    assert "steady" in out and "flaky" in out
    unhealthy = err.split("unhealthy:", 1)[1]
    assert "flaky (failed: exited with code 3 after 2 restarts" in unhealthy
    assert "steady" not in unhealthy

    assert main(["status", "--state-dir", str(state), "--base-port", "37900", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["components"]["flaky"]["state"] == "failed"
    assert list(report["unhealthy"]) == ["flaky"]


def test_status_is_zero_when_all_run_and_names_a_dead_supervisor(
    make_supervisor: MakeSupervisor, state: Path, capsys: pytest.CaptureFixture[str]
):
    sup = make_supervisor({"steady": SLEEPER})
    sup.start("steady")
    control.record_supervisor(state, os.getpid())
    assert main(["status", "--state-dir", str(state), "--base-port", "37900"]) == 0

    gone = launch(EXITS_3, env={}, log_path=state / "gone.log")
    gone.wait(timeout=30)
    control.record_supervisor(state, gone.pid)
    capsys.readouterr()
    assert main(["status", "--state-dir", str(state), "--base-port", "37900"]) == 1
    assert "supervisor (not running: nothing restarts a component that dies)" in capsys.readouterr().err


def test_status_without_a_stack_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["status", "--state-dir", str(tmp_path / "none"), "--base-port", "37900"]) == 1
    assert "no stack is running" in capsys.readouterr().err


def test_stop_component_holds_and_start_component_releases(make_supervisor: MakeSupervisor, state: Path):
    """The fault suite's two calls keep their meaning under supervision; a kill without them is healed."""
    sup = make_supervisor({"dummy": SLEEPER})
    sup.start("dummy")
    control.record_supervisor(state, os.getpid())
    cfg = StackConfig(state_dir=state, base_port=37900)
    watcher = threading.Thread(target=sup.watch, kwargs={"timeout": 120.0}, daemon=True)
    watcher.start()
    try:
        for hard in (False, True):
            before = recorded_pids(cfg)["dummy"]
            stop_component(cfg, "dummy", hard=hard)
            assert component(state, "dummy")["state"] == "stopped" and not alive(before)
            time.sleep(0.6)
            assert component(state, "dummy")["state"] == "stopped"  # not restarted while held
            after = start_component(cfg, "dummy")
            assert after != before and alive(after) and recorded_pids(cfg)["dummy"] == after
        assert component(state, "dummy")["restarts"] == 0 and alerts(state) == []

        os.kill(after, signal.SIGKILL)  # a crash, not a stop: the supervisor heals it
        wait_for(lambda: component(state, "dummy")["restarts"] == 1 and component(state, "dummy")["pid"] != after)
        assert alive(recorded_pids(cfg)["dummy"])
        assert [a["event"] for a in alerts(state)] == ["component_restarted"]
    finally:
        sup.stop_requested = True
        watcher.join(timeout=10)


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached in {timeout}s"
        time.sleep(0.05)


def _children_elsewhere(leader: int) -> list[int]:
    """Processes whose parent is in `leader`'s group but which lead a group of their own."""
    table = live_processes()
    members = set(group_members(leader, table))
    return [p.pid for p in table if p.ppid in members and p.pgid != leader]
