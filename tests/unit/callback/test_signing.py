"""Callback signing: what a receiver accepts and, above all, what it refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from dsbridge.callback.signing import (
    PayloadError,
    SignatureError,
    new_secret,
    parse_secrets,
    sign_headers,
    verify,
)

BODY = json.dumps({"event_id": "evt-1", "type": "request.succeeded", "result": {"x": 1}}).encode()


def test_new_secret_has_spec_form() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert secret != new_secret()


def test_round_trip() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert verify(secret, BODY, headers) == json.loads(BODY)


def test_interoperates_with_the_reference_library() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_header_lookup_is_case_insensitive() -> None:
    secret = new_secret()
    headers = {k.upper(): v for k, v in sign_headers(secret, "evt-1", BODY).items()}
    assert verify(secret, BODY, headers)["event_id"] == "evt-1"


def test_tampered_body_rejected() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(secret, BODY.replace(b'"x": 1', b'"x": 2'), headers)


def test_tampered_id_rejected() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY) | {"webhook-id": "evt-2"}
    with pytest.raises(SignatureError, match="bad signature"):
        verify(secret, BODY, headers)


def test_wrong_secret_rejected() -> None:
    headers = sign_headers(new_secret(), "evt-1", BODY)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(new_secret(), BODY, headers)


def test_stale_timestamp_rejected() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY, timestamp=datetime.now(UTC) - timedelta(seconds=400))
    with pytest.raises(SignatureError, match="stale timestamp"):
        verify(secret, BODY, headers, tolerance_seconds=300)


def test_future_timestamp_rejected() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY, timestamp=datetime.now(UTC) + timedelta(seconds=400))
    with pytest.raises(SignatureError, match="future timestamp"):
        verify(secret, BODY, headers, tolerance_seconds=300)


def test_tolerance_is_configurable() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY, timestamp=datetime.now(UTC) - timedelta(seconds=400))
    assert verify(secret, BODY, headers, tolerance_seconds=600)["event_id"] == "evt-1"


def test_naive_timestamp_is_taken_as_utc() -> None:
    secret = new_secret()
    naive = datetime.now(UTC).replace(tzinfo=None)
    headers = sign_headers(secret, "evt-1", BODY, timestamp=naive)
    assert verify(secret, BODY, headers)["event_id"] == "evt-1"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_rejected(missing: str) -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY)
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing} header"):
        verify(secret, BODY, headers)


@pytest.mark.parametrize("value", ["", "v1", "v2,abc", "v1,!!!not-base64!!!", "garbage"])
def test_malformed_signature_rejected(value: str) -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY) | {"webhook-signature": value}
    with pytest.raises(SignatureError):
        verify(secret, BODY, headers)


def test_non_numeric_timestamp_rejected() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "evt-1", BODY) | {"webhook-timestamp": "yesterday"}
    with pytest.raises(SignatureError, match="Unix timestamp"):
        verify(secret, BODY, headers)


def test_signed_non_json_is_a_payload_error() -> None:
    secret = new_secret()
    body = b"not json"
    with pytest.raises(PayloadError, match="not JSON"):
        verify(secret, body, sign_headers(secret, "evt-1", body))


def test_rotation_both_signatures_each_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = sign_headers([old, new], "evt-1", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(old, BODY, headers)["event_id"] == "evt-1"
    assert verify(new, BODY, headers)["event_id"] == "evt-1"
    with pytest.raises(SignatureError):
        verify(new_secret(), BODY, headers)


def test_rotation_receiver_holding_old_and_new() -> None:
    old, new = new_secret(), new_secret()
    assert verify([old, new], BODY, sign_headers(new, "evt-1", BODY))["event_id"] == "evt-1"
    assert verify([old, new], BODY, sign_headers(old, "evt-1", BODY))["event_id"] == "evt-1"


def test_no_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        sign_headers([], "evt-1", BODY)
    with pytest.raises(ValueError):
        verify([" "], BODY, {})


def test_parse_secrets_accepts_comma_separated_and_rejects_malformed() -> None:
    old, new = new_secret(), new_secret()
    assert parse_secrets(f" {old} , {new} ,") == [old, new]
    assert parse_secrets([old, "", new]) == [old, new]
    with pytest.raises(ValueError, match="invalid webhook secret"):
        parse_secrets("x")
    with pytest.raises(ValueError, match="empty"):
        parse_secrets("whsec_")
