"""Local Spark in emulated notebooks (the kit's spark extra, which `make test` installs): a notebook
reads a CSV from S3 with Spark, aggregates it in a %sql cell with a widget in the query, writes the
result back to S3 and exits JSON -- through the databricks-sdk, against a real S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import jobs

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import start_background
from dsbridge_local.stack.s3 import SeaweedS3
from dsbridge_local.stack.s3 import client as s3_client
from tests.emulator.conftest import TOKEN, sdk_finished

FIDELITY = Path(__file__).resolve().parent / "fidelity"
KEY, SECRET = "spark-test", "spark-test-secret-0123456789"
CSV = "merchant,amount\nm_1,10.5\nm_2,99\nm_1,4.25\nm_1,1\n"

pytestmark = pytest.mark.timeout(300)


def test_spark_reads_s3_aggregates_in_sql_and_writes_back(tmp_path, monkeypatch):
    pytest.importorskip("pyspark", reason="the kit's spark extra is missing: run `make spark`")
    with SeaweedS3(tmp_path / "s3", KEY, SECRET) as s3:
        s3.ensure_bucket("data")
        client = s3_client(s3.endpoint, KEY, SECRET)
        client.put_object(Bucket="data", Key="in/orders.csv", Body=CSV.encode())
        for name, value in {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        config = EmulatorConfig(
            workspace=FIDELITY, state_dir=tmp_path / "state", token=TOKEN, s3_endpoint_url=s3.endpoint
        )
        emulator = start_background(config)
        try:
            ws = WorkspaceClient(host=emulator.url, token=TOKEN)
            params = {"orders": "s3://data/in/orders.csv", "merchant": "m_1"}
            task = jobs.SubmitTask(
                task_key="t", notebook_task=jobs.NotebookTask(notebook_path="/spark_sql", base_parameters=params)
            )
            run_id = ws.jobs.submit(run_name="spark", tasks=[task]).run_id
            run = sdk_finished(ws, run_id, timeout=240, poll=0.5)
            out = ws.jobs.get_run_output(run.tasks[0].run_id)
        finally:
            emulator.stop()
        assert run.state.result_state == jobs.RunResultState.SUCCESS, out.error_trace
        assert json.loads(out.notebook_output.result) == {"merchant": "m_1", "n": 3, "total": 15.75}
        written = client.list_objects_v2(Bucket="data", Prefix="in/summary/").get("Contents", [])
        parts = [o["Key"] for o in written if o["Key"].endswith(".json")]
        assert parts, written
        rows = [
            json.loads(line)
            for key in parts
            for line in client.get_object(Bucket="data", Key=key)["Body"].read().decode().splitlines()
        ]
        assert rows == [{"merchant": "m_1", "n": 3, "total": 15.75}]
