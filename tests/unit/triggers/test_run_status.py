"""The trigger polls with growing delays, reports the terminal state once, and cancels on kill."""

from __future__ import annotations

import asyncio
import itertools
from unittest import mock

import pytest
from airflow.triggers.base import TaskFailedEvent, TaskSuccessEvent

from dsbridge.triggers.run_status import (
    DatabricksRunStatusTrigger,
    expected_poll_delay,
    poll_delays,
    run_elapsed,
)

HOOK = "dsbridge.triggers.run_status.DatabricksHook"


def run_answer(life_cycle: str, result: str | None = None) -> dict:
    state = {"life_cycle_state": life_cycle, "state_message": ""}
    if result:
        state["result_state"] = result
    return {
        "run_id": 77,
        "run_page_url": "http://db/77",
        "state": state,
        "tasks": [{"run_id": 78, "task_key": "job", "state": state}],
        "start_time": 1,
        "end_time": 2,
    }


async def collect(trigger: DatabricksRunStatusTrigger) -> list:
    return [event async for event in trigger.run()]


def fake_hook(hook_cls, answers: list) -> mock.MagicMock:
    hook = hook_cls.return_value
    hook.__aenter__ = mock.AsyncMock(return_value=hook)
    hook.__aexit__ = mock.AsyncMock(return_value=False)
    hook.a_get_run = mock.AsyncMock(side_effect=answers)
    hook.a_get_run_output = mock.AsyncMock(return_value={"error": "KeyError: 'x'", "error_trace": "tb"})
    return hook


def test_serialize_round_trip():
    trigger = DatabricksRunStatusTrigger(run_id=77, first_poll_seconds=0.25, max_poll_seconds=30)
    path, kwargs = trigger.serialize()
    assert path == "dsbridge.triggers.run_status.DatabricksRunStatusTrigger"
    assert DatabricksRunStatusTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_id": 0},
        {"run_id": "seventy-seven"},
        {"run_id": True},
        {"run_id": 1, "first_poll_seconds": 0},
        {"run_id": 1, "poll_backoff": 0.5},
        {"run_id": 1, "outage_horizon_seconds": 0},
        {"run_id": 1, "expected_seconds": 0},
    ],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DatabricksRunStatusTrigger(**kwargs)


def test_delays_grow_from_sub_second_to_the_cap():
    delays = list(itertools.islice(poll_delays(0.5, 2.0, 90.0), 10))
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 90.0


def test_without_an_expectation_a_ten_minute_notebook_costs_under_twenty_polls():
    elapsed, polls = 0.0, 1
    for delay in poll_delays(0.5, 1.5, 90.0):
        if elapsed >= 600:
            break
        elapsed += delay
        polls += 1
    assert polls <= 20


def test_yields_one_terminal_event_after_polling():
    answers = [run_answer("PENDING"), run_answer("RUNNING"), run_answer("TERMINATED", "SUCCESS")]
    with mock.patch(HOOK) as hook_cls, mock.patch("asyncio.sleep", new=mock.AsyncMock()) as sleep:
        hook = fake_hook(hook_cls, answers)
        events = asyncio.run(collect(DatabricksRunStatusTrigger(run_id=77)))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "terminal"
    assert payload["polls"] == 3
    assert payload["run"]["state"]["result_state"] == "SUCCESS"
    assert [c.args[0] for c in sleep.await_args_list] == [0.5, 0.75]
    hook.a_get_run_output.assert_not_called()


def test_failed_run_carries_error_and_trace():
    with mock.patch(HOOK) as hook_cls, mock.patch("asyncio.sleep", new=mock.AsyncMock()):
        hook = fake_hook(hook_cls, [run_answer("TERMINATED", "FAILED")])
        (event,) = asyncio.run(collect(DatabricksRunStatusTrigger(run_id=77)))
    hook.a_get_run_output.assert_awaited_once_with(78)
    assert event.payload["error"] == "KeyError: 'x'"
    assert event.payload["error_trace"] == "tb"


