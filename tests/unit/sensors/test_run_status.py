"""The wait sensor defers, and turns each terminal state into the request's outcome."""

from __future__ import annotations

from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from dsbridge.sensors.run_status import DatabricksRunStatusSensor
from dsbridge.triggers.run_status import DatabricksRunStatusTrigger

HOOK = "dsbridge.sensors.run_status.DatabricksHook"


def terminal_event(result_state: str, message: str = "", **details) -> dict:
    return {
        "status": "terminal",
        "polls": 3,
        "run": {
            "run_id": 77,
            "run_page_url": "http://db/#job/runs/77",
            "state": {
                "life_cycle_state": "TERMINATED",
                "result_state": result_state,
                "state_message": message,
            },
            "tasks": [{"run_id": 78, "task_key": "job", "state": {"result_state": result_state}}],
        },
        **details,
    }


@pytest.fixture
def sensor() -> DatabricksRunStatusSensor:
    return DatabricksRunStatusSensor(task_id="wait", run_id="77", timeout=600)


def test_starts_in_the_triggerer_with_the_templated_run_and_its_timeout(monkeypatch):
    monkeypatch.setenv("DSBRIDGE_DATABRICKS_HORIZON_MINUTES", "3")
    sensor = DatabricksRunStatusSensor(task_id="wait", run_id="{{ ti.xcom_pull(task_ids='submit') }}", timeout=600)
    args = sensor.start_trigger_args
    assert sensor.start_from_trigger is True
    assert args.trigger_cls == "dsbridge.triggers.run_status.DatabricksRunStatusTrigger"
    assert args.trigger_kwargs["run_id"] == "{{ ti.xcom_pull(task_ids='submit') }}"
    assert args.trigger_kwargs["end_task"] is True and args.trigger_kwargs["outage_horizon_seconds"] == 180
    assert args.timeout.total_seconds() == 600
    # The trigger class accepts exactly these arguments.
    DatabricksRunStatusTrigger(**args.trigger_kwargs)


def test_defers_to_the_trigger_with_the_run_and_timeout(sensor, context_factory):
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context_factory("wait"))
    trigger = deferred.value.trigger
    assert isinstance(trigger, DatabricksRunStatusTrigger)
    assert trigger.run_id == 77
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() == 600


def test_rejects_a_missing_run_id(context_factory):
    sensor = DatabricksRunStatusSensor(task_id="wait", run_id="None")
    with pytest.raises(ValueError, match="positive Databricks run id"):
        sensor.execute(context_factory("wait"))


def test_success_returns_the_run(sensor, context_factory):
    context = context_factory("wait")
    run = sensor.execute_complete(context, terminal_event("SUCCESS"))
    assert run["run_id"] == 77
    assert "dsbridge_error" not in context["ti"].pushed


def test_failed_surfaces_the_notebook_error(sensor, context_factory):
    context = context_factory("wait")
    event = terminal_event("FAILED", "Task failed", error="ValueError: no orders", error_trace="Traceback\n  ...")
    with pytest.raises(AirflowFailException, match="ValueError: no orders"):
        sensor.execute_complete(context, event)
    recorded = context["ti"].pushed["dsbridge_error"]
    assert recorded["type"] == "request.failed" and recorded["code"] == "notebook_failed"
    assert recorded["message"] == "ValueError: no orders"
    assert recorded["trace"] == "Traceback\n  ..."
    assert recorded["databricks_state"]["result_state"] == "FAILED"


def test_canceled_cancels_the_request(sensor, context_factory):
    context = context_factory("wait")
    with pytest.raises(AirflowFailException):
        sensor.execute_complete(context, terminal_event("CANCELED", "Run cancelled by user"))
    assert context["ti"].pushed["dsbridge_error"]["type"] == "request.cancelled"
    assert context["ti"].pushed["dsbridge_error"]["code"] == "run_cancelled"


def test_timedout_is_a_failure_that_says_timeout(sensor, context_factory):
    context = context_factory("wait")
    with pytest.raises(AirflowFailException, match="exceeded its timeout"):
        sensor.execute_complete(context, terminal_event("TIMEDOUT", "Run timed out"))
    assert context["ti"].pushed["dsbridge_error"]["type"] == "request.failed"
    assert context["ti"].pushed["dsbridge_error"]["code"] == "notebook_timed_out"


def test_an_outage_past_the_horizon_cancels_the_run_before_failing(sensor, context_factory):
    context = context_factory("wait")
    event = {"status": "unreachable", "run_id": 77, "message": "503", "down_seconds": 1800}
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException, match="unreachable for 1800 s"):
        sensor.execute_complete(context, event)
    hook_cls.return_value.cancel_run.assert_called_once_with(77)
    recorded = context["ti"].pushed["dsbridge_error"]
    assert recorded["code"] == "databricks_unreachable"
    assert recorded["message"].endswith("the run was cancelled")


def test_a_cancel_that_fails_too_is_said_in_the_event(sensor, context_factory):
    context = context_factory("wait")
    event = {"status": "unreachable", "run_id": 77, "message": "refused", "down_seconds": 1800}
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException):
        hook_cls.return_value.cancel_run.side_effect = ConnectionError("still down")
        sensor.execute_complete(context, event)
    assert (
        "could not be cancelled (still down); cancel it in Databricks"
        in context["ti"].pushed["dsbridge_error"]["message"]
    )


def test_the_trigger_gets_the_outage_horizon_from_the_settings(sensor, context_factory, monkeypatch):
    monkeypatch.setenv("DSBRIDGE_DATABRICKS_HORIZON_MINUTES", "3")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context_factory("wait"))
    assert deferred.value.trigger.outage_horizon_seconds == 180


def test_trigger_timeout_cancels_the_run_and_says_why(sensor, context_factory):
    context = context_factory("wait")
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowSensorTimeout):
        sensor.resume_execution("__fail__", {"error": "Trigger timeout"}, context)
    hook_cls.return_value.cancel_run.assert_called_once_with(77)
    recorded = context["ti"].pushed["dsbridge_error"]
    assert recorded["type"] == "request.failed" and recorded["failed_task"] == "wait"
    assert "Trigger timeout" in recorded["message"] and "cancelled" in recorded["message"]


def test_kill_cancels_the_run(sensor):
    with mock.patch(HOOK) as hook_cls:
        sensor.on_kill()
    hook_cls.return_value.cancel_run.assert_called_once_with(77)


def test_poke_mode_reads_error_of_failed_task(context_factory):
    sensor = DatabricksRunStatusSensor(task_id="wait", run_id="77", deferrable=False)
    event = terminal_event("FAILED")
    with mock.patch(HOOK) as hook_cls, pytest.raises(AirflowFailException, match="boom"):
        hook_cls.return_value.get_run.return_value = event["run"]
        hook_cls.return_value.get_run_output.return_value = {"error": "boom", "error_trace": "tb"}
        sensor.poke(context_factory("wait"))
    hook_cls.return_value.get_run_output.assert_called_once_with(78)
