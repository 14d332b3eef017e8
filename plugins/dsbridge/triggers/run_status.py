"""Trigger that follows one Databricks run from the triggerer, holding no worker slot.

It runs either behind a deferred sensor (it yields the run's outcome and the sensor decides in a
worker), or -- the job DAGs' way, `end_task=True` -- as the whole `wait` task started in the
triggerer: it decides itself and ends the task (`TaskSuccessEvent` with the run summary, or
`TaskFailedEvent` with the request's failure record), so waiting costs no worker process at all.

Polls start sub-second and back off geometrically to a cap, so a short notebook is noticed within
a second or two. A job that declares how long its notebook usually runs (`expected_seconds`) is
polled at fractions of that time instead (`expected_poll_delay`), so a 10-minute notebook costs
about ten calls and its end is noticed within 5 % of its running time.

While the Databricks API is down or busy (connection errors, 429, 5xx) the trigger keeps
following the run for an outage horizon (`DSBRIDGE_DATABRICKS_HORIZON_MINUTES`), backing off; only
then does it report the run unreachable. If a person kills the waiting task (mark failed, clear),
`on_kill` cancels the Databricks run; a triggerer that stops or crashes does not (Airflow calls
`on_kill` only for user actions), and the trigger re-attaches to the run when a triggerer picks it
up again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState
from airflow.triggers.base import BaseTrigger, TaskFailedEvent, TaskSuccessEvent, TriggerEvent

from dsbridge.callback.event import ErrorCode
from dsbridge.outcome import ERROR_XCOM_KEY, failure_record
from dsbridge.retry import is_transient
from dsbridge.settings import DATABRICKS_CONN_ID

TERMINAL_EVENT = "terminal"
ERROR_EVENT = "error"  # Databricks refused to report the run (not worth asking again)
UNREACHABLE_EVENT = "unreachable"  # the API stayed down past the outage horizon
OUTAGE_FIRST_DELAY = 2.0
OUTAGE_MAX_DELAY = 60.0
FAILURE_CODES = {"TIMEDOUT": ErrorCode.NOTEBOOK_TIMED_OUT, "CANCELED": ErrorCode.RUN_CANCELLED}


def poll_delays(first: float, factor: float, cap: float) -> Iterator[float]:
    """Yield the wait before each poll: first, first*factor, … up to cap (forever)."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


# When to poll a run expected to take E seconds, as fractions of E since the run started: sparse
# while it should be running, dense around E; then every 10 % of the running time so far.
EXPECTED_POLL_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1)
OVERRUN_POLL_SHARE = 0.1


def expected_poll_delay(elapsed: float, expected: float, floor: float, cap: float) -> float:
    """The wait before the next poll of a run `elapsed` seconds in, expected to take `expected`.

    Counting from the run's own start (not the trigger's) keeps the schedule when a restarted
    triggerer re-attaches. A run past its last fraction is polled every 10 % of its running time,
    at most every max(cap, 5 % of expected), so its end is still noticed within 10 %.
    """
    for fraction in EXPECTED_POLL_FRACTIONS:
        due = fraction * expected
        if due > elapsed:
            return max(floor, due - elapsed)
    return max(floor, min(OVERRUN_POLL_SHARE * elapsed, max(cap, 0.05 * expected)))


def run_elapsed(run: dict[str, Any], now: float, fallback_start: float) -> float:
    """Seconds since the run started (Databricks' `start_time`, epoch ms), else since `fallback_start`."""
    start_ms = run.get("start_time") or 0
    start = start_ms / 1000 if isinstance(start_ms, int | float) and 0 < start_ms / 1000 <= now else fallback_start
    return max(0.0, now - start)


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The fields of a `runs/get` answer that the DAG needs later, and nothing big."""
    tasks = [
        {"run_id": t.get("run_id"), "task_key": t.get("task_key"), "state": t.get("state", {})}
        for t in run.get("tasks", [])
    ]
    keys = ("run_id", "run_page_url", "state", "start_time", "end_time", "setup_duration")
    summary = {key: run.get(key) for key in keys}
    summary.update(
        execution_duration=run.get("execution_duration"),
        queue_duration=run.get("queue_duration"),
        run_duration=run.get("run_duration"),
        tasks=tasks,
    )
    return summary


def failed_task_run_id(run: dict[str, Any]) -> int | None:
    """The run id of the first task that did not succeed (get-output needs a task run id)."""
    for task in run.get("tasks", []):
        if task.get("state", {}).get("result_state") not in (None, "SUCCESS"):
            return int(task["run_id"])
    return None


def error_details(output: dict[str, Any]) -> dict[str, Any]:
    """The notebook's error message and trace from a `runs/get-output` answer."""
    return {"error": output.get("error"), "error_trace": output.get("error_trace")}