class Clock:
    """A monotonic clock that only `asyncio.sleep` moves, so outage horizons are exact."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def run_with_clock(trigger: DatabricksRunStatusTrigger, answers: list) -> tuple[list, Clock, mock.MagicMock]:
    clock = Clock()
    with (
        mock.patch(HOOK) as hook_cls,
        mock.patch("asyncio.sleep", new=clock.sleep),
        mock.patch("dsbridge.triggers.run_status.time.monotonic", new=clock.monotonic),
    ):
        hook = fake_hook(hook_cls, answers)
        events = asyncio.run(collect(trigger))
    return events, clock, hook


def transient_error() -> Exception:
    return ConnectionError("connection refused")


def test_an_outage_shorter_than_the_horizon_is_ridden_out():
    """Three minutes of refused connections mid-run, then the run ends: one terminal event."""
    outage = [transient_error()] * 8
    answers = [run_answer("RUNNING"), *outage, run_answer("RUNNING"), run_answer("TERMINATED", "SUCCESS")]
    events, clock, _ = run_with_clock(DatabricksRunStatusTrigger(run_id=77, outage_horizon_seconds=1800), answers)
    assert [e.payload["status"] for e in events] == ["terminal"]
    assert events[0].payload["polls"] == 3
    # Backing off while down: 2, 4, 8 … seconds, capped at a minute.
    assert clock.slept[1:9] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_an_outage_past_the_horizon_reports_the_run_unreachable():
    answers = [run_answer("RUNNING"), *[transient_error()] * 100]
    events, clock, hook = run_with_clock(DatabricksRunStatusTrigger(run_id=77, outage_horizon_seconds=300), answers)
    (event,) = events
    assert event.payload["status"] == "unreachable" and event.payload["down_seconds"] == 300
    assert clock.now - 1000.0 == pytest.approx(0.5 + 300)  # the last ask is exactly at the horizon
    assert hook.a_get_run.await_count < 20


def test_a_refusal_is_reported_at_once():
    """A 4xx (here: the run does not exist) will not get better by asking again."""
    from airflow.providers.databricks.exceptions import DatabricksApiError

    refused = DatabricksApiError("RESOURCE_DOES_NOT_EXIST", http_status_code=404)
    events, clock, _ = run_with_clock(DatabricksRunStatusTrigger(run_id=77), [refused])
    assert events[0].payload == {"status": "error", "run_id": 77, "message": "RESOURCE_DOES_NOT_EXIST"}
    assert clock.slept == []


def test_the_hook_giving_up_on_5xx_counts_as_an_outage():
    """The provider wraps exhausted retries of 429/5xx in AirflowException(…) from tenacity's RetryError."""
    from airflow.sdk.exceptions import AirflowException
    from tenacity import RetryError

    def gave_up() -> Exception:
        try:
            raise AirflowException("API requests to Databricks failed 5 times. Giving up.") from RetryError(None)
        except AirflowException as exc:
            return exc

    answers = [gave_up(), gave_up(), run_answer("TERMINATED", "SUCCESS")]
    events, _, _ = run_with_clock(DatabricksRunStatusTrigger(run_id=77), answers)
    assert events[0].payload["status"] == "terminal"


def test_on_kill_cancels_the_run():
    with mock.patch(HOOK) as hook_cls:
        asyncio.run(DatabricksRunStatusTrigger(run_id=77).on_kill())
    hook_cls.return_value.cancel_run.assert_called_once_with(77)


# --- ending the `wait` task from the triggerer ---------------------------------------------------


def test_a_templated_run_id_is_accepted_and_its_rendered_string_used():
    trigger = DatabricksRunStatusTrigger(run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}", end_task=True)
    trigger.run_id = "77"  # as the triggerer renders it
    events, _, hook = run_with_clock(trigger, [run_answer("TERMINATED", "SUCCESS")])
    hook.a_get_run.assert_awaited_once_with(77)
    assert isinstance(events[0], TaskSuccessEvent)


