"""Sign and verify callbacks the Standard Webhooks way.

Why this module exists: the optimization service must be able to trust that a callback came from
Airflow, was not altered, and is not an old message replayed. Standard Webhooks
(https://www.standardwebhooks.com) gives exactly that with three headers -- ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` -- and has receiver libraries in many languages, so a
development team needs no dsbridge code to verify our callbacks.

The signing scheme itself comes from the ``standardwebhooks`` library. We add what it leaves out:

* key rotation on the sending side: one signature per secret, space-separated in one header, so a
  receiver holding either the old or the new secret verifies;
* several secrets on the receiving side (accept if any verifies);
* a configurable timestamp tolerance and error messages that say what exactly is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets as _secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The callback is not authentic, or is too old or too new to be trusted."""


class PayloadError(SignatureError):
    """The signature is fine but the body is not a JSON object (a sender bug, not an attack)."""


def new_secret(num_bytes: int = 32) -> str:
    """A fresh random secret in the spec's ``whsec_<base64>`` form."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(num_bytes)).decode("ascii")


def parse_secrets(secrets: str | Sequence[str]) -> list[str]:
    """The secrets as a list, blanks dropped; ``ValueError`` if none is left or one is malformed.

    A single string may hold several comma-separated secrets (as in an environment variable).
    """
    items = secrets.split(",") if isinstance(secrets, str) else list(secrets)
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        raise ValueError("at least one webhook secret is required")
    for secret in items:
        _webhook(secret)
    return items


def _webhook(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except (binascii.Error, ValueError, RuntimeError) as exc:
        raise ValueError(f"invalid webhook secret (expected {SECRET_PREFIX}<base64>)") from exc
    except Exception as exc:  # EmptyWebhookSecretError and friends
        raise ValueError(f"invalid webhook secret: {exc}") from exc


def _body_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError("body is not UTF-8 text, so it cannot be verified") from exc


def sign_headers(
    secrets: str | Sequence[str],
    event_id: str,
    body: bytes,
    timestamp: datetime | None = None,
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed with every secret given.

    Pass ``[old, new]`` while rotating keys: the header then carries ``v1,<sig> v1,<sig>`` and a
    receiver holding either secret accepts the message.
    """
    if not event_id:
        raise ValueError("event_id is required")
    when = timestamp or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # The library formats the timestamp itself; hand it a UTC datetime so both sides agree.
    when = when.astimezone(UTC)
    text = body.decode("utf-8")
    signatures = [_webhook(s).sign(msg_id=event_id, timestamp=when, data=text) for s in parse_secrets(secrets)]
    return {
        HEADER_ID: event_id,
        HEADER_TIMESTAMP: str(int(when.timestamp())),
        HEADER_SIGNATURE: " ".join(signatures),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            if not value:
                break
            return value
    raise SignatureError(f"missing {name} header")


def _check_timestamp(raw: str, tolerance_seconds: int) -> datetime:
    try:
        seconds = int(raw.strip())
        when = datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise SignatureError(f"{HEADER_TIMESTAMP} is not a Unix timestamp in seconds: {raw!r}") from exc
    skew = (datetime.now(UTC) - when).total_seconds()
    if skew > tolerance_seconds:
        raise SignatureError(
            f"stale timestamp: {HEADER_TIMESTAMP} is {int(skew)} s old, tolerance is {tolerance_seconds} s"
        )
    if -skew > tolerance_seconds:
        raise SignatureError(
            f"future timestamp: {HEADER_TIMESTAMP} is {int(-skew)} s ahead, tolerance is {tolerance_seconds} s"
        )
    return when


def _presented_signatures(raw: str) -> list[bytes]:
    """The ``v1`` signatures in the header; other versions are ignored, as the spec says."""
    found = []
    for item in raw.split():
        version, _, sig = item.partition(",")
        if version != "v1" or not sig:
            continue
        try:
            found.append(base64.b64decode(sig, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    secrets: str | Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> dict[str, Any]:
    """The parsed JSON payload if any of ``secrets`` verifies ``body`` and ``headers``.

    Raises :class:`SignatureError` naming the problem (missing header, stale or future timestamp,
    bad signature); its subclass :class:`PayloadError` when the signature verifies but the body is
    not a JSON object. The body is checked exactly as received: verify before parsing or re-encoding.
    """
    webhooks = [_webhook(s) for s in parse_secrets(secrets)]
    msg_id = _header(headers, HEADER_ID)
    raw_timestamp = _header(headers, HEADER_TIMESTAMP)
    presented = _presented_signatures(_header(headers, HEADER_SIGNATURE))
    when = _check_timestamp(raw_timestamp, tolerance_seconds)
    if not presented:
        raise SignatureError(f"{HEADER_SIGNATURE} holds no v1 signature")
    text = _body_text(body)
    for webhook in webhooks:
        # Webhook.sign implements the spec's "id.timestamp.body" HMAC-SHA256; we only compare.
        expected = base64.b64decode(webhook.sign(msg_id=msg_id, timestamp=when, data=text).split(",", 1)[1])
        if any(hmac.compare_digest(expected, sig) for sig in presented):
            try:
                payload = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PayloadError(f"signature is valid but the body is not JSON: {exc}") from exc
            if not isinstance(payload, dict):
                raise PayloadError("signature is valid but the body is not a JSON object")
            return payload
    raise SignatureError("bad signature: no signature matches any configured secret")
