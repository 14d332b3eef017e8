"""RequestStore: each event once, deliveries counted exactly, and per request the highest sequence."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dsbridge.callback.event import CANCELLED, FAILED, SUCCEEDED, event_id_for
from dsbridge.client import CallbackEvent, CallbackReceiver, RequestStore
from tests.unit.client.events import JOB, REQUEST, SECRET, event, refusal, signed

RECEIVER = CallbackReceiver(SECRET)


def received(payload: dict[str, Any]) -> tuple[CallbackEvent, bytes, dict[str, str]]:
    body, headers = signed(payload)
    return RECEIVER.verify(headers, body), body, headers


@pytest.fixture
def store(tmp_path: Path) -> RequestStore:
    return RequestStore(tmp_path / "events.sqlite3")


def test_first_delivery_is_stored_and_replays_only_count(store: RequestStore) -> None:
    evt, body, headers = received(event())
    first = store.record(evt, body, headers, path="/callbacks/dsbridge")
    assert (first.status, first.deliveries, first.is_latest) == ("stored", 1, True)
    again = store.record(evt, body, signed(event())[1])
    assert (again.status, again.deliveries, again.is_latest) == ("duplicate", 2, True)
    [kept] = store.all()
    assert kept.body == body and kept.headers == headers  # the first delivery, byte for byte
    assert kept.deliveries == 2 and kept.path == "/callbacks/dsbridge"
    assert kept.last_received_at >= kept.received_at
    assert kept.event == evt
    assert store.latest(JOB, REQUEST) == kept


def test_stored_event_json_keeps_the_events_shape(store: RequestStore) -> None:
    evt, body, headers = received(event())
    store.record(evt, body, headers)
    shown = store.all()[0].as_json()
    assert set(shown) == {
        "event_id",
        "path",
        "headers",
        "body",
        "payload",
        "deliveries",
        "received_at",
        "last_received_at",
    }
    assert shown["body"].encode() == body and shown["payload"]["event_id"] == evt.event_id


def test_concurrent_replays_are_counted_exactly(store: RequestStore) -> None:
    evt, body, headers = received(event())
    threads, per_thread = 8, 25
    statuses: list[str] = []
    start = threading.Barrier(threads)

    def deliver() -> None:
        start.wait(timeout=10)
        for _ in range(per_thread):
            statuses.append(store.record(evt, body, headers).status)

    workers = [threading.Thread(target=deliver) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert Counter(statuses) == {"stored": 1, "duplicate": threads * per_thread - 1}
    [kept] = store.all()
    assert kept.deliveries == threads * per_thread


def test_concurrent_attempts_keep_the_highest_sequence(store: RequestStore) -> None:
    deliveries = [received(event(attempt=a)) for a in range(6)]
    start = threading.Barrier(len(deliveries))

    def deliver(item: tuple[CallbackEvent, bytes, dict[str, str]]) -> None:
        start.wait(timeout=10)
        store.record(*item)

    workers = [threading.Thread(target=deliver, args=(item,)) for item in deliveries]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    latest = store.latest(JOB, REQUEST)
    assert latest is not None and latest.sequence == 6
    assert len(store.history(JOB, REQUEST)) == 6


def test_a_clear_replaces_the_latest(store: RequestStore) -> None:
    first = received(event(FAILED))
    second = received(event(attempt=1, supersedes=first[0].event_id))
    assert store.record(*first).status == "stored"
    result = store.record(*second)
    assert (result.status, result.is_latest, result.latest_event_id) == ("stored", True, second[0].event_id)
    state = store.request(JOB, REQUEST)
    assert state is not None and state.latest is not None
    assert state.latest.event_id == second[0].event_id
    assert [state.role(e) for e in state.history] == ["superseded", "latest"]


def test_out_of_order_arrival_keeps_the_newer_event(store: RequestStore) -> None:
    older = received(event(FAILED, attempt=0))
    newer = received(event(SUCCEEDED, attempt=1, supersedes=older[0].event_id))
    assert store.record(*newer).status == "stored"
    late = store.record(*older)
    assert (late.status, late.is_latest, late.latest_event_id) == ("superseded", False, newer[0].event_id)
    latest = store.latest(JOB, REQUEST)
    assert latest is not None and latest.sequence == 2 and latest.event.type == SUCCEEDED
    assert [e.sequence for e in store.history(JOB, REQUEST)] == [2, 1]  # arrival order
    replay = store.record(*older)
    assert (replay.status, replay.is_latest, replay.deliveries) == ("duplicate", False, 2)


def test_equal_sequence_does_not_replace_the_latest(store: RequestStore) -> None:
    """Two outcomes of one attempt should not happen; if they do, the first to arrive stays."""
    first, second = received(event(FAILED)), received(event(CANCELLED))
    store.record(*first)
    assert store.record(*second).status == "superseded"
    latest = store.latest(JOB, REQUEST)
    assert latest is not None and latest.event_id == first[0].event_id


def test_conflict_refusal_never_becomes_latest(store: RequestStore) -> None:
    refused = received(refusal("second-run"))
    result = store.record(*refused)
    assert (result.status, result.is_latest, result.latest_event_id) == ("refusal", False, None)
    assert store.latest(JOB, REQUEST) is None
    story = received(event())
    assert store.record(*story).status == "stored"
    result = store.record(*received(refusal("third-run")))
    assert (result.status, result.latest_event_id) == ("refusal", story[0].event_id)
    assert store.record(*refused).status == "duplicate"
    state = store.request(JOB, REQUEST)
    assert state is not None and state.latest is not None and state.latest.event_id == story[0].event_id
    assert [state.role(e) for e in state.history] == ["refusal", "latest", "refusal"]


def test_requests_are_kept_apart_and_listed_most_recent_first(store: RequestStore) -> None:
    store.record(*received(event(request_id="a")))
    store.record(*received(event(request_id="b")))
    store.record(*received(event(request_id="a", attempt=1)))
    states = store.requests()
    assert [s.request_id for s in states] == ["a", "b"]
    assert [len(s.history) for s in states] == [2, 1]
    assert [s.latest.sequence for s in states if s.latest] == [2, 1]
    assert store.request(JOB, "nope") is None and store.history(JOB, "nope") == []
    assert store.count() == 3


def test_events_and_latest_survive_a_restart(tmp_path: Path) -> None:
    newer, older = received(event(attempt=1)), received(event(FAILED))
    db = tmp_path / "db.sqlite3"
    first = RequestStore(db)
    first.record(*newer)
    first.close()
    second = RequestStore(db)
    assert second.record(*older).status == "superseded"
    assert second.record(*newer).deliveries == 2
    latest = second.latest(JOB, REQUEST)
    assert latest is not None and latest.event_id == event_id_for(JOB, REQUEST, 1, SUCCEEDED)
