"""The trigger polls with growing delays, reports the terminal state once, and cancels on kill."""

from __future__ import annotations

import asyncio
import itertools
from unittest import mock

import pytest

from dsbridge.triggers.run_status import DatabricksRunStatusTrigger, poll_delays

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
        {"run_id": "77"},
        {"run_id": 1, "first_poll_seconds": 0},
        {"run_id": 1, "poll_backoff": 0.5},
    ],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DatabricksRunStatusTrigger(**kwargs)


def test_delays_grow_from_sub_second_to_the_cap():
    delays = list(itertools.islice(poll_delays(0.5, 2.0, 90.0), 10))
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays[-1] == 90.0


def test_ten_minute_notebook_costs_about_a_dozen_polls():
    elapsed, polls = 0.0, 1
    for delay in poll_delays(0.5, 2.0, 90.0):
        if elapsed >= 600:
            break
        elapsed += delay
        polls += 1
    assert polls <= 15


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
    assert [c.args[0] for c in sleep.await_args_list] == [0.5, 1.0]
    hook.a_get_run_output.assert_not_called()


def test_failed_run_carries_error_and_trace():
    with mock.patch(HOOK) as hook_cls, mock.patch("asyncio.sleep", new=mock.AsyncMock()):
        hook = fake_hook(hook_cls, [run_answer("TERMINATED", "FAILED")])
        (event,) = asyncio.run(collect(DatabricksRunStatusTrigger(run_id=77)))
    hook.a_get_run_output.assert_awaited_once_with(78)
    assert event.payload["error"] == "KeyError: 'x'"
    assert event.payload["error_trace"] == "tb"


def test_api_error_becomes_an_error_event():
    with mock.patch(HOOK) as hook_cls:
        fake_hook(hook_cls, [RuntimeError("503 Service Unavailable")])
        (event,) = asyncio.run(collect(DatabricksRunStatusTrigger(run_id=77)))
    assert event.payload == {"status": "error", "run_id": 77, "message": "503 Service Unavailable"}


def test_on_kill_cancels_the_run():
    with mock.patch(HOOK) as hook_cls:
        asyncio.run(DatabricksRunStatusTrigger(run_id=77).on_kill())
    hook_cls.return_value.cancel_run.assert_called_once_with(77)
