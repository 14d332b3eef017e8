"""End to end, through the Airflow REST API exactly as the optimization service drives it.

Each test counts what matters: callbacks per request (by event id), Databricks runs per request,
and the final state of the DAG run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from jsonschema import Draft202012Validator

from dsbridge.callback.signing import verify
from dsbridge.client import AirflowApiError, AirflowClient
from dsbridge_local.stack.stack import running, up
from tests.e2e.conftest import REPO, databricks_runs, events_for, wait_for_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
EVENT_SCHEMA = json.loads((REPO / "plugins/dsbridge/callback/event.schema.json").read_text())


def local_result(notebook: Path, params: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """The notebook's answer from a local run, to compare with what came through the stack."""
    argv = [sys.executable, "-m", "dsbridge_local.cli.main", "notebook", "run", str(notebook), "--json"]
    for name, value in {**params, "output_path": f"{tmp_path}/"}.items():
        argv += ["--param", f"{name}={value}"]
    outcome = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout)
    assert outcome["status"] == "SUCCESS", outcome
    return dict(json.loads(outcome["result"]))


def s3_object(stack: dict[str, Any], location: str) -> bytes:
    s3 = stack["s3"]
    bucket, key = location.removeprefix("s3://").split("/", 1)
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
        region_name=s3["region"],
    )
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def run_request(airflow: AirflowClient, job: str, conf: dict[str, Any], request_id: str) -> dict[str, Any]:
    airflow.trigger(job, conf, request_id)
    return airflow.wait(job, request_id, timeout=240)


@pytest.mark.parametrize(
    ("job", "notebook"),
    [
        ("merchant_threshold", "merchant_threshold/merchant_threshold.py"),
        pytest.param("merchant_threshold_r", "merchant_threshold_r/merchant_threshold.r", marks=pytest.mark.r),
    ],
)
def test_success_gives_one_exact_signed_callback_and_the_s3_result(stack, airflow, request_id, tmp_path, job, notebook):
    conf = {"merchant_id": "m_1042", "target_chargeback_rate": 0.02, "lookback_days": 14}
    run = run_request(airflow, job, conf, request_id)
    assert run["state"] == "success"
    assert airflow.task_instances(job, request_id) == {
        "submit": "success",
        "wait": "success",
        "collect": "success",
        "notify_success": "success",
        "notify_failure": "skipped",
    }

    (event,) = wait_for_events(stack, request_id)
    assert event["deliveries"] == 1
    payload = verify([stack["service"]["signing_secret"]], event["body"].encode(), event["headers"])
    Draft202012Validator(EVENT_SCHEMA).validate(payload)
    expected_result = local_result(REPO / "notebooks" / notebook, {k: str(v) for k, v in conf.items()}, tmp_path)
    (db_run,) = databricks_runs(stack, request_id)
    location = f"s3://{stack['s3']['bucket']}/runs/{job}/{request_id}/curve.json"
    timings = payload.pop("timings")
    occurred_at = payload.pop("occurred_at")
    assert payload == {
        "schema_version": "2",
        "event_id": event["event_id"],
        "type": "request.succeeded",
        "job": job,
        "request_id": request_id,
        "attempt": 0,
        "sequence": 1,
        "supersedes": None,
        "result": expected_result,
        "result_inline": True,
        "result_location": location,
        "error": None,
        "links": {
            "airflow_run": f"{stack['airflow']['url']}/dags/{job}/runs/{request_id}",
            "databricks_run": db_run["run_page_url"],
        },
        "databricks_run_id": db_run["run_id"],
    }
    assert event["headers"]["webhook-id"] == event["event_id"]
    assert timings["notebook_seconds"] > 0 and timings["requested_at"] < occurred_at
    curve = json.loads(s3_object(stack, location))
    assert curve["merchant_id"] == "m_1042" and len(curve["points"]) == 101


def test_notebook_error_gives_one_failure_callback_with_its_message(stack, airflow, request_id):
    conf = {"merchant_id": "m_7", "orders_path": f"s3://{stack['s3']['bucket']}/nowhere/orders.csv"}
    run = run_request(airflow, "merchant_threshold", conf, request_id)
    assert run["state"] == "failed"
    states = airflow.task_instances("merchant_threshold", request_id)
    assert states["wait"] == "failed" and states["notify_failure"] == "success"
    assert states["notify_success"] == "upstream_failed"

    (event,) = wait_for_events(stack, request_id)
    payload = event["payload"]
    assert payload["type"] == "request.failed"
    assert payload["error"]["failed_task"] == "wait" and payload["error"]["code"] == "notebook_failed"
    assert "nowhere/orders.csv" in payload["error"]["message"]
    assert "Traceback" in payload["error"]["trace"]
    assert payload["result_location"] is None
    assert len(databricks_runs(stack, request_id)) == 1


