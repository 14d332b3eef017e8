"""CallbackReceiver: authentic, fresh, schema-valid and self-consistent, or a clear refusal."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dsbridge.callback.event import CANCELLED, FAILED, SUCCEEDED, ErrorCode, encode, event_id_for
from dsbridge.callback.signing import new_secret
from dsbridge.client import CallbackEvent, CallbackReceiver, InvalidEvent, PayloadError, SignatureError
from tests.unit.client.events import JOB, REQUEST, SECRET, event, refusal, signed


def test_round_trip_gives_a_typed_frozen_event() -> None:
    sent = event(attempt=1, supersedes=event_id_for(JOB, REQUEST, 0, FAILED), databricks_run_id=7)
    body, headers = signed(sent)

    got = CallbackReceiver([SECRET]).verify(headers, body)

    assert isinstance(got, CallbackEvent)
    assert (got.event_id, got.type, got.job, got.request_id) == (sent["event_id"], SUCCEEDED, JOB, REQUEST)
    assert (got.attempt, got.sequence, got.supersedes) == (1, 2, sent["supersedes"])
    assert got.occurred_at == datetime.fromisoformat(sent["occurred_at"])
    assert got.result == {"threshold": 0.42} and got.result_inline
    assert got.result_location == sent["result_location"]
    assert got.error is None and got.succeeded and not got.is_refusal
    assert got.databricks_run_id == 7
    assert got.links.airflow_run is None
    assert got.payload == json.loads(body)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.sequence = 9  # type: ignore[misc]


def test_failure_event_has_a_typed_error() -> None:
    body, headers = signed(event(FAILED))
    got = CallbackReceiver(SECRET).verify(headers, body)
    assert got.error is not None
    assert (got.error.code, got.error.message, got.error.failed_task) == (ErrorCode.NOTEBOOK_FAILED, "boom", "wait")
    assert got.error.trace == "Traceback…"
    assert not got.succeeded


def test_conflict_refusal_is_recognised() -> None:
    body, headers = signed(refusal())
    got = CallbackReceiver(SECRET).verify(headers, body)
    assert got.is_refusal and got.sequence == 0
    assert got.error is not None and got.error.code == ErrorCode.REQUEST_ID_CONFLICT


def test_header_names_are_case_insensitive() -> None:
    body, headers = signed(event())
    upper = {k.upper(): v for k, v in headers.items()}
    assert CallbackReceiver(SECRET).verify(upper, body).event_id == headers["webhook-id"]


@pytest.mark.parametrize(
    ("receiver_secrets", "sender_secrets"),
    [
        (["old", "new"], ["new"]),  # receiver rotated first
        (["old"], ["old", "new"]),  # sender signs with both while rotating
        (["new"], ["old", "new"]),
    ],
)
def test_rotation(receiver_secrets: list[str], sender_secrets: list[str]) -> None:
    keys = {"old": new_secret(), "new": new_secret()}
    body, headers = signed(event(), secret=[keys[k] for k in sender_secrets])
    receiver = CallbackReceiver([keys[k] for k in receiver_secrets])
    assert receiver.verify(headers, body).type == SUCCEEDED


def test_rotation_to_an_unknown_secret_is_refused() -> None:
    body, headers = signed(event(), secret=new_secret())
    with pytest.raises(SignatureError, match="bad signature"):
        CallbackReceiver([new_secret(), new_secret()]).verify(headers, body)


@pytest.mark.parametrize(("shift", "message"), [(-timedelta(minutes=6), "stale"), (timedelta(minutes=6), "future")])
def test_timestamps_outside_the_tolerance_are_refused(shift: timedelta, message: str) -> None:
    body, headers = signed(event(), timestamp=datetime.now(UTC) + shift)
    with pytest.raises(SignatureError, match=f"{message} timestamp"):
        CallbackReceiver(SECRET).verify(headers, body)


def test_tolerance_is_configurable() -> None:
    body, headers = signed(event(), timestamp=datetime.now(UTC) - timedelta(seconds=60))
    assert CallbackReceiver(SECRET).verify(headers, body)
    with pytest.raises(SignatureError, match="tolerance is 30 s"):
        CallbackReceiver(SECRET, tolerance_seconds=30).verify(headers, body)


def test_tampered_body_is_refused() -> None:
    body, headers = signed(event())
    with pytest.raises(SignatureError, match="bad signature"):
        CallbackReceiver(SECRET).verify(headers, body.replace(b"0.42", b"0.99"))


def test_non_utf8_body_is_refused() -> None:
    body = b'{"event_id": "\xff"}'
    _, headers = signed(b"{}")
    with pytest.raises(SignatureError, match="not UTF-8"):
        CallbackReceiver(SECRET).verify(headers, body)


def test_webhook_id_must_be_the_event_id() -> None:
    sent = event()
    other = event_id_for(JOB, REQUEST, 5, CANCELLED)
    body, headers = signed(sent, webhook_id=other)  # a valid signature over another id
    with pytest.raises(InvalidEvent, match="webhook-id") as caught:
        CallbackReceiver(SECRET).verify(headers, body)
    assert caught.value.field == "event_id"


def _broken(change: str) -> dict[str, Any]:
    sent = event(FAILED)
    if change == "missing":
        del sent["attempt"]
    elif change == "wrong_type":
        sent["sequence"] = "2"
    elif change == "extra":
        sent["priority"] = "high"
    elif change == "bad_event_id":
        sent["event_id"] = "evt-1"
    elif change == "old_version":
        sent["schema_version"] = "1"
    elif change == "unknown_code":
        sent["error"]["code"] = "oops"
    elif change == "missing_code":
        del sent["error"]["code"]
    elif change == "bad_date":
        sent["occurred_at"] = "yesterday"
    return sent


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ("missing", "attempt", "is missing (required)"),
        ("wrong_type", "sequence", "is not of type 'integer'"),
        ("extra", "priority", "unknown field"),
        ("bad_event_id", "event_id", "does not match"),
        ("old_version", "schema_version", "'2' was expected"),
        ("unknown_code", "error.code", "is not one of"),
        ("missing_code", "error.code", "is missing (required)"),
        ("bad_date", "occurred_at", "not an ISO 8601 date-time"),
    ],
)
def test_schema_violations_name_the_field(change: str, field: str, says: str) -> None:
    sent = _broken(change)
    body, headers = signed(encode(sent), webhook_id=sent["event_id"])  # authentic, but broken
    with pytest.raises(InvalidEvent) as caught:
        CallbackReceiver(SECRET).verify(headers, body)
    assert caught.value.field == field
    assert f"field '{field}'" in str(caught.value) and says in str(caught.value)
    assert isinstance(caught.value, PayloadError)  # answer 400, not 401


@pytest.mark.parametrize("body", [b"<xml/>", b"[1, 2]"])
def test_authentic_non_object_is_a_payload_error(body: bytes) -> None:
    _, headers = signed(body)
    with pytest.raises(PayloadError):
        CallbackReceiver(SECRET).verify(headers, body)


def test_no_secret_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="at least one webhook secret"):
        CallbackReceiver([])
