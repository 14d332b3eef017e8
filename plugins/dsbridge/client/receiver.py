"""Receive a dsbridge callback: check the signature, then the contract, then hand back a typed event.

Why: verifying a Standard Webhooks signature is not the whole job. A receiver must also refuse a
body that breaks `event.schema.json` (naming the field, so the sender can be fixed) and a
`webhook-id` that is not the event's own id, before it deduplicates or orders anything by those
fields. `CallbackReceiver.verify` does all three and returns a frozen `CallbackEvent`; store it with
`dsbridge.client.store.RequestStore`.

Errors: `SignatureError` (answer 401: not authentic, or too old or too new) and its subclass
`PayloadError` (answer 400: authentic, but not a valid event); `InvalidEvent` is the `PayloadError`
that names the broken field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from dsbridge.callback.event import CONFLICT_SEQUENCE, SUCCEEDED, EventType
from dsbridge.callback.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    HEADER_ID,
    PayloadError,
    parse_secrets,
    verify,
)


class InvalidEvent(PayloadError):
    """The body is authentic but breaks the event contract; `field` names where (dotted path)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid event: field '{field}' {reason}")


@dataclass(frozen=True)
class EventError:
    """Why a request failed or was cancelled: `code` for machines, `message` for people."""

    code: str
    message: str
    trace: str | None = None
    failed_task: str | None = None
    databricks_state: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EventLinks:
    """Where a person looks next: the Airflow run and the Databricks run."""

    airflow_run: str | None
    databricks_run: str | None


@dataclass(frozen=True)
class CallbackEvent:
    """One verified, schema-valid callback event. `payload` is the parsed body as sent."""

    event_id: str
    type: EventType
    job: str
    request_id: str
    attempt: int
    sequence: int
    supersedes: str | None
    occurred_at: datetime
    result: Any
    result_inline: bool
    result_location: str | None
    error: EventError | None
    links: EventLinks
    databricks_run_id: int | None
    timings: Mapping[str, Any]
    payload: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_refusal(self) -> bool:
        """Sequence 0: the refusal of a DAG run that reused the request id with other parameters.

        It tells the caller that run was not accepted; it is not an outcome of the request itself.
        """
        return self.sequence == CONFLICT_SEQUENCE

    @property
    def succeeded(self) -> bool:
        return self.type == SUCCEEDED


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(resources.files("dsbridge.callback").joinpath("event.schema.json").read_text("utf-8"))
    return Draft202012Validator(schema)


def _path(parts: Sequence[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(the event)"


def _explain(error: ValidationError) -> InvalidEvent:
    """Turn a jsonschema error into one that names the field a person has to fix."""
    where = list(error.absolute_path)
    instance, schema = error.instance, error.schema
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        return InvalidEvent(_path([*where, missing[0]]), "is missing (required)")
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(schema.get("properties", {})) if isinstance(schema, dict) else set()
        extra = sorted(name for name in instance if name not in known)
        return InvalidEvent(_path([*where, extra[0]]), "is not part of the event (unknown field)")
    return InvalidEvent(_path(where), f"is invalid: {error.message}")


def _first_error(payload: Mapping[str, Any]) -> ValidationError | None:
    """The most relevant schema error, deterministically (by field path, then message)."""
    errors = sorted(_validator().iter_errors(payload), key=lambda e: ([str(p) for p in e.absolute_path], e.message))
    return errors[0] if errors else None


def parse_event(payload: Mapping[str, Any]) -> CallbackEvent:
    """A `CallbackEvent` from a parsed body, or `InvalidEvent` naming the first broken field.

    No signature check: use `CallbackReceiver.verify` for anything that came over the network.
    """
    error = _first_error(payload)
    if error is not None:
        raise _explain(error)
    try:
        occurred_at = datetime.fromisoformat(payload["occurred_at"])
    except ValueError as exc:
        raise InvalidEvent("occurred_at", f"is not an ISO 8601 date-time: {payload['occurred_at']!r}") from exc
    raw_error = payload["error"]
    return CallbackEvent(
        event_id=payload["event_id"],
        type=payload["type"],
        job=payload["job"],
        request_id=payload["request_id"],
        attempt=payload["attempt"],
        sequence=payload["sequence"],
        supersedes=payload["supersedes"],
        occurred_at=occurred_at,
        result=payload["result"],
        result_inline=payload["result_inline"],
        result_location=payload["result_location"],
        error=None
        if raw_error is None
        else EventError(
            code=raw_error["code"],
            message=raw_error["message"],
            trace=raw_error.get("trace"),
            failed_task=raw_error.get("failed_task"),
            databricks_state=raw_error.get("databricks_state"),
        ),
        links=EventLinks(payload["links"]["airflow_run"], payload["links"]["databricks_run"]),
        databricks_run_id=payload.get("databricks_run_id"),
        timings=payload["timings"],
        payload=payload,
    )


class CallbackReceiver:
    """Verifies callbacks with any of `secrets` (several while rotating) within `tolerance_seconds`.

    Call `verify` with the headers and the body *exactly as received* (bytes, before any parsing).
    """

    def __init__(self, secrets: str | Sequence[str], tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS) -> None:
        self.secrets = parse_secrets(secrets)
        self.tolerance_seconds = tolerance_seconds

    def verify(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """The event, once its signature, its timestamp, its schema and its id all hold.

        Raises `SignatureError` (401), `PayloadError` or `InvalidEvent` (400).
        """
        payload = verify(self.secrets, body, headers, tolerance_seconds=self.tolerance_seconds)
        event = parse_event(payload)
        webhook_id = next(v for k, v in headers.items() if k.lower() == HEADER_ID)
        if webhook_id != event.event_id:
            raise InvalidEvent("event_id", f"is {event.event_id!r} but {HEADER_ID} is {webhook_id!r}; they must match")
        return event