def test_success_ends_the_task_with_the_run_summary():
    trigger = DatabricksRunStatusTrigger(run_id=77, end_task=True)
    (event,), _, _ = run_with_clock(trigger, [run_answer("RUNNING"), run_answer("TERMINATED", "SUCCESS")])
    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms["return_value"]["run_id"] == 77
    assert event.xcoms["return_value"]["state"]["result_state"] == "SUCCESS"


def test_a_notebook_failure_ends_the_task_with_the_failure_record():
    trigger = DatabricksRunStatusTrigger(run_id=77, end_task=True)
    (event,), _, _ = run_with_clock(trigger, [run_answer("TERMINATED", "FAILED")])
    assert isinstance(event, TaskFailedEvent)
    record = event.xcoms["dsbridge_error"]
    assert record["code"] == "notebook_failed" and record["failed_task"] == "wait"
    assert record["message"] == "KeyError: 'x'" and record["trace"] == "tb"
    assert record["type"] == "request.failed"


def test_a_cancelled_run_ends_the_task_as_a_cancellation():
    trigger = DatabricksRunStatusTrigger(run_id=77, end_task=True)
    (event,), _, _ = run_with_clock(trigger, [run_answer("TERMINATED", "CANCELED")])
    assert event.xcoms["dsbridge_error"]["type"] == "request.cancelled"
    assert event.xcoms["dsbridge_error"]["code"] == "run_cancelled"


def test_past_the_horizon_the_run_is_cancelled_before_the_task_fails():
    trigger = DatabricksRunStatusTrigger(run_id=77, outage_horizon_seconds=60, end_task=True)
    events, _, hook = run_with_clock(trigger, [transient_error()] * 50)
    (event,) = events
    hook.cancel_run.assert_called_once_with(77)
    record = event.xcoms["dsbridge_error"]
    assert record["code"] == "databricks_unreachable"
    assert record["message"].endswith("the run was cancelled")


def test_a_missing_run_id_fails_the_task_with_a_clear_reason():
    trigger = DatabricksRunStatusTrigger(run_id="{{ ti.xcom_pull(task_ids='submit', key='run_id') }}", end_task=True)
    trigger.run_id = "None"  # submit recorded no run
    events, _, hook = run_with_clock(trigger, [])
    (event,) = events
    assert isinstance(event, TaskFailedEvent)
    assert "positive Databricks run id" in event.xcoms["dsbridge_error"]["message"]
    hook.a_get_run.assert_not_awaited()


def test_in_the_triggerer_the_xcoms_are_written_through_the_task_sdk():
    """Airflow double-encodes XComs carried by task-end events; written like a worker's they read back."""
    from types import SimpleNamespace

    trigger = DatabricksRunStatusTrigger(run_id=77, end_task=True)
    trigger.task_instance = SimpleNamespace(dag_id="job", task_id="wait", run_id="req-1", map_index=-1)
    with mock.patch("airflow.sdk.execution_time.xcom.XCom.aset", new=mock.AsyncMock()) as aset:
        (event,), _, _ = run_with_clock(trigger, [run_answer("TERMINATED", "FAILED")])
    assert isinstance(event, TaskFailedEvent) and event.xcoms is None
    (call,) = aset.await_args_list
    assert call.args[0] == "dsbridge_error" and call.args[1]["code"] == "notebook_failed"
    assert call.kwargs == {"dag_id": "job", "task_id": "wait", "run_id": "req-1", "map_index": -1}


