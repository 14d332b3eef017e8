"""A corpus of hostile requests through the REST API: each is refused before anything runs, or
ends in exactly one clean final event. None gets a 5xx, none leaves a run stuck."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import databricks_runs, wait_for_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

JOB = "merchant_threshold"
M = {"merchant_id": "m_1"}

# (name, body) where body is the JSON sent to POST /dagRuns (or raw bytes); dag_run_id is added.
REFUSED: list[tuple[str, Any]] = [
    ("no conf", {"conf": {}}),
    ("only optional params", {"conf": {"target_chargeback_rate": 0.01}}),
    ("merchant_id int", {"conf": {"merchant_id": 123}}),
    ("merchant_id bool", {"conf": {"merchant_id": True}}),
    ("merchant_id null", {"conf": {"merchant_id": None}}),
    ("merchant_id list", {"conf": {"merchant_id": ["m"]}}),
    ("merchant_id object", {"conf": {"merchant_id": {"$ne": ""}}}),
    ("merchant_id float", {"conf": {"merchant_id": 1.5}}),
    ("merchant_id empty", {"conf": {"merchant_id": ""}}),
    ("merchant_id 65 chars", {"conf": {"merchant_id": "a" * 65}}),
    ("merchant_id 1 MB", {"conf": {"merchant_id": "a" * 1_000_000}}),
    ("merchant_id path traversal", {"conf": {"merchant_id": "../../etc/passwd"}}),
    ("merchant_id slash", {"conf": {"merchant_id": "a/b"}}),
    ("merchant_id template", {"conf": {"merchant_id": "{{ 7*7 }}"}}),
    ("merchant_id jinja block", {"conf": {"merchant_id": "{% for x in y %}"}}),
    ("merchant_id accented", {"conf": {"merchant_id": "mérchant"}}),
    ("merchant_id emoji", {"conf": {"merchant_id": "m😀"}}),
    ("merchant_id NUL", {"conf": {"merchant_id": "m\u0000"}}),
    ("merchant_id RTL override", {"conf": {"merchant_id": "m\u202e1"}}),
    ("merchant_id fullwidth", {"conf": {"merchant_id": "\uff4d\uff11"}}),
    ("merchant_id newline", {"conf": {"merchant_id": "m\nx"}}),
    ("merchant_id SQL", {"conf": {"merchant_id": "m'; DROP TABLE dag;--"}}),
    ("rate string", {"conf": {**M, "target_chargeback_rate": "0.01"}}),
    ("rate bool", {"conf": {**M, "target_chargeback_rate": True}}),
    ("rate null", {"conf": {**M, "target_chargeback_rate": None}}),
    ("rate negative", {"conf": {**M, "target_chargeback_rate": -0.01}}),
    ("rate zero", {"conf": {**M, "target_chargeback_rate": 0}}),
    ("rate huge", {"conf": {**M, "target_chargeback_rate": 1e308}}),
    ("rate list", {"conf": {**M, "target_chargeback_rate": [0.01]}}),
    ("days float", {"conf": {**M, "lookback_days": 1.5}}),
    ("days string", {"conf": {**M, "lookback_days": "30"}}),
    ("days zero", {"conf": {**M, "lookback_days": 0}}),
    ("days negative", {"conf": {**M, "lookback_days": -1}}),
    ("days over max", {"conf": {**M, "lookback_days": 366}}),
    ("days 10^30", {"conf": {**M, "lookback_days": 10**30}}),
    ("days bool", {"conf": {**M, "lookback_days": True}}),
    ("orders_path http", {"conf": {**M, "orders_path": "http://169.254.169.254/latest/meta-data"}}),
    ("orders_path local file", {"conf": {**M, "orders_path": "/etc/passwd"}}),
    ("orders_path file url", {"conf": {**M, "orders_path": "file:///etc/passwd"}}),
    ("orders_path template", {"conf": {**M, "orders_path": "s3://bucket/{{ conn }}"}}),
    ("orders_path int", {"conf": {**M, "orders_path": 5}}),
    ("orders_path too long", {"conf": {**M, "orders_path": "s3://bucket/" + "a" * 2000}}),
    ("request_id traversal", {"conf": {**M, "request_id": "../../other-request"}}),
    ("request_id slash", {"conf": {**M, "request_id": "a/b"}}),
    ("request_id template", {"conf": {**M, "request_id": "{{ run_id }}"}}),
    ("request_id 200 chars", {"conf": {**M, "request_id": "r" * 200}}),
    ("request_id int", {"conf": {**M, "request_id": 7}}),
    ("conf is a list", {"conf": ["merchant_id", "m"]}),
    ("conf is a string", {"conf": "merchant_id=m"}),
    ("unknown top-level field", {"conf": M, "callback_url": "http://evil.example/"}),
    ("non-JSON body", b"merchant_id=m_1"),
    ("truncated JSON body", b'{"conf": {"merchant_id": "m_1"'),
]

# Accepted by the REST API (Airflow allows extra conf keys) but must end in one request.failed.
FAILED: list[tuple[str, Any]] = [
    ("extra field", {"conf": {**M, "colour": "blue"}}),
    ("extra template field", {"conf": {**M, "x": "{{ conn.aws_default.password }}"}}),
    ("extra dunder field", {"conf": {**M, "__class__": "os"}}),
    ("callback target in conf", {"conf": {**M, "callback_url": "http://evil.example/"}}),
    ("2000 extra fields", {"conf": {**M, **{f"k{i}": i for i in range(2000)}}}),
]


def post(airflow, body: Any, request_id: str):
    path = f"/api/v2/dags/{JOB}/dagRuns"
    if isinstance(body, bytes):
        return airflow.request("POST", path, content=body, headers={"Content-Type": "application/json"})
    return airflow.request("POST", path, json={"dag_run_id": request_id, "logical_date": None, **body})


def test_corpus_has_at_least_fifty_cases():
    assert len(REFUSED) + len(FAILED) >= 50


@pytest.mark.parametrize(("name", "body"), REFUSED, ids=[name for name, _ in REFUSED])
def test_refused_before_anything_runs(stack, airflow, name, body):
    request_id = f"hostile-{uuid.uuid4().hex[:10]}"
    answer = post(airflow, body, request_id)
    # 400: a value breaks its Param schema; 422: the body is not the documented shape.
    assert answer.status_code in (400, 422), (answer.status_code, answer.text[:300])
    assert airflow.request("GET", f"/api/v2/dags/{JOB}/dagRuns/{request_id}").status_code == 404
    assert databricks_runs(stack, request_id) == []


def test_accepted_hostile_conf_ends_in_one_clean_failure(stack, airflow):
    request_ids = {}
    for name, body in FAILED:
        request_id = f"hostile-{uuid.uuid4().hex[:10]}"
        answer = post(airflow, body, request_id)
        assert answer.status_code == 200, (name, answer.status_code, answer.text[:300])
        request_ids[name] = request_id
    deadline = time.monotonic() + 300
    for name, request_id in request_ids.items():
        run = airflow.wait(JOB, request_id, timeout=max(1.0, deadline - time.monotonic()))
        assert run["state"] == "failed", name
        (event,) = wait_for_events(stack, request_id, timeout=60)
        payload = event["payload"]
        assert payload["type"] == "request.failed", name
        assert "unknown parameter" in payload["error"]["message"], name
        assert payload["error"]["failed_task"] == "submit", name
        assert databricks_runs(stack, request_id) == [], name