async def failure_details(hook: DatabricksHook, run: dict[str, Any]) -> dict[str, Any]:
    task_run_id = failed_task_run_id(run)
    if task_run_id is None:
        return {}
    try:
        return error_details(await hook.a_get_run_output(task_run_id))
    except Exception as exc:  # the run's own state message is still worth reporting
        return {"output_error": str(exc)}


@dataclass(frozen=True)
class Conclusion:
    """What the run's outcome means for the request: its run summary, or why it failed."""

    run: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    # Databricks could not tell how the run ended: cancel it before anyone is told it failed.
    cancel_first: bool = False


def conclude(outcome: dict[str, Any]) -> Conclusion:
    """Turn the trigger's outcome into the request's: SUCCESS goes on; anything else fails it."""
    status = outcome.get("status")
    if status == UNREACHABLE_EVENT:
        message = f"Databricks was unreachable for {outcome.get('down_seconds')} s: {outcome.get('message')}"
        return Conclusion(failure=_failure(message, code=ErrorCode.DATABRICKS_UNREACHABLE), cancel_first=True)
    if status == ERROR_EVENT:
        message = f"Databricks refused to report run {outcome.get('run_id')}: {outcome.get('message')}"
        return Conclusion(failure=_failure(message, code=ErrorCode.DATABRICKS_UNREACHABLE), cancel_first=True)
    run = outcome["run"]
    state = RunState(**run["state"])
    if state.is_successful:
        return Conclusion(run=run)
    message = outcome.get("error") or state.state_message or f"run ended {state.result_state}"
    if state.result_state == "TIMEDOUT":
        message = f"notebook exceeded its timeout: {message}"
    return Conclusion(
        failure=_failure(
            message,
            code=FAILURE_CODES.get(state.result_state, ErrorCode.NOTEBOOK_FAILED),
            cancelled=state.result_state == "CANCELED",
            trace=outcome.get("error_trace"),
            databricks_state=run["state"],
        )
    )


def _failure(message: str, **fields: Any) -> dict[str, Any]:
    """The failure record without its task; `failure_record` fields, minus `failed_task`."""
    record = failure_record(None, message, **fields)
    record.pop("failed_task")
    return record


def cancel_note(cancelled: bool, error: Exception | None = None) -> str:
    """What the failure message says about the cancel that preceded it."""
    if cancelled:
        return "the run was cancelled"
    return f"the run could not be cancelled ({error}); cancel it in Databricks"


