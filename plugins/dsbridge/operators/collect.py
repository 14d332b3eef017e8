"""Collect a finished notebook's output and check it against the job's output contract.

Nobody is told "success" before this passes: the exit value (`runs/get-output` of the task run)
and/or the result file under the request's S3 output path must exist, parse and match their JSON
Schemas, within size limits. The result always ends with an S3 location (an exit-value-only job's
value is stored as `exit_value.json`), and is inlined in the callback when it is small.

A result file is read with a bounded, streaming read: never more than its limit (the contract's
`max_bytes`, capped by `DSBRIDGE_COLLECT_MAX_BYTES`) is held in memory, and a larger file is refused
before anything is parsed. S3 or Databricks being unreachable is retried for the collect horizon
(`DSBRIDGE_COLLECT_HORIZON_MINUTES`): the output is safe where it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.providers.databricks.hooks.databricks import DatabricksHook
from airflow.sdk import BaseOperator
from jsonschema import Draft202012Validator

from dsbridge.callback.event import ErrorCode
from dsbridge.contract import JobContract, OutputContract
from dsbridge.outcome import fail_request, failing_request_on_error
from dsbridge.s3 import DsbridgeS3Hook
from dsbridge.settings import AWS_CONN_ID, DATABRICKS_CONN_ID, load_settings, parse_s3_uri

EXIT_VALUE_FILE = "exit_value.json"


class OutputInvalid(ValueError):
    """The notebook's output breaks its contract; the message says how."""


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OutputInvalid(f"{what} is not valid JSON ({exc}); the notebook must write JSON") from None


def check_schema(value: Any, schema: dict[str, Any] | None, what: str, most: int = 5) -> None:
    """Raise `OutputInvalid` naming where (and how) `value` breaks `schema`, up to `most` problems."""
    if schema is None:
        return
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        problems = "; ".join(
            f"at {'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message[:300]}" for e in errors[:most]
        )
        more = f" (and {len(errors) - most} more)" if len(errors) > most else ""
        raise OutputInvalid(f"{what} breaks the output contract {problems}{more}")


def check_exit_value(output: dict[str, Any], contract: OutputContract) -> Any:
    """The parsed exit value from a `runs/get-output` answer, or `OutputInvalid`."""
    notebook_output = output.get("notebook_output") or {}
    if notebook_output.get("truncated"):
        raise OutputInvalid(
            "the exit value is larger than Databricks keeps (5 MB) and was truncated; "
            "write large results to a file under output_path instead"
        )
    text = notebook_output.get("result")
    if text is None:
        raise OutputInvalid("the notebook gave no exit value; it must end with dbutils.notebook.exit(json)")
    value = parse_json(text, "the exit value")
    check_schema(value, contract.exit_value_schema, "the exit value")
    return value


def result_file_limit(contract: OutputContract) -> int:
    """The most bytes of a result file that collect reads: the contract's limit, capped by the deployment's."""
    return min(contract.result_max_bytes, load_settings().collect_max_bytes)


def too_large(size: int, contract: OutputContract) -> OutputInvalid:
    limit = result_file_limit(contract)
    if limit < contract.result_max_bytes:
        return OutputInvalid(
            f"the result file is {size} bytes; collect checks at most {limit} bytes in memory "
            "(DSBRIDGE_COLLECT_MAX_BYTES); raise that setting or write a smaller file"
        )
    return OutputInvalid(f"the result file is {size} bytes, over its limit of {limit}")


def read_bounded(body: Any, limit: int, contract: OutputContract) -> bytes:
    """Read a streaming body, refusing it as soon as it passes `limit` bytes."""
    data = bytearray()
    while chunk := body.read(min(1024 * 1024, limit + 1 - len(data))):
        data += chunk
        if len(data) > limit:
            raise too_large(len(data), contract)
    return bytes(data)


def check_result_file(body: bytes, contract: OutputContract) -> Any:
    if len(body) > result_file_limit(contract):
        raise too_large(len(body), contract)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OutputInvalid("the result file is not UTF-8 JSON text") from None
    value = parse_json(text, "the result file")
    check_schema(value, contract.result_file_schema, "the result file")
    return value


def inline_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


class CollectNotebookOutputOperator(BaseOperator):
    """Read, check and summarise the output of the run that `wait` saw succeed."""

    template_fields: Sequence[str] = ("databricks_conn_id", "aws_conn_id")

    def __init__(
        self,
        *,
        contract: JobContract,
        databricks_conn_id: str = DATABRICKS_CONN_ID,
        aws_conn_id: str = AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.contract = contract
        self.databricks_conn_id = databricks_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def databricks_hook(self) -> DatabricksHook:
        return DatabricksHook(self.databricks_conn_id, caller=type(self).__name__)

    @cached_property
    def s3_hook(self) -> DsbridgeS3Hook:
        return DsbridgeS3Hook(aws_conn_id=self.aws_conn_id, caller=type(self).__name__)

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        run = ti.xcom_pull(task_ids="wait")
        request = ti.xcom_pull(task_ids="submit", key="request")
        output_path: str = request["output_path"]
        contract = self.contract.output
        # Databricks or S3 trouble is retried within the collect horizon; a broken output is final.
        with failing_request_on_error(context, "could not read the output", code=ErrorCode.OUTPUT_UNREADABLE):
            try:
                value, location = self._collect(run, output_path, contract)
            except OutputInvalid as exc:
                fail_request(context, f"output rejected: {exc}", code=ErrorCode.OUTPUT_INVALID)
        size = inline_size(value)
        inline = size <= contract.inline_max_bytes
        self.log.info("Output of %s is valid (%d bytes, inline=%s) at %s", run["run_id"], size, inline, location)
        return {
            "result": value if inline else None,
            "result_inline": inline,
            "result_location": location,
            "result_bytes": size,
        }

    def _collect(self, run: dict[str, Any], output_path: str, contract: OutputContract) -> tuple[Any, str]:
        value: Any = None
        if contract.exit_value_schema is not None or contract.result_file is None:
            task_run_id = run["tasks"][0]["run_id"] if run.get("tasks") else run["run_id"]
            value = check_exit_value(self.databricks_hook.get_run_output(task_run_id), contract)
        if contract.result_file is not None:
            location = output_path + contract.result_file
            bucket, key = parse_s3_uri(location)
            if not self.s3_hook.check_for_key(key, bucket_name=bucket):
                raise OutputInvalid(f"the result file {location} is missing; the notebook must write it")
            size = self.s3_hook.head_object(key, bucket_name=bucket)["ContentLength"]
            limit = result_file_limit(contract)
            if size > limit:
                raise too_large(size, contract)
            body = read_bounded(self.s3_hook.get_key(key, bucket).get()["Body"], limit, contract)
            file_value = check_result_file(body, contract)
            return (value if contract.exit_value_schema is not None else file_value), location
        # Exit value only: keep it under the output path too, so every result has a location.
        location = output_path + EXIT_VALUE_FILE
        bucket, key = parse_s3_uri(location)
        self.s3_hook.load_bytes(json.dumps(value).encode(), key, bucket_name=bucket, replace=True)
        return value, location
