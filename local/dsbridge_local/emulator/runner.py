"""Run supervision: the life cycle of each run, its tasks' child processes, queueing and recovery.

Every task runs in its own process group, so cancelling or timing out kills the notebook and
anything it started (SIGTERM, then SIGKILL after a grace period). Nothing here polls: a thread per
task blocks in `wait()`, timers fire the timeouts, and the run's thread sleeps on a queue of task
events, so a finished notebook is noticed at once. A run over the concurrency limit waits as QUEUED
with a queue reason. At start-up, runs that were active when a previous emulator died are ended as
INTERNAL_ERROR (and their orphaned process groups killed) instead of being left hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.faults import Faults
from dsbridge_local.emulator.git import GitCheckouts, parse_git_source
from dsbridge_local.emulator.logs import log_event
from dsbridge_local.emulator.runtime.launch import Outcome, collect, failed_before_start, prepare, start
from dsbridge_local.emulator.runtime.source import resolve_notebook
from dsbridge_local.emulator.store import Store
from dsbridge_local.emulator.validate import RunSpec, TaskSpec

QUEUE_REASON = "Queued due to reaching maximum concurrent runs of the workspace"
TASK_FAILED_MESSAGE = "Workload failed, see run output for details"
LOST_MESSAGE = (
    "The run was lost: the Databricks emulator stopped while the run was active. "
    "Submit it again (the same idempotency_token returns this run)."
)
MAX_WAIT_AFTER_STOP_S = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Ending:
    """How a run or task ends, in the API's terms."""

    life_cycle: str
    result_state: str
    message: str
    user_cancelled: bool
    term_code: str
    term_type: str


def ending_for(result: str, message: str = "") -> Ending:
    if result == "SUCCESS":
        return Ending("TERMINATED", "SUCCESS", message, False, "SUCCESS", "SUCCESS")
    if result == "CANCELED":
        return Ending("TERMINATED", "CANCELED", message or "Run cancelled.", True, "USER_CANCELED", "SUCCESS")
    if result == "TIMEDOUT":
        return Ending("TERMINATED", "TIMEDOUT", message or "Run timed out.", True, "CANCELED", "CLIENT_ERROR")
    if result == "INTERNAL_ERROR":
        return Ending("INTERNAL_ERROR", "FAILED", message or LOST_MESSAGE, False, "INTERNAL_ERROR", "INTERNAL_ERROR")
    if result == "UPSTREAM_FAILED":
        return Ending("SKIPPED", "UPSTREAM_FAILED", message or "Upstream task failed.", False, "SKIPPED", "SUCCESS")
    return Ending("TERMINATED", "FAILED", message or TASK_FAILED_MESSAGE, False, "RUN_EXECUTION_ERROR", "CLIENT_ERROR")


def ending_fields(ending: Ending, **extra: Any) -> dict[str, Any]:
    return {
        "life_cycle": ending.life_cycle,
        "result_state": ending.result_state,
        "state_message": ending.message,
        "user_cancelled": int(ending.user_cancelled),
        "term_code": ending.term_code,
        "term_type": ending.term_type,
        "queue_reason": None,
        **extra,
    }


def kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class TaskExec:
    """One task run: prepares the notebook, runs the child process, records the outcome."""

    def __init__(self, sup: Supervisor, run: RunHandle, row: dict[str, Any], spec: TaskSpec) -> None:
        self.sup = sup
        self.run = run
        self.row = row
        self.spec = spec
        self.run_id: int = row["run_id"]
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_reason: str | None = None
        self._timers: list[threading.Timer] = []

    def start(self) -> None:
        threading.Thread(target=self._main, name=f"task-{self.run_id}", daemon=True).start()

    def stop(self, reason: str) -> None:
        """Ask the task to end (CANCELED/TIMEDOUT/INTERNAL_ERROR): SIGTERM now, SIGKILL after the grace."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        kill_group(proc.pid, signal.SIGTERM)
        timer = threading.Timer(self.sup.kill_grace_s, self._force_kill, args=(proc,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    @staticmethod
    def _force_kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGKILL)

    def _main(self) -> None:
        try:
            result = self._execute()
        except Exception as exc:  # never leave a task (and so its run) hanging
            log_event("task.crashed", run_id=self.run.run_id, task_run_id=self.run_id, error=repr(exc))
            self._finish(Outcome(status="FAILED", error=f"EmulatorError: {exc}", error_trace=repr(exc)))
            result = "FAILED"
        finally:
            for timer in self._timers:
                timer.cancel()
        self.run.events.put(("done", self.spec.task_key, result))

    def _execute(self) -> str:
        sup = self.sup
        started = now_ms()
        sup.store.update_where_active(self.run_id, life_cycle="PENDING", exec_start_ms=started)
        task_dir = sup.state_dir / "runs" / str(self.run_id)
        env = {
            **sup.child_env,
            "DSBRIDGE_RUN_ID": str(self.run.run_id),
            "DSBRIDGE_TASK_RUN_ID": str(self.run_id),
            "DSBRIDGE_TASK_KEY": self.spec.task_key,
            # dbutils.jobs.taskValues: what the run's tasks leave for each other.
            "DSBRIDGE_TASK_VALUES_DIR": str(sup.state_dir / "runs" / str(self.run.run_id) / "task_values"),
            # dbutils.notebook.run: children are runs of this emulator, relative to this notebook.
            "DSBRIDGE_NOTEBOOK_PATH": self.spec.notebook_path,
        }
        try:
            workspace, notebook_file, language = self._notebook()
            launch = prepare(task_dir, workspace, notebook_file, language, self.spec.base_parameters, extra_env=env)
        except Exception as exc:
            return self._finish(failed_before_start(exc))
        with self._lock:
            if self.stop_reason is not None:
                return self._finish(Outcome(status="FAILED"))
            self.proc = proc = start(launch)
        running = now_ms()
        sup.store.update_where_active(
            self.run_id, life_cycle="RUNNING", running_ms=running, pid=proc.pid, log_file=str(launch.log_file)
        )
        sup.store.update_if(self.run.run_id, ("PENDING",), life_cycle="RUNNING", running_ms=running)
        log_event(
            "task.running",
            run_id=self.run.run_id,
            task_run_id=self.run_id,
            task_key=self.spec.task_key,
            pid=proc.pid,
            request_id=self.run.request_id,
        )
        if self.spec.timeout_seconds:
            timer = threading.Timer(self.spec.timeout_seconds, self.stop, args=("TIMEDOUT",))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        returncode = proc.wait()
        # The notebook may have left processes behind in its group: end them, as a cluster would.
        kill_group(proc.pid, signal.SIGKILL)
        sup.store.update_where_active(self.run_id, life_cycle="TERMINATING", exec_end_ms=now_ms())
        return self._finish(collect(launch, returncode))

    def _notebook(self) -> tuple[Path, Path, str]:
        """The workspace root, notebook file and language: from the workspace folder, or (source GIT)
        from the run's commit, checked out now, as a cluster does at the run's start."""
        if self.spec.git_source is None:
            notebook_file = Path(self.spec.notebook_file)
            imported = (self.sup.state_dir / "workspace").resolve()
            root = imported if notebook_file.is_relative_to(imported) else self.sup.workspace
            return root, notebook_file, self.spec.language
        checkout = self.sup.git.checkout(parse_git_source(self.spec.git_source))
        notebook_file, language = resolve_notebook(checkout, "/" + self.spec.notebook_path)
        return checkout, notebook_file, language

    def _finish(self, outcome: Outcome) -> str:
        reason = self.stop_reason
        error: str | None
        if reason is not None and outcome.status != "SUCCESS":
            result = reason
            if reason == "TIMEDOUT":
                limit = self.spec.timeout_seconds or self.run.spec_timeout
                message = f"Run timed out after {limit} seconds." if limit else "Run timed out."
            elif reason == "CANCELED":
                message = "Run cancelled."
            else:
                message = LOST_MESSAGE
            error, trace = message, outcome.error_trace
        else:
            result = outcome.status
            message = "" if result == "SUCCESS" else TASK_FAILED_MESSAGE
            error, trace = outcome.error, outcome.error_trace
        end = now_ms()
        row = self.sup.store.get(self.run_id) or {}
        self.sup.store.update_where_active(
            self.run_id,
            **ending_fields(
                ending_for(result, message),
                end_ms=end,
                exec_end_ms=row.get("exec_end_ms") or end,
                result=outcome.result,
                truncated=int(outcome.truncated),
                error=error,
                error_trace=trace,
            ),
        )
        log_event(
            "task.finished",
            run_id=self.run.run_id,
            task_run_id=self.run_id,
            task_key=self.spec.task_key,
            result_state=result,
            error=error,
            request_id=self.run.request_id,
        )
        return result


@dataclass
class RunHandle:
    """In-memory companion of an active run: its event queue and the tasks it started."""

    run_id: int
    request_id: str | None
    spec_timeout: int
    events: queue.Queue[tuple[str, str, str]] = field(default_factory=queue.Queue)
    cancel_requested: bool = False


class Supervisor:
    """Owns every active run; the HTTP layer calls submit/cancel, the store answers reads."""

    def __init__(
        self,
        store: Store,
        state_dir: Path,
        workspace: Path,
        faults: Faults,
        max_concurrent_runs: int = 16,
        kill_grace_s: float = 3.0,
        child_env: dict[str, str] | None = None,
        git: GitCheckouts | None = None,
    ) -> None:
        self.store = store
        self.git = git or GitCheckouts({}, state_dir / "git")
        self.state_dir = state_dir
        self.workspace = workspace.resolve()
        self.faults = faults
        self.max_concurrent_runs = max(1, max_concurrent_runs)
        self.kill_grace_s = kill_grace_s
        self.child_env = dict(child_env or {})
        self.child_env.setdefault("DSBRIDGE_DBFS_ROOT", str(state_dir / "dbfs"))
        self._lock = threading.RLock()
        self._queue: deque[int] = deque()
        self._active: dict[int, RunHandle] = {}
        self._pending_handles: dict[int, RunHandle] = {}
        self._execs: dict[int, list[TaskExec]] = {}
        # Runs started by `dbutils.notebook.run`, by the run whose notebook started them.
        self._children: dict[int, set[int]] = {}
        self._threads: list[threading.Thread] = []
        self.closing = False

    # -- submit / cancel -------------------------------------------------------------------------

    def submit(self, spec: RunSpec) -> tuple[int, bool]:
        created = now_ms()
        forced = self.faults.forced_state()
        parent = {
            "parent_id": None,
            "run_name": spec.run_name,
            "task_key": None,
            "spec": json.dumps(
                {
                    "timeout_seconds": spec.timeout_seconds,
                    "forced": forced,
                    "run_type": "WORKFLOW_RUN" if spec.parent_run_id else "SUBMIT_RUN",
                }
            ),
            "life_cycle": "QUEUED",
            "created_ms": created,
            "idempotency_token": spec.idempotency_token,
            "request_id": spec.request_id,
            "legacy": int(spec.legacy),
        }
        tasks = [
            {
                "run_name": spec.run_name,
                "task_key": task.task_key,
                "spec": json.dumps({"task": task.as_dict(), "echo": task.echo}),
                "life_cycle": "QUEUED",
                "created_ms": created,
                "request_id": spec.request_id,
            }
            for task in spec.tasks
        ]
        with self._lock:
            run_id, is_new = self.store.create(parent, tasks)
            if not is_new:
                log_event("run.idempotent_hit", run_id=run_id, request_id=spec.request_id)
                return run_id, False
            log_event(
                "run.submitted",
                run_id=run_id,
                run_name=spec.run_name,
                tasks=[t.task_key for t in spec.tasks],
                request_id=spec.request_id,
            )
            handle = RunHandle(run_id, spec.request_id, spec.timeout_seconds)
            if spec.parent_run_id is not None:
                self._children.setdefault(spec.parent_run_id, set()).add(run_id)
            if len(self._active) < self.max_concurrent_runs:
                self._start(handle)
            else:
                self.store.update(run_id, queue_reason=QUEUE_REASON)
                self._queue.append(run_id)
                self._pending_handles[run_id] = handle
                log_event("run.queued", run_id=run_id, request_id=spec.request_id)
        return run_id, True

    def cancel(self, run_id: int) -> None:
        """Cancel a run (or the run a task run belongs to); finished runs are left alone."""
        row = self.store.get(run_id)
        if row is None:
            raise LookupError(run_id)
        if row["parent_id"] is not None:
            run_id = int(row["parent_id"])
        with self._lock:
            if run_id in self._queue:
                self._queue.remove(run_id)
                self._pending_handles.pop(run_id, None)
                self._end_without_running(run_id, "CANCELED", "Run cancelled.")
                log_event("run.cancelled", run_id=run_id, while_state="QUEUED")
                return
            handle = self._active.get(run_id)
            if handle is None or handle.cancel_requested:
                return
            handle.cancel_requested = True
            self.store.update_where_active(run_id, life_cycle="TERMINATING")
        log_event("run.cancel_requested", run_id=run_id, request_id=handle.request_id)
        handle.events.put(("cancel", "", ""))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"active_runs": len(self._active), "queued_runs": len(self._queue)}

    # -- execution -------------------------------------------------------------------------------

    def _start(self, handle: RunHandle) -> None:
        self._active[handle.run_id] = handle
        self.store.update(handle.run_id, life_cycle="PENDING", queue_reason=None, exec_start_ms=now_ms())
        thread = threading.Thread(target=self._run_main, args=(handle,), name=f"run-{handle.run_id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _pump(self) -> None:
        with self._lock:
            while self._queue and len(self._active) < self.max_concurrent_runs and not self.closing:
                run_id = self._queue.popleft()
                handle = self._pending_handles.pop(run_id, None) or RunHandle(run_id, None, 0)
                self._start(handle)

    def _run_main(self, handle: RunHandle) -> None:
        try:
            self._execute(handle)
        except Exception as exc:
            log_event("run.crashed", run_id=handle.run_id, error=repr(exc))
            self._end_without_running(handle.run_id, "INTERNAL_ERROR", f"Emulator error: {exc}")
        finally:
            with self._lock:
                self._active.pop(handle.run_id, None)
                self._execs.pop(handle.run_id, None)
            self._pump()

    def _execute(self, handle: RunHandle) -> None:
        run_id = handle.run_id
        parent = self.store.get(run_id)
        if parent is None:
            return
        parent_spec = json.loads(parent["spec"])
        if parent_spec.get("forced"):
            self._end_without_running(run_id, parent_spec["forced"], "Forced by the emulator's fault injection.")
            return
        rows = self.store.tasks(run_id)
        specs = {row["task_key"]: TaskSpec.from_dict(json.loads(row["spec"])["task"]) for row in rows}
        by_key = {row["task_key"]: row for row in rows}
        for key, spec in specs.items():
            if spec.depends_on:
                self.store.update_where_active(by_key[key]["run_id"], life_cycle="BLOCKED")
            else:
                self.store.update_where_active(by_key[key]["run_id"], life_cycle="PENDING")
        pending = list(specs)
        running: dict[str, TaskExec] = {}
        results: dict[str, str] = {}
        stop_reason: str | None = None
        timeout = handle.spec_timeout
        deadline = time.monotonic() + timeout if timeout else None
        for _ in range(4 * len(specs) + 16):
            if stop_reason is None:
                self._start_ready(handle, pending, running, results, specs, by_key)
            if stop_reason is not None and pending:
                for key in pending:
                    self._end_task_without_running(by_key[key]["run_id"], stop_reason)
                    results[key] = stop_reason
                pending.clear()
            if not running and not pending:
                break
            wait: float | None = None
            if stop_reason is not None:
                wait = self.kill_grace_s + MAX_WAIT_AFTER_STOP_S
            elif deadline is not None:
                wait = max(0.0, deadline - time.monotonic())
            try:
                kind, key, result = handle.events.get(timeout=wait)
            except queue.Empty:
                if stop_reason is not None:
                    log_event("run.stuck", run_id=run_id, tasks=list(running))
                    break
                stop_reason = "TIMEDOUT"
                log_event("run.timed_out", run_id=run_id, request_id=handle.request_id)
                for task in running.values():
                    task.stop("TIMEDOUT")
                continue
            if kind == "cancel":
                if stop_reason is None:
                    stop_reason = "CANCELED"
                    for task in running.values():
                        task.stop("CANCELED")
                continue
            if kind == "shutdown":
                stop_reason = stop_reason or "INTERNAL_ERROR"
                for task in running.values():
                    task.stop("INTERNAL_ERROR")
                continue
            running.pop(key, None)
            results[key] = result
        self._finish_run(handle, results, stop_reason)

    def _start_ready(
        self,
        handle: RunHandle,
        pending: list[str],
        running: dict[str, TaskExec],
        results: dict[str, str],
        specs: dict[str, TaskSpec],
        by_key: dict[str, dict[str, Any]],
    ) -> None:
        for _ in range(len(specs) + 1):  # cascades of upstream failures settle in at most len(specs) passes
            changed = False
            for key in list(pending):
                deps = specs[key].depends_on
                if any(dep in results and results[dep] != "SUCCESS" for dep in deps):
                    pending.remove(key)
                    self._end_task_without_running(by_key[key]["run_id"], "UPSTREAM_FAILED")
                    results[key] = "UPSTREAM_FAILED"
                    changed = True
                elif all(results.get(dep) == "SUCCESS" for dep in deps):
                    pending.remove(key)
                    task = TaskExec(self, handle, by_key[key], specs[key])
                    running[key] = task
                    with self._lock:
                        self._execs.setdefault(handle.run_id, []).append(task)
                    task.start()
                    changed = True
            if not changed:
                return

    def _finish_run(self, handle: RunHandle, results: dict[str, str], stop_reason: str | None) -> None:
        run_id = handle.run_id
        values = list(results.values())
        message = ""
        if stop_reason == "TIMEDOUT":
            result = "TIMEDOUT"
            message = f"Run timed out after {handle.spec_timeout} seconds."
        elif stop_reason in ("CANCELED", "INTERNAL_ERROR"):
            result = stop_reason
        elif values and all(value == "SUCCESS" for value in values):
            result = "SUCCESS"
        elif "FAILED" in values:
            result = "FAILED"
            failed = next(key for key, value in results.items() if value == "FAILED")
            message = f"Task {failed} failed with message: {TASK_FAILED_MESSAGE}."
            if len(values) > 1:
                message += " This caused all downstream tasks to get skipped."
        elif "TIMEDOUT" in values:
            result = "TIMEDOUT"
            message = "A task timed out."
        else:
            result = "FAILED"
        self.store.update_where_active(run_id, life_cycle="TERMINATING")
        self.store.update_where_active(run_id, **ending_fields(ending_for(result, message), end_ms=now_ms()))
        log_event("run.finished", run_id=run_id, result_state=result, request_id=handle.request_id)
        self._end_children(run_id)

    def _end_children(self, run_id: int) -> None:
        """A run's `dbutils.notebook.run` children end with it, as on Databricks."""
        with self._lock:
            children = self._children.pop(run_id, set())
        for child in children:
            with contextlib.suppress(LookupError):
                self.cancel(child)

    def _end_task_without_running(self, task_run_id: int, result: str) -> None:
        end = now_ms()
        message = {"CANCELED": "Run cancelled.", "TIMEDOUT": "Run timed out."}.get(result, "")
        self.store.update_where_active(task_run_id, **ending_fields(ending_for(result, message), end_ms=end))

    def _end_without_running(self, run_id: int, result: str, message: str) -> None:
        """End a run and its unfinished tasks at once (queued cancel, forced state, crash)."""
        end = now_ms()
        error = None if result == "SUCCESS" else f"{message}"
        for task in self.store.tasks(run_id):
            self.store.update_where_active(
                task["run_id"], **ending_fields(ending_for(result, message), end_ms=end, error=error)
            )
        self.store.update_where_active(run_id, **ending_fields(ending_for(result, message), end_ms=end))
        log_event("run.finished", run_id=run_id, result_state=result, message=message)

    # -- restart and shutdown --------------------------------------------------------------------

    def recover(self) -> int:
        """End runs a previous emulator left active as INTERNAL_ERROR; kill their orphaned processes."""
        lost = self.store.active()
        end = now_ms()
        for row in lost:
            if row["pid"] and self._is_our_child(int(row["pid"]), int(row["run_id"])):
                kill_group(int(row["pid"]), signal.SIGKILL)
            fields = ending_fields(ending_for("INTERNAL_ERROR", LOST_MESSAGE), end_ms=end)
            if row["parent_id"] is not None:
                fields["error"] = f"EmulatorRestart: {LOST_MESSAGE}"
            self.store.update_where_active(int(row["run_id"]), **fields)
            log_event("run.lost", run_id=row["run_id"], request_id=row["request_id"])
        return len(lost)

    @staticmethod
    def _is_our_child(pid: int, task_run_id: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return False
        marker = f"{os.sep}runs{os.sep}{task_run_id}{os.sep}spec.json"
        return marker in cmdline and ("pyrunner" in cmdline or "r_runner.R" in cmdline)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop accepting runs, end active ones as INTERNAL_ERROR and kill their processes."""
        with self._lock:
            self.closing = True
            for run_id in list(self._queue):
                self._end_without_running(run_id, "INTERNAL_ERROR", LOST_MESSAGE)
            self._queue.clear()
            handles = list(self._active.values())
            threads = list(self._threads)
        for handle in handles:
            handle.events.put(("shutdown", "", ""))
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = [task for tasks in self._execs.values() for task in tasks]
        for task in leftovers:
            if task.proc is not None and task.proc.returncode is None:
                kill_group(task.proc.pid, signal.SIGKILL)
        self.recover()
