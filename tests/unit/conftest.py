"""Shared fakes for operator unit tests: a task context without a running Airflow."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.api.datamodels._generated import DagRunState
from botocore.exceptions import ClientError

from dsbridge.contract import JobContract, load_contract

REPO = Path(__file__).resolve().parents[2]


class FakeTaskStateStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def s3_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class FakeS3:
    """The boto3 S3 calls dsbridge makes, in memory, with S3's semantics for them:
    `IfNoneMatch="*"` refuses an existing key with 412, listings are sorted and paged."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.down = False

    def _check(self, operation: str) -> None:
        if self.down:
            raise s3_error("ServiceUnavailable", 503, operation)

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str | None = None, **_: Any) -> dict:
        self._check("PutObject")
        if IfNoneMatch == "*" and (Bucket, Key) in self.objects:
            raise s3_error("PreconditionFailed", 412, "PutObject")
        self.objects[Bucket, Key] = Body if isinstance(Body, bytes) else Body.encode()
        return {}

    def get_object(self, *, Bucket: str, Key: str) -> dict:
        self._check("GetObject")
        if (Bucket, Key) not in self.objects:
            raise s3_error("NoSuchKey", 404, "GetObject")
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def list_objects_v2(
        self, *, Bucket: str, Prefix: str, MaxKeys: int = 1000, ContinuationToken: str | None = None
    ) -> dict:
        self._check("ListObjectsV2")
        keys = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        start = int(ContinuationToken or 0)
        page = keys[start : start + MaxKeys]
        answer: dict[str, Any] = {"Contents": [{"Key": k} for k in page]}
        if start + MaxKeys < len(keys):
            answer["NextContinuationToken"] = str(start + MaxKeys)
        return answer

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for _, k in self.objects if k.startswith(prefix))


@pytest.fixture
def fake_s3() -> Any:
    """Every S3Hook's client is this in-memory S3 for the test."""
    s3 = FakeS3()
    with mock.patch("airflow.providers.amazon.aws.hooks.s3.S3Hook.get_conn", return_value=s3):
        yield s3


class FakeTI:
    """Records pushes; answers pulls from a {(task_id, key): value} table."""

    def __init__(self, task_id: str, pulls: dict[tuple[str, str], Any] | None = None) -> None:
        self.task_id = task_id
        self.dag_id = "merchant_threshold"
        self.try_number = 1
        self.stats_tags: dict[str, str] = {}
        self.dagrun_states: dict[tuple[str, str], str] = {}
        self.run_id = "req-42"
        self.pulls = dict(pulls or {})
        self.pushed: dict[str, Any] = {}

    def get_dagrun_state(self, dag_id: str, run_id: str) -> DagRunState:
        """As the Task SDK answers: the enum, not its string."""
        return DagRunState(self.dagrun_states.get((dag_id, run_id), "running"))

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", **run: Any) -> Any:
        """Pulls from another DAG run (`dag_id=`, `run_id=`) are looked up under those too."""
        if run:
            return self.pulls.get((run.get("dag_id"), run.get("run_id"), task_ids, key))
        return self.pulls.get((task_ids, key))


@pytest.fixture
def contract() -> JobContract:
    return load_contract(REPO / "notebooks" / "merchant_threshold" / "job.yaml")


def make_context(
    task_id: str,
    *,
    run_id: str = "req-42",
    conf: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    pulls: dict[tuple[str, str], Any] | None = None,
    clear_number: int = 0,
) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        dag_id="merchant_threshold",
        run_id=run_id,
        conf=conf or {},
        clear_number=clear_number,
        start_date=None,
    )
    ti = FakeTI(task_id, pulls)
    ti.run_id = run_id
    return {
        "ti": ti,
        "dag_run": dag_run,
        "params": params or {},
        "task_state_store": FakeTaskStateStore(),
        "run_id": run_id,
    }


@pytest.fixture
def context_factory():
    return make_context


@pytest.fixture
def no_settings_env(monkeypatch):
    for name in ("DSBRIDGE_RESULTS_BUCKET", "DSBRIDGE_RESULTS_PREFIX", "DSBRIDGE_WORKSPACE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return mock
