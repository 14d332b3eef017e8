"""Per-run Jobs API call counts (`GET /emulator/stats`), which `dsbridge bench` reports per request."""

from __future__ import annotations

import httpx
import pytest

from dsbridge_local.emulator.server import BackgroundServer
from dsbridge_local.emulator.stats import COUNTED_CALLS, CallCounts
from tests.emulator.conftest import submit, wait_for


def stats(http: httpx.Client, run_id: int | None = None) -> dict:
    answer = http.get("/emulator/stats", params={} if run_id is None else {"run_id": run_id})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_calls_about_a_run_are_counted_for_its_parent(client: httpx.Client) -> None:
    run_id = submit(client, "/jobs/echo", {"name": "counted"}, idempotency_token="count-me")
    run = wait_for(client, run_id)
    task_run_id = run["tasks"][0]["run_id"]
    assert client.get("/api/2.2/jobs/runs/get-output", params={"run_id": task_run_id}).status_code == 200
    # The parent of a multi-task run has no output (400), but the call was still made about it.
    assert client.get("/api/2.1/jobs/runs/get-output", params={"run_id": run_id}).status_code == 400
    assert client.request("GET", "/api/2.2/jobs/runs/get", json={"run_id": task_run_id}).status_code == 200
    assert client.post("/api/2.2/jobs/runs/cancel", json={"run_id": task_run_id}).status_code == 200
    # A repeated submit with the same token returns (and is counted for) the same run.
    assert submit(client, "/jobs/echo", idempotency_token="count-me") == run_id

    seen = stats(client, run_id)
    gets = seen["calls"]["runs/get"]
    assert gets >= 2  # wait_for's polls plus the one with a JSON body
    assert seen["calls"] == {"runs/submit": 2, "runs/get": gets, "runs/get-output": 2, "runs/cancel": 1}
    assert seen["total"] == 5 + gets
    assert seen["tracked"] is True
    # Asking with the task run's id answers for its run.
    assert stats(client, task_run_id) == seen


def test_other_calls_and_unknown_runs_count_nothing(client: httpx.Client) -> None:
    run_id = submit(client, "/jobs/echo")
    before = stats(client)
    assert client.get("/api/2.2/jobs/runs/list").status_code == 200
    assert client.get("/api/2.2/jobs/runs/get", params={"run_id": 999_999}).status_code == 404
    assert client.post("/api/2.2/jobs/runs/cancel", json={"run_id": 999_999}).status_code == 404
    after = stats(client)
    assert after["total"] == before["total"]
    assert set(after["calls"]) == set(COUNTED_CALLS)
    assert stats(client, run_id)["calls"]["runs/submit"] == 1


def test_stats_need_the_token_and_a_known_run(emulator: BackgroundServer, client: httpx.Client) -> None:
    assert httpx.get(f"{emulator.url}/emulator/stats", timeout=10).status_code == 401
    missing = client.get("/emulator/stats", params={"run_id": 999_999})
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert client.get("/emulator/stats", params={"run_id": "abc"}).status_code == 400


def test_databricks_answers_carry_no_counts(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/echo"))
    assert "calls" not in run and "api_calls" not in run


def test_memory_is_bounded() -> None:
    counts = CallCounts(max_runs=3)
    for run_id in range(1, 6):
        counts.count(run_id, "runs/get")
    summary = counts.summary()
    assert summary["runs_tracked"] == 3
    assert summary["evicted"] == 2
    assert summary["calls"]["runs/get"] == 5
    assert counts.of(1) == {"run_id": 1, "tracked": False, "calls": dict.fromkeys(COUNTED_CALLS, 0), "total": 0}
    assert counts.of(5)["total"] == 1
    with pytest.raises(ValueError, match="not a counted call"):
        counts.count(1, "runs/list")