@pytest.mark.parametrize(
    ("conf", "detail"),
    [
        ({}, "merchant_id"),
        ({"merchant_id": "has spaces"}, "does not match"),
        ({"merchant_id": "m", "target_chargeback_rate": 5}, "maximum"),
        ({"merchant_id": "m", "lookback_days": "thirty"}, "is not of type"),
        ({"merchant_id": "m", "request_id": "../../escape"}, "does not match"),
    ],
)
def test_invalid_conf_is_answered_400_and_nothing_runs(stack, airflow, request_id, conf, detail):
    with pytest.raises(AirflowApiError) as refused:
        airflow.trigger("merchant_threshold", conf, request_id)
    assert refused.value.status == 400
    assert detail in str(refused.value.detail)
    with pytest.raises(AirflowApiError) as missing:
        airflow.run("merchant_threshold", request_id)
    assert missing.value.status == 404
    assert databricks_runs(stack, request_id) == []


def test_repeated_request_id_is_409_and_starts_no_second_run(stack, airflow, request_id):
    conf = {"merchant_id": "m_2"}
    airflow.trigger("merchant_threshold", conf, request_id)
    with pytest.raises(AirflowApiError) as conflict:
        airflow.trigger("merchant_threshold", conf, request_id)
    assert conflict.value.status == 409
    assert airflow.wait("merchant_threshold", request_id, timeout=240)["state"] == "success"
    assert len(databricks_runs(stack, request_id)) == 1
    assert len(wait_for_events(stack, request_id)) == 1


def test_unauthenticated_trigger_is_refused(stack, request_id):
    anonymous = AirflowClient(stack["airflow"]["url"], "nobody", "wrong")
    with pytest.raises(AirflowApiError) as refused:
        anonymous.trigger("merchant_threshold", {"merchant_id": "m"}, request_id)
    assert refused.value.status in (401, 403)
    assert events_for(stack, request_id) == []


def test_second_up_starts_no_twins(stack_config, stack):
    said: list[str] = []
    assert up(stack_config, progress=said.append) == stack
    assert len(said) == 1 and "already up" in said[0]
    assert set(running(stack_config)) == {
        "s3",
        "emulator",
        "service",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "reconciler",
        *stack_config.celery_workers,
    }


def test_request_id_reused_with_other_parameters_is_refused_and_touches_nothing(stack, airflow, request_id):
    """Two DAG runs name the same request (`conf.request_id`) with different parameters."""
    first, second = f"{request_id}-a", f"{request_id}-b"
    airflow.trigger("merchant_threshold", {"merchant_id": "m_first", "request_id": request_id}, first)
    assert airflow.wait("merchant_threshold", first, timeout=240)["state"] == "success"
    airflow.trigger("merchant_threshold", {"merchant_id": "m_second", "request_id": request_id}, second)
    assert airflow.wait("merchant_threshold", second, timeout=240)["state"] == "failed"

    events = {e["payload"]["sequence"]: e for e in wait_for_events(stack, request_id)}
    assert sorted(events) == [0, 1]
    refusal, answer = events[0]["payload"], events[1]["payload"]
    assert refusal["type"] == "request.failed" and refusal["error"]["code"] == "request_id_conflict"
    assert refusal["links"]["airflow_run"].endswith(f"/runs/{second}")
    assert answer["type"] == "request.succeeded" and answer["result"]["merchant_id"] == "m_first"
    assert events[0]["deliveries"] == events[1]["deliveries"] == 1
    assert len(databricks_runs(stack, request_id)) == 1
    curve = json.loads(s3_object(stack, answer["result_location"]))
    assert curve["merchant_id"] == "m_first"  # the first request's output is untouched


def test_request_id_reused_with_the_same_parameters_is_the_same_request(stack, airflow, request_id):
    first, second = f"{request_id}-a", f"{request_id}-b"
    conf = {"merchant_id": "m_same", "request_id": request_id}
    airflow.trigger("merchant_threshold", conf, first)
    assert airflow.wait("merchant_threshold", first, timeout=240)["state"] == "success"
    airflow.trigger("merchant_threshold", conf, second)
    assert airflow.wait("merchant_threshold", second, timeout=240)["state"] == "success"
    assert airflow.task_instances("merchant_threshold", second)["submit"] == "skipped"

    (event,) = wait_for_events(stack, request_id)
    assert event["deliveries"] == 1 and event["payload"]["links"]["airflow_run"].endswith(f"/runs/{first}")
    assert len(databricks_runs(stack, request_id)) == 1
