"""Trigger that follows one Databricks run from the triggerer, holding no worker slot.

Polls start sub-second and back off geometrically to a cap, so a short notebook is noticed within
a second or two and a long one costs about a dozen API calls. If a person kills the waiting task
(mark failed, clear), `on_kill` cancels the Databricks run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState
from airflow.triggers.base import BaseTrigger, TriggerEvent

from dsbridge.settings import DATABRICKS_CONN_ID

TERMINAL_EVENT = "terminal"
ERROR_EVENT = "error"


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
        self.run_id = run_id
        self.databricks_conn_id = databricks_conn_id
        self.first_poll_seconds = first_poll_seconds
        self.poll_backoff = poll_backoff
        self.max_poll_seconds = max_poll_seconds
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay

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
            while True:
                try:
                    run = await hook.a_get_run(self.run_id)
                except Exception as exc:  # the sensor decides whether to retry
                    yield TriggerEvent({"status": ERROR_EVENT, "run_id": self.run_id, "message": str(exc)})
                    return
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
