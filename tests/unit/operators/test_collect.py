"""`collect` accepts output that keeps the contract and rejects the rest with a clear message."""

from __future__ import annotations

import dataclasses
import io
import json
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from dsbridge.operators.collect import CollectNotebookOutputOperator
from dsbridge.retry import Transient

OUTPUT_PATH = "s3://results/runs/merchant_threshold/req-42/"
RUN = {"run_id": 77, "run_page_url": "http://db/77", "tasks": [{"run_id": 78, "task_key": "t", "state": {}}]}
GOOD_EXIT = {
    "merchant_id": "m",
    "threshold": 0.4,
    "approval_rate": 0.9,
    "chargeback_rate": 0.01,
    "orders": 1200,
}
GOOD_CURVE = {
    "merchant_id": "m",
    "points": [{"threshold": 0.1, "approval_rate": 0.5, "chargeback_rate": 0.0}],
}


def pulls() -> dict:
    return {
        ("wait", "return_value"): RUN,
        ("submit", "request"): {"output_path": OUTPUT_PATH, "request_id": "req-42"},
    }


def run_collect(contract, context_factory, *, exit_value, curve=GOOD_CURVE, truncated=False, size=None):
    operator = CollectNotebookOutputOperator(task_id="collect", contract=contract)
    context = context_factory("collect", pulls=pulls())
    body = curve if isinstance(curve, bytes) else json.dumps(curve).encode()
    with (
        mock.patch("dsbridge.operators.collect.DatabricksHook") as db_cls,
        mock.patch("dsbridge.operators.collect.DsbridgeS3Hook") as s3_cls,
    ):
        db_cls.return_value.get_run_output.return_value = {
            "notebook_output": {"result": exit_value, "truncated": truncated}
        }
        s3 = s3_cls.return_value
        s3.check_for_key.return_value = curve is not None
        s3.head_object.return_value = {"ContentLength": size if size is not None else len(body)}
        s3.get_key.return_value.get.return_value = {"Body": io.BytesIO(body)}
        result = operator.execute(context)
    return result, context, db_cls.return_value, s3


def test_valid_output_is_summarised(contract, context_factory):
    result, _, db, s3 = run_collect(contract, context_factory, exit_value=json.dumps(GOOD_EXIT))
    db.get_run_output.assert_called_once_with(78)
    s3.check_for_key.assert_called_once_with("runs/merchant_threshold/req-42/curve.json", bucket_name="results")
    assert result == {
        "result": GOOD_EXIT,
        "result_inline": True,
        "result_location": OUTPUT_PATH + "curve.json",
        "result_bytes": len(json.dumps(GOOD_EXIT, separators=(",", ":"))),
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exit_value": "not json"}, "the exit value is not valid JSON"),
        ({"exit_value": None}, "gave no exit value"),
        (
            {"exit_value": json.dumps({**GOOD_EXIT, "threshold": 7})},
            "at threshold: 7 is greater than the maximum of 1",
        ),
        ({"exit_value": json.dumps({"merchant_id": "m"})}, "'threshold' is a required property"),
        ({"exit_value": json.dumps(GOOD_EXIT), "truncated": True}, "truncated"),
        ({"exit_value": json.dumps(GOOD_EXIT), "curve": None}, "curve.json is missing"),
        (
            {"exit_value": json.dumps(GOOD_EXIT), "curve": {"points": []}},
            "'merchant_id' is a required property",
        ),
        ({"exit_value": json.dumps(GOOD_EXIT), "curve": b"\xff\xfe"}, "not UTF-8"),
        ({"exit_value": json.dumps(GOOD_EXIT), "size": 2 * 1024 * 1024}, "over its limit of 1048576"),
    ],
)
def test_invalid_output_fails_with_a_clear_message(contract, context_factory, kwargs, message):
    with pytest.raises(AirflowFailException, match="output rejected") as caught:
        run_collect(contract, context_factory, **kwargs)
    assert message in str(caught.value)


def test_failure_is_recorded_for_the_callback(contract, context_factory):
    operator = CollectNotebookOutputOperator(task_id="collect", contract=contract)
    context = context_factory("collect", pulls=pulls())
    with (
        mock.patch("dsbridge.operators.collect.DatabricksHook") as db_cls,
        pytest.raises(AirflowFailException),
    ):
        db_cls.return_value.get_run_output.return_value = {"notebook_output": {"result": "[]"}}
        operator.execute(context)
    recorded = context["ti"].pushed["dsbridge_error"]
    assert recorded["failed_task"] == "collect" and recorded["type"] == "request.failed"


