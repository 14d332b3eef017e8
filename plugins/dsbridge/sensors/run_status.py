"""Sensor that waits for a Databricks run to end, in the triggerer from its very start.

It turns the run's terminal state into the request's outcome: SUCCESS lets `collect` go on;
FAILED, TIMEDOUT and INTERNAL_ERROR fail the request with the notebook's error and trace;
CANCELED cancels it. A notebook's own failure is final (no Airflow retry would change it). An
unreachable Databricks API is ridden out inside the trigger for the outage horizon; when that runs
out -- or the task is killed, or times out -- the run is cancelled before the request fails.

By default (`start_from_trigger`) the task never runs in a worker: the scheduler hands it straight
to the triggerer, which renders `run_id` from the submit task's XCom, follows the run and ends the
task itself (see `DatabricksRunStatusTrigger(end_task=True)`). A worker is needed only if the
trigger times out (`resume_execution` then cancels the run and records why). With
`start_from_trigger=False` it defers from a worker as usual, and `deferrable=False` pokes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.databricks.hooks.databricks import DatabricksHook, RunState
from airflow.sdk import BaseSensorOperator
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import StartTriggerArgs

from dsbridge.callback.event import ErrorCode
from dsbridge.outcome import ERROR_XCOM_KEY, record_failure
from dsbridge.settings import DATABRICKS_CONN_ID, load_settings
from dsbridge.triggers.run_status import (
    DatabricksRunStatusTrigger,
    cancel_note,
    conclude,
    error_details,
    failed_task_run_id,
    run_summary,
)

TRIGGER_FAIL_METHOD = "__fail__"
TRIGGER_CLASS = f"{DatabricksRunStatusTrigger.__module__}.{DatabricksRunStatusTrigger.__qualname__}"


class DatabricksRunStatusSensor(BaseSensorOperator):
    """
    Wait for Databricks run ``run_id`` to reach a terminal state.

    :param run_id: the run to follow (templated; usually the submit task's ``run_id`` XCom).
    :param databricks_conn_id: the Databricks connection.
    :param deferrable: wait in the triggerer (default) instead of holding a worker slot.
    :param start_from_trigger: start in the triggerer and end there, with no worker at all (default).
    :param first_poll_seconds: first wait between polls; it grows by half up to ``max_poll_seconds``.
    :param expected_seconds: how long the run usually takes; polls follow fractions of it instead.
    """

    template_fields: Sequence[str] = ("run_id", "databricks_conn_id")
    ui_color = "#1CB1C2"
    ui_fgcolor = "#fff"

    def __init__(
        self,
        *,
        run_id: int | str,
        databricks_conn_id: str = DATABRICKS_CONN_ID,
        deferrable: bool = True,
        start_from_trigger: bool = True,
        first_poll_seconds: float = 0.5,
        max_poll_seconds: float = 90.0,
        expected_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.databricks_conn_id = databricks_conn_id
        self.deferrable = deferrable
        self.first_poll_seconds = first_poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.expected_seconds = expected_seconds
        self.start_from_trigger = deferrable and start_from_trigger
        if self.start_from_trigger:
            # Airflow 3.3 builds a started-from-trigger task's context from its *serialized* params,
            # which its own validation refuses (a required DAG param fails every start, and takes
            # the trigger runner down). This task reads no params, so it keeps none.
            self.params = ParamsDict()
            self.start_trigger_args = StartTriggerArgs(
                trigger_cls=TRIGGER_CLASS,
                trigger_kwargs={**self._trigger_kwargs(run_id), "end_task": True},
                next_method="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )

    def _trigger_kwargs(self, run_id: int | str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "databricks_conn_id": self.databricks_conn_id,
            "first_poll_seconds": self.first_poll_seconds,
            "max_poll_seconds": self.max_poll_seconds,
            "outage_horizon_seconds": load_settings().databricks_horizon.total_seconds(),
            "expected_seconds": self.expected_seconds,
        }

    @cached_property
    def hook(self) -> DatabricksHook:
        return DatabricksHook(self.databricks_conn_id, caller=type(self).__name__)

    @property
    def databricks_run_id(self) -> int:
        try:
            run_id = int(self.run_id)
        except (TypeError, ValueError):
            run_id = 0
        if run_id <= 0:
            raise ValueError(f"run_id must be a positive Databricks run id, got {self.run_id!r}")
        return run_id

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=DatabricksRunStatusTrigger(**self._trigger_kwargs(self.databricks_run_id)),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Any) -> Any:
        """Non-deferrable path: one `runs/get` per poke."""
        run = self.hook.get_run(self.databricks_run_id)
        if not RunState(**run["state"]).is_terminal:
            return False
        details: dict[str, Any] = {}
        task_run_id = failed_task_run_id(run)
        if task_run_id is not None:
            details = error_details(self.hook.get_run_output(task_run_id))
        self._conclude(context, {"status": "terminal", "run": run_summary(run), **details})
        return True

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        return self._conclude(context, event)

    def _conclude(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The same judgement the trigger makes when it ends the task itself."""
        conclusion = conclude(event)
        if conclusion.failure is None and conclusion.run is not None:
            self.log.info("Databricks run %s succeeded (%s polls)", conclusion.run["run_id"], event.get("polls"))
            return conclusion.run
        failure = {**(conclusion.failure or {}), "failed_task": self.task_id}
        if conclusion.cancel_first:
            failure["message"] = f"{failure['message']}; {self._cancel_run()}"
        context["ti"].xcom_push(key=ERROR_XCOM_KEY, value=failure)
        raise AirflowFailException(failure["message"])

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        # The trigger was stopped by a timeout (or crashed): stop the notebook, and say why, before failing.
        if next_method == TRIGGER_FAIL_METHOD:
            reason = (next_kwargs or {}).get("error", "the trigger failed")
            record_failure(
                context,
                f"gave up waiting for Databricks run {self.run_id} ({reason}); {self._cancel_run()}",
                code=ErrorCode.NOTEBOOK_TIMED_OUT,
            )
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        self._cancel_run()

    def _cancel_run(self) -> str:
        """Cancel the run; say whether that worked (the failure event carries it)."""
        try:
            self.hook.cancel_run(self.databricks_run_id)
        except Exception as exc:
            self.log.exception("Could not cancel Databricks run %s", self.run_id)
            return cancel_note(False, exc)
        self.log.info("Cancelled Databricks run %s", self.run_id)
        return cancel_note(True)