class SimulatedRun:
    """A Databricks run that started at `started` (epoch s) and ends after `duration` seconds.

    `runs/get` answers from a clock that only the trigger's sleeps move, so the test sees exactly
    when the trigger noticed the end and how many calls it took.
    """

    def __init__(self, duration: float, started: float = 1_800_000_000.0, joined_after: float = 0.0) -> None:
        self.duration = duration
        self.started = started
        self.now = started + joined_after
        self.polls = 0
        self.noticed_at: float | None = None

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds

    async def get_run(self, run_id: int) -> dict:
        self.polls += 1
        assert self.polls < 100, "the trigger never noticed the end"
        ended = self.now - self.started >= self.duration
        answer = run_answer("TERMINATED", "SUCCESS") if ended else run_answer("RUNNING")
        answer["start_time"] = int(self.started * 1000)
        if ended:
            self.noticed_at = self.now - self.started
        return answer


def follow_simulated(run: SimulatedRun, expected_seconds: float | None) -> SimulatedRun:
    trigger = DatabricksRunStatusTrigger(run_id=77, expected_seconds=expected_seconds)
    with (
        mock.patch(HOOK) as hook_cls,
        mock.patch("asyncio.sleep", new=run.sleep),
        mock.patch("dsbridge.triggers.run_status.time.time", new=run.time),
    ):
        fake_hook(hook_cls, []).a_get_run = mock.AsyncMock(side_effect=run.get_run)
        (event,) = asyncio.run(collect(trigger))
    assert event.payload["status"] == "terminal" and event.payload["polls"] == run.polls
    return run


def test_a_ten_minute_notebook_expected_to_take_ten_minutes_costs_ten_polls_and_little_lag():
    run = follow_simulated(SimulatedRun(duration=600.3), expected_seconds=600)
    # With runs/submit and collect's runs/get-output, the request makes at most 12 calls.
    assert run.polls <= 10
    assert run.noticed_at is not None and run.noticed_at - 600.3 <= 0.05 * 600


def test_without_an_expectation_a_ten_minute_notebook_costs_more_and_is_noticed_later():
    run = follow_simulated(SimulatedRun(duration=600.3), expected_seconds=None)
    assert run.polls > 10
    assert run.noticed_at is not None and run.noticed_at - 600.3 > 0.05 * 600


@pytest.mark.parametrize("duration", [900.0, 1500.0, 3000.0])
def test_a_run_past_its_expected_time_is_still_noticed_within_ten_percent(duration):
    run = follow_simulated(SimulatedRun(duration=duration), expected_seconds=600)
    assert run.noticed_at is not None and run.noticed_at - duration <= 0.1 * duration + 0.5


def test_a_run_that_fails_early_is_noticed_at_the_next_fraction():
    run = follow_simulated(SimulatedRun(duration=40), expected_seconds=600)
    assert run.noticed_at == pytest.approx(0.25 * 600)
    assert run.polls == 3  # at once, at 5 % and at 25 % of the expected time


def test_a_re_attached_trigger_keeps_the_schedule_of_the_runs_own_start():
    """A triggerer that restarts 400 s into the run polls next at 450 s (75 %), not 400 + 30 s."""
    run = follow_simulated(SimulatedRun(duration=445, joined_after=400), expected_seconds=600)
    assert run.noticed_at == pytest.approx(450)
    assert run.polls == 2


def test_expected_delays_never_fall_below_the_first_poll_delay():
    assert expected_poll_delay(299.9, 600, 0.5, 90) == 0.5
    assert expected_poll_delay(0, 600, 0.5, 90) == 30
    assert expected_poll_delay(10_000, 600, 0.5, 90) == 90


def test_a_run_without_a_start_time_counts_from_when_the_trigger_began_following():
    assert run_elapsed({"start_time": 0}, now=1000.0, fallback_start=990.0) == 10.0
    assert run_elapsed({"start_time": 2_000_000 * 1000}, now=1000.0, fallback_start=990.0) == 10.0  # future
    assert run_elapsed({"start_time": 900_000}, now=1000.0, fallback_start=990.0) == 100.0