class CountingBody(io.BytesIO):
    """A streaming body that remembers how many bytes were asked of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.served = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.served += len(chunk)
        return chunk


def test_a_file_that_grew_after_head_is_refused_without_reading_it_all(contract, context_factory):
    """HEAD said small, the object is huge: the read stops one byte past the limit, before parsing."""
    operator = CollectNotebookOutputOperator(task_id="collect", contract=contract)
    context = context_factory("collect", pulls=pulls())
    huge = CountingBody(b"[" + b"1," * (3 * 1024 * 1024) + b"1]")
    with (
        mock.patch("dsbridge.operators.collect.DatabricksHook") as db_cls,
        mock.patch("dsbridge.operators.collect.DsbridgeS3Hook") as s3_cls,
        pytest.raises(AirflowFailException, match="over its limit of 1048576"),
    ):
        db_cls.return_value.get_run_output.return_value = {"notebook_output": {"result": json.dumps(GOOD_EXIT)}}
        s3_cls.return_value.head_object.return_value = {"ContentLength": 10}
        s3_cls.return_value.get_key.return_value.get.return_value = {"Body": huge}
        operator.execute(context)
    assert huge.served == contract.output.result_max_bytes + 1
    assert context["ti"].pushed["dsbridge_error"]["code"] == "output_invalid"


def test_the_deployment_cap_bounds_memory_below_the_contract_limit(contract, context_factory, monkeypatch):
    monkeypatch.setenv("DSBRIDGE_COLLECT_MAX_BYTES", "1000")
    with pytest.raises(AirflowFailException, match="DSBRIDGE_COLLECT_MAX_BYTES") as caught:
        run_collect(contract, context_factory, exit_value=json.dumps(GOOD_EXIT), size=5000)
    assert "collect checks at most 1000 bytes" in str(caught.value)


def test_unreachable_s3_is_retryable(contract, context_factory):
    operator = CollectNotebookOutputOperator(task_id="collect", contract=contract)
    context = context_factory("collect", pulls=pulls())
    with (
        mock.patch("dsbridge.operators.collect.DatabricksHook") as db_cls,
        mock.patch("dsbridge.operators.collect.DsbridgeS3Hook") as s3_cls,
        pytest.raises(Transient, match="could not read the output: connection refused"),
    ):
        db_cls.return_value.get_run_output.return_value = {"notebook_output": {"result": json.dumps(GOOD_EXIT)}}
        s3_cls.return_value.check_for_key.side_effect = ConnectionError("connection refused")
        operator.execute(context)
    assert context["ti"].pushed["dsbridge_error"]["code"] == "output_unreadable"


def test_a_permanent_s3_error_is_not_retried_for_the_horizon(contract, context_factory):
    """Access denied will not heal by waiting: the task fails (after its few ordinary retries)."""
    from botocore.exceptions import ClientError

    operator = CollectNotebookOutputOperator(task_id="collect", contract=contract)
    context = context_factory("collect", pulls=pulls())
    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadObject")
    with (
        mock.patch("dsbridge.operators.collect.DatabricksHook") as db_cls,
        mock.patch("dsbridge.operators.collect.DsbridgeS3Hook") as s3_cls,
        pytest.raises(Exception, match="could not read the output") as caught,
    ):
        db_cls.return_value.get_run_output.return_value = {"notebook_output": {"result": json.dumps(GOOD_EXIT)}}
        s3_cls.return_value.check_for_key.side_effect = denied
        operator.execute(context)
    assert not isinstance(caught.value, Transient)


def test_exit_value_only_job_stores_value_and_inlines_small_ones(contract, context_factory):
    exit_only = dataclasses.replace(
        contract, output=dataclasses.replace(contract.output, result_file=None, inline_max_bytes=10)
    )
    result, _, _, s3 = run_collect(exit_only, context_factory, exit_value=json.dumps(GOOD_EXIT))
    s3.load_bytes.assert_called_once()
    stored, key = s3.load_bytes.call_args.args[:2]
    assert json.loads(stored) == GOOD_EXIT
    assert key == "runs/merchant_threshold/req-42/exit_value.json"
    assert result["result_location"] == OUTPUT_PATH + "exit_value.json"
    assert result["result_inline"] is False and result["result"] is None