class DatabricksRunStatusTrigger(BaseTrigger):
    """Follow Databricks run `run_id` to a terminal state; yield one event.

    `run_id` may be a template (rendered in the triggerer when the task starts there).
    With `end_task`, the event ends the task itself (success, or failure with the request's
    failure record); otherwise it is the raw outcome for a deferred sensor to judge.
    """

    def __init__(
        self,
        run_id: int | str,
        databricks_conn_id: str = DATABRICKS_CONN_ID,
        first_poll_seconds: float = 0.5,
        poll_backoff: float = 1.5,
        max_poll_seconds: float = 90.0,
        retry_limit: int = 5,
        retry_delay: float = 1.0,
        outage_horizon_seconds: float = 1800.0,
        expected_seconds: float | None = None,
        end_task: bool = False,
    ) -> None:
        super().__init__()
        if not _is_template(run_id):
            _positive_run_id(run_id)
        if not 0 < first_poll_seconds <= max_poll_seconds:
            raise ValueError("need 0 < first_poll_seconds <= max_poll_seconds")
        if poll_backoff < 1:
            raise ValueError("poll_backoff must be >= 1")
        if retry_limit < 1:
            raise ValueError("retry_limit must be >= 1")
        if not outage_horizon_seconds > 0:
            raise ValueError("outage_horizon_seconds must be > 0")
        if expected_seconds is not None and not expected_seconds > 0:
            raise ValueError("expected_seconds must be > 0 (or None)")
        self.run_id = run_id
        self.databricks_conn_id = databricks_conn_id
        self.first_poll_seconds = first_poll_seconds
        self.poll_backoff = poll_backoff
        self.max_poll_seconds = max_poll_seconds
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.outage_horizon_seconds = outage_horizon_seconds
        self.expected_seconds = expected_seconds
        self.end_task = end_task

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "databricks_conn_id": self.databricks_conn_id,
                "first_poll_seconds": self.first_poll_seconds,
                "poll_backoff": self.poll_backoff,
                "max_poll_seconds": self.max_poll_seconds,
                "retry_limit": self.retry_limit,
                "retry_delay": self.retry_delay,
                "outage_horizon_seconds": self.outage_horizon_seconds,
                "expected_seconds": self.expected_seconds,
                "end_task": self.end_task,
            },
        )

    def _hook(self) -> DatabricksHook:
        return DatabricksHook(
            self.databricks_conn_id,
            retry_limit=self.retry_limit,
            retry_delay=self.retry_delay,
            caller=type(self).__name__,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            run_id = _positive_run_id(self.run_id)
        except ValueError as exc:
            outcome: dict[str, Any] = {"status": ERROR_EVENT, "run_id": self.run_id, "message": str(exc)}
        else:
            outcome = await self.follow(run_id)
        if not self.end_task:
            yield TriggerEvent(outcome)
            return
        yield await self.task_end_event(outcome)

    async def task_end_event(self, outcome: dict[str, Any]) -> TriggerEvent:
        """End the `wait` task from here: success with the run summary, or the failure record."""
        conclusion = conclude(outcome)
        if conclusion.failure is None:
            return TaskSuccessEvent(xcoms=await self._push({"return_value": conclusion.run}))
        failure = {**conclusion.failure, "failed_task": self.task_id or "wait"}
        if conclusion.cancel_first:
            failure["message"] = f"{failure['message']}; {await self._cancel()}"
        self.log.info("Run %s failed the request: %s", self.run_id, failure["message"])
        return TaskFailedEvent(xcoms=await self._push({ERROR_XCOM_KEY: failure}))

    async def _push(self, xcoms: dict[str, Any]) -> dict[str, Any] | None:
        """Write the task's XComs the way a worker does, and return what is left for the event.

        Airflow 3.3 stores XComs carried by a task-end event JSON-encoded a second time, so a task
        reading them through the Task SDK gets a string; written through the SDK they read back as
        written. Without a task instance (outside a triggerer) they travel with the event.
        """
        ti = self.task_instance
        if ti is None:
            return xcoms
        from airflow.sdk.execution_time.xcom import XCom

        for key, value in xcoms.items():
            await XCom.aset(key, value, dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=ti.map_index)
        return None

    async def follow(self, run_id: int) -> dict[str, Any]:
        """Poll until the run is terminal (its summary), or Databricks refuses or stays down."""
        hook = self._hook()
        delays = poll_delays(self.first_poll_seconds, self.poll_backoff, self.max_poll_seconds)
        followed_since = time.time()
        async with hook:
            polls = 0
            down_since: float | None = None
            outage_delays = poll_delays(OUTAGE_FIRST_DELAY, 2.0, OUTAGE_MAX_DELAY)
            while True:
                try:
                    run = await hook.a_get_run(run_id)
                except Exception as exc:
                    if not is_transient(exc):
                        return {"status": ERROR_EVENT, "run_id": run_id, "message": str(exc)}
                    down_since = down_since if down_since is not None else time.monotonic()
                    down_for = time.monotonic() - down_since
                    if down_for >= self.outage_horizon_seconds:
                        return {
                            "status": UNREACHABLE_EVENT,
                            "run_id": run_id,
                            "message": str(exc),
                            "down_seconds": round(down_for),
                        }
                    delay = min(next(outage_delays), self.outage_horizon_seconds - down_for)
                    self.log.warning("Databricks unreachable for %.0fs (%s); retry in %.0fs", down_for, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                if down_since is not None:
                    self.log.info("Databricks answers again after %.0fs", time.monotonic() - down_since)
                    down_since, outage_delays = None, poll_delays(OUTAGE_FIRST_DELAY, 2.0, OUTAGE_MAX_DELAY)
                polls += 1
                state = RunState(**run["state"])
                if state.is_terminal:
                    details = {} if state.is_successful else await failure_details(hook, run)
                    self.log.info("Run %s is %s after %d polls", run_id, state, polls)
                    return {"status": TERMINAL_EVENT, "polls": polls, "run": run_summary(run), **details}
                delay = self._next_delay(run, delays, followed_since)
                self.log.debug("Run %s is %s; next poll in %.1fs", run_id, state, delay)
                await asyncio.sleep(delay)

    def _next_delay(self, run: dict[str, Any], delays: Iterator[float], followed_since: float) -> float:
        if self.expected_seconds is None:
            return next(delays)
        elapsed = run_elapsed(run, time.time(), followed_since)
        return expected_poll_delay(elapsed, self.expected_seconds, self.first_poll_seconds, self.max_poll_seconds)

    async def _cancel(self) -> str:
        try:
            await asyncio.to_thread(self._hook().cancel_run, _positive_run_id(self.run_id))
        except Exception as exc:
            self.log.warning("Could not cancel Databricks run %s: %s", self.run_id, exc)
            return cancel_note(False, exc)
        return cancel_note(True)

    async def on_kill(self) -> None:
        """The task was killed by a person: stop the notebook too."""
        self.log.info("Cancelling Databricks run %s", self.run_id)
        # The hook has no async cancel; a thread keeps the triggerer's event loop free.
        await asyncio.to_thread(self._hook().cancel_run, _positive_run_id(self.run_id))


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _positive_run_id(value: Any) -> int:
    """A Databricks run id; rendered templates arrive as strings."""
    try:
        run_id = int(value)
    except (TypeError, ValueError):
        run_id = 0
    if run_id <= 0 or isinstance(value, bool | float):
        raise ValueError(f"run_id must be a positive Databricks run id, got {value!r}")
    return run_id
