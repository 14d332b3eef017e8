"""Trigger that follows one Databricks run from the triggerer, holding no worker slot.

Polls start sub-second and back off geometrically to a cap, so a short notebook is noticed within
a second or two and a long one costs about a dozen API calls. While the Databricks API is down or
busy (connection errors, 429, 5xx) the trigger keeps following the run for an outage horizon
(`DSBRIDGE_DATABRICKS_HORIZON_MINUTES`), backing off; only then does it report the run unreachable.
If a person kills the waiting task (mark failed, clear), `on_kill` cancels the Databricks run; a
triggerer that stops or crashes does not (Airflow calls `on_kill` only for user actions), and the
trigger re-attaches to the run when a triggerer picks it up again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dsbridge.retry import is_transient
from dsbridge.settings import DATABRICKS_CONN_ID

TERMINAL_EVENT = "terminal"
ERROR_EVENT = "error"  # Databricks refused to report the run (not worth asking again)
UNREACHABLE_EVENT = "unreachable"  # the API stayed down past the outage horizon
OUTAGE_FIRST_DELAY = 2.0
OUTAGE_MAX_DELAY = 60.0


def poll_delays(first: float, factor: float, cap: float) -> Iterator[float]:
    """Yield the wait before each poll: first, first*factor, … up to cap (forever)."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


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


class DatabricksRunStatusTrigger(BaseTrigger):
    """Yield one event when Databricks run `run_id` reaches a terminal state (or polling fails)."""

    def __init__(
        self,
        run_id: int,
        databricks_conn_id: str = DATABRICKS_CONN_ID,
        first_poll_seconds: float = 0.5,
        poll_backoff: float = 2.0,
        max_poll_seconds: float = 90.0,
        retry_limit: int = 5,
        retry_delay: float = 1.0,
        outage_horizon_seconds: float = 1800.0,
    ) -> None:
        super().__init__()
        if not isinstance(run_id, int) or run_id <= 0:
            raise ValueError(f"run_id must be a positive integer, got {run_id!r}")
        if not 0 < first_poll_seconds <= max_poll_seconds:
            raise ValueError("need 0 < first_poll_seconds <= max_poll_seconds")
        if poll_backoff < 1:
            raise ValueError("poll_backoff must be >= 1")
        if retry_limit < 1:
            raise ValueError("retry_limit must be >= 1")
        if not outage_horizon_seconds > 0:
            raise ValueError("outage_horizon_seconds must be > 0")
        self.run_id = run_id
        self.databricks_conn_id = databricks_conn_id
        self.first_poll_seconds = first_poll_seconds
        self.poll_backoff = poll_backoff
        self.max_poll_seconds = max_poll_seconds
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.outage_horizon_seconds = outage_horizon_seconds

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
        hook = self._hook()
        delays = poll_delays(self.first_poll_seconds, self.poll_backoff, self.max_poll_seconds)
        async with hook:
            polls = 0
            down_since: float | None = None
            outage_delays = poll_delays(OUTAGE_FIRST_DELAY, 2.0, OUTAGE_MAX_DELAY)
            while True:
                try:
                    run = await hook.a_get_run(self.run_id)
                except Exception as exc:
                    if not is_transient(exc):
                        yield TriggerEvent({"status": ERROR_EVENT, "run_id": self.run_id, "message": str(exc)})
                        return
                    down_since = down_since if down_since is not None else time.monotonic()
                    down_for = time.monotonic() - down_since
                    if down_for >= self.outage_horizon_seconds:
                        yield TriggerEvent(
                            {
                                "status": UNREACHABLE_EVENT,
                                "run_id": self.run_id,
                                "message": str(exc),
                                "down_seconds": round(down_for),
                            }
                        )
                        return
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
                    self.log.info("Run %s is %s after %d polls", self.run_id, state, polls)
                    yield TriggerEvent({"status": TERMINAL_EVENT, "polls": polls, "run": run_summary(run), **details})
                    return
                delay = next(delays)
                self.log.debug("Run %s is %s; next poll in %.1fs", self.run_id, state, delay)
                await asyncio.sleep(delay)

    async def on_kill(self) -> None:
        """The task was killed by a person: stop the notebook too."""
        self.log.info("Cancelling Databricks run %s", self.run_id)
        # The hook has no async cancel; a thread keeps the triggerer's event loop free.
        await asyncio.to_thread(self._hook().cancel_run, self.run_id)
