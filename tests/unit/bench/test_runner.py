"""The bench's request loop against fake sources: every way a request ends, and every wait bounded."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from dsbridge.client import AirflowApiError
from dsbridge_local.bench import runner
from dsbridge_local.bench.records import build_record
from dsbridge_local.bench.runner import Plan, run_phase


class FakeSources:
    """Requests ending as their id says: `ok` gets a callback after 2 rounds, `ended` ends without
    one, `stuck` never ends, `refused` is refused at the trigger."""

    def __init__(self) -> None:
        self.rounds = 0
        self.triggered: list[str] = []
        self.max_in_flight = 0
        self.answered: set[str] = set()

    def trigger(self, path: str, dag_id: str, request_id: str, conf: dict[str, Any]) -> datetime:
        if "refused" in request_id:
            raise AirflowApiError(403, "Forbidden")
        self.triggered.append(request_id)
        self.max_in_flight = max(self.max_in_flight, len(self.triggered) - len(self.answered))
        return datetime.now(UTC)

    def events(self, job: str) -> dict[str, list[dict[str, Any]]]:
        self.rounds += 1
        if self.rounds == 3:
            raise AirflowApiError(503, "the service restarts")  # one failed read: the next round reads again
        found = {
            rid: [{"event_id": f"evt_{rid}", "received_at": datetime.now(UTC).isoformat(), "payload": {"type": "x"}}]
            for rid in self.triggered
            if "ok" in rid and self.rounds > 3
        }
        self.answered |= set(found)
        return found

    def dag_runs(self, dag_id: str, prefix: str) -> dict[str, dict[str, Any]]:
        return {rid: {"state": "failed" if "ended" in rid else "running"} for rid in self.triggered}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "RUN_STATE_CHECK_SECONDS", 0.0)


def plan(**changes: Any) -> Plan:
    fields = {"requests": 4, "concurrency": 4, "notebook_seconds": 1, "poll_seconds": 0.01}
    return Plan(**(fields | {"request_timeout": 0.5, "ended_grace": 0.05} | changes))


def phase(sources: FakeSources, prefix: str, count: int, concurrency: int, **changes: Any) -> list[Any]:
    lines: list[str] = []
    found = run_phase(sources, "dsbridge", plan(**changes), prefix, count, concurrency, lines.append)  # type: ignore[arg-type]
    assert len(lines) == count  # one progress line per request
    return found


def test_each_way_a_request_ends() -> None:
    began = time.monotonic()
    by_kind = {}
    for kind in ("ok", "ended", "stuck", "refused"):
        [obs] = phase(FakeSources(), kind, 1, 1)
        by_kind[kind] = (obs, build_record(obs))
    assert time.monotonic() - began < 10
    obs, record = by_kind["ok"]
    assert record["completed"] and record["callbacks"] == 1 and obs.triggered_at is not None
    obs, record = by_kind["ended"]
    assert not record["completed"] and obs.gave_up == "the DAG run ended and no callback came within 0s"
    obs, record = by_kind["stuck"]
    assert not record["completed"] and obs.gave_up == "no callback within 0s"
    obs, record = by_kind["refused"]
    assert (
        not record["completed"]
        and record["last_state"] == "trigger refused: AirflowApiError: Airflow API answered 403: Forbidden"
    )


def test_concurrency_bounds_the_requests_in_flight() -> None:
    sources = FakeSources()
    found = phase(sources, "ok", 6, 2)
    assert all(build_record(obs)["completed"] for obs in found)
    assert len(sources.triggered) == 6
    assert sources.max_in_flight == 2


def test_the_phase_itself_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Plan, "phase_timeout", lambda self, count, concurrency: 0.2)
    found = phase(FakeSources(), "stuck", 3, 1, request_timeout=60)
    reasons = sorted(obs.gave_up for obs in found)
    assert reasons == ["never triggered: out of time", "never triggered: out of time", "the phase ran out of time"]


def test_a_callback_after_the_bench_gave_up_does_not_complete_the_request() -> None:
    [obs] = phase(FakeSources(), "stuck", 1, 1)
    obs.events = [{"event_id": "evt_late", "received_at": datetime.now(UTC).isoformat(), "payload": {"type": "x"}}]
    record = build_record(obs)
    assert not record["completed"] and record["callbacks"] == 1
    assert record["last_state"].endswith("(no callback within 0s)")
