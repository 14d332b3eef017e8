"""One job DAG run through `dag.test()` against real HTTP peers, for the success and failure paths.

Databricks is the emulator (in a thread), S3 is SeaweedFS (a subprocess), the optimization service
is the reference app (in a thread); Airflow reaches them only through AIRFLOW_CONN_* variables.
The tasks, the trigger and the callback all run for real; only the scheduler is dag.test()'s own.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dsbridge.callback.signing import new_secret, verify
from dsbridge.contract import load_contract
from dsbridge.dag_factory import build_job_dag
from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import start_background
from dsbridge_local.ports import free_port
from dsbridge_local.service.app import create_app
from dsbridge_local.stack.s3 import SeaweedS3

REPO = Path(__file__).resolve().parents[2]
TOKEN = "dapi-dag-test"
BUCKET = "dsbridge-results"
S3_KEY, S3_SECRET = "dagtestkey", "dagtestsecret0123456789"
ADMIN_TOKEN = "dag-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
pytestmark = pytest.mark.timeout(300)


class ThreadedService:
    """The reference optimization service on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedService:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.utils.db import initdb

    initdb()


GIT_URL = "https://github.com/acme/dsbridge.git"


def deployed_repository(path: Path) -> str:
    """A Git repository holding this checkout's notebooks/ as one commit (what a deployment pushed)."""
    shutil.copytree(REPO / "notebooks", path / "notebooks")

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=60)
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "user.name=dsbridge", "-c", "user.email=ci@example.com", "commit", "-q", "-m", "deploy")
    return git("rev-parse", "HEAD")


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory, airflow_db: None) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dagrun")
    secret = new_secret()
    saved = dict(os.environ)
    with SeaweedS3(root / "s3", S3_KEY, S3_SECRET) as s3:
        s3.ensure_bucket(BUCKET)
        os.environ.update(
            AWS_ENDPOINT_URL_S3=s3.endpoint,
            AWS_ACCESS_KEY_ID=S3_KEY,
            AWS_SECRET_ACCESS_KEY=S3_SECRET,
            AWS_DEFAULT_REGION="us-east-1",
        )
        deployed = deployed_repository(root / "repo")
        emulator = start_background(
            EmulatorConfig(
                workspace=REPO / "notebooks",
                state_dir=root / "emulator",
                token=TOKEN,
                git_repos={GIT_URL: root / "repo"},
            )
        )
        try:
            with ThreadedService(create_app([secret], root / "service.db", admin_token=ADMIN_TOKEN)) as service:
                os.environ.update(
                    AIRFLOW_CONN_DATABRICKS_DEFAULT=json.dumps(
                        {
                            "conn_type": "databricks",
                            "host": "127.0.0.1",
                            "port": emulator.port,
                            "schema": "http",
                            "password": TOKEN,
                        }
                    ),
                    AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
                        {
                            "conn_type": "aws",
                            "login": S3_KEY,
                            "password": S3_SECRET,
                            "extra": {
                                "endpoint_url": s3.endpoint,
                                "region_name": "us-east-1",
                                "config_kwargs": {"s3": {"addressing_style": "path"}},
                            },
                        }
                    ),
                    AIRFLOW_CONN_OPTIMIZATION_SERVICE=json.dumps(
                        {
                            "conn_type": "http",
                            "host": f"http://127.0.0.1:{service.port}",
                            "extra": {"signing_secret": secret},
                        }
                    ),
                    DSBRIDGE_RESULTS_BUCKET=BUCKET,
                )
                yield {
                    "service": f"http://127.0.0.1:{service.port}",
                    "secret": secret,
                    "s3": s3,
                    "commit": deployed,
                    "emulator": emulator.url,
                }
        finally:
            emulator.stop()
            os.environ.clear()
            os.environ.update(saved)


def run_dag(conf: dict[str, Any], request_id: str) -> dict[str, str]:
    dag = build_job_dag(load_contract(REPO / "notebooks" / "merchant_threshold" / "job.yaml"))
    dag_run = dag.test(run_conf={**conf, "request_id": request_id})
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def events(service: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{service}/events", headers=ADMIN, timeout=10).json())


def test_success_path_sends_one_success_callback(peers):
    states = run_dag({"merchant_id": "m_1042", "lookback_days": 7}, "dagtest-ok")

    assert states == {
        "submit": "success",
        "wait": "success",
        "collect": "success",
        "notify_success": "success",
        "notify_failure": "skipped",
    }
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == "dagtest-ok"]
    body = verify([peers["secret"]], event["body"].encode(), event["headers"])
    assert body["type"] == "request.succeeded"
    assert (body["attempt"], body["sequence"], body["supersedes"]) == (0, 1, None)
    assert body["result"]["merchant_id"] == "m_1042" and body["result"]["orders"] == 7 * 40
    assert body["result_location"] == f"s3://{BUCKET}/runs/merchant_threshold/dagtest-ok/curve.json"
    assert body["error"] is None


def test_failure_path_sends_one_failure_callback_with_the_notebook_error(peers):
    missing = f"s3://{BUCKET}/no/such/orders.csv"
    states = run_dag({"merchant_id": "m_1042", "orders_path": missing}, "dagtest-fail")

    assert states["wait"] == "failed"
    assert states["collect"] == "upstream_failed"
    assert states["notify_success"] == "upstream_failed"
    assert states["notify_failure"] == "success"
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == "dagtest-fail"]
    body = verify([peers["secret"]], event["body"].encode(), event["headers"])
    assert body["type"] == "request.failed"
    assert body["error"]["failed_task"] == "wait" and body["error"]["code"] == "notebook_failed"
    assert "no/such/orders.csv" in body["error"]["message"]
    assert body["error"]["trace"]
    assert body["result"] is None and body["result_location"] is None


def test_receiver_error_is_retried_with_the_same_event(peers):
    armed = httpx.post(f"{peers['service']}/admin/faults", json={"status": 500, "count": 1}, headers=ADMIN, timeout=10)
    assert armed.status_code == 200

    states = run_dag({"merchant_id": "m_9"}, "dagtest-retry")

    assert states["notify_success"] == "success"
    faults = httpx.get(f"{peers['service']}/admin/faults", headers=ADMIN, timeout=10).json()
    assert faults["served"] == 1 and faults["remaining"] == 0  # the first delivery did get the 500
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == "dagtest-retry"]
    assert event["deliveries"] == 1  # the 500 stored nothing; the retry carried the same event id
    verify([peers["secret"]], event["body"].encode(), event["headers"])


def git_mode(monkeypatch: pytest.MonkeyPatch, commit: str) -> None:
    monkeypatch.setenv("DSBRIDGE_NOTEBOOK_SOURCE", "git")
    monkeypatch.setenv("DSBRIDGE_GIT_URL", GIT_URL)
    monkeypatch.setenv("DSBRIDGE_GIT_COMMIT", commit)


def test_git_mode_runs_the_notebook_of_the_deployed_commit(peers, monkeypatch):
    git_mode(monkeypatch, peers["commit"])
    states = run_dag({"merchant_id": "m_7"}, "dagtest-git")

    assert states["collect"] == "success" and states["notify_success"] == "success", states
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == "dagtest-git"]
    body = verify([peers["secret"]], event["body"].encode(), event["headers"])
    assert body["type"] == "request.succeeded" and body["result"]["merchant_id"] == "m_7"
    (run,) = [
        r
        for r in httpx.get(
            f"{peers['emulator']}/api/2.2/jobs/runs/list",
            params={"limit": 25, "expand_tasks": "true"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).json()["runs"]
        if r["run_name"].endswith("dagtest-git")
    ]
    assert run["tasks"][0]["notebook_task"]["source"] == "GIT"  # ran from the commit, not the workspace folder


def test_git_mode_at_an_unknown_commit_fails_the_request_naming_it(peers, monkeypatch):
    unknown = "0badc0de" * 5
    git_mode(monkeypatch, unknown)
    states = run_dag({"merchant_id": "m_7"}, "dagtest-git-unknown")

    assert states["wait"] == "failed" and states["notify_failure"] == "success", states
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == "dagtest-git-unknown"]
    body = verify([peers["secret"]], event["body"].encode(), event["headers"])
    assert body["type"] == "request.failed"
    assert "Failed to checkout Git repository" in body["error"]["message"] and unknown in body["error"]["message"]


def deploy_to(peers: dict[str, Any], root: str, source: str | None = None) -> None:
    """`dsbridge deploy` of merchant_threshold into the emulator's workspace (or `source` instead)."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.workspace import ImportFormat, Language

    from dsbridge_local.cli.deploy import deploy_job

    client = WorkspaceClient(host=peers["emulator"], token=TOKEN)
    contract = load_contract(REPO / "notebooks" / "merchant_threshold" / "job.yaml")
    path = deploy_job(client, contract, root)
    if source is not None:
        content = base64.b64encode(source.encode()).decode()
        client.workspace.import_(
            path, content=content, format=ImportFormat.SOURCE, language=Language.PYTHON, overwrite=True
        )


def failure_of(peers: dict[str, Any], request_id: str) -> dict[str, Any]:
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == request_id]
    body = verify([peers["secret"]], event["body"].encode(), event["headers"])
    assert body["type"] == "request.failed"
    return dict(body["error"])


def test_workspace_mode_runs_the_deployed_notebook(peers, monkeypatch):
    monkeypatch.setenv("DSBRIDGE_NOTEBOOK_SOURCE", "workspace")
    monkeypatch.setenv("DSBRIDGE_WORKSPACE_ROOT", "/deployed")
    deploy_to(peers, "/deployed")
    states = run_dag({"merchant_id": "m_8"}, "dagtest-deployed")

    assert states["notify_success"] == "success", states
    (event,) = [e for e in events(peers["service"]) if e["payload"]["request_id"] == "dagtest-deployed"]
    assert verify([peers["secret"]], event["body"].encode(), event["headers"])["type"] == "request.succeeded"


@pytest.mark.parametrize(
    ("root", "tamper", "expected"),
    [
        ("/stale", "other version", "was deployed from another version of the job"),
        ("/unmarked", "no mark", "was not deployed by dsbridge deploy (no mark)"),
        ("/nowhere", None, "no notebook is deployed at /nowhere/merchant_threshold/merchant_threshold"),
    ],
)
def test_workspace_mode_refuses_a_notebook_that_is_not_this_version(peers, monkeypatch, root, tamper, expected):
    from dsbridge.deployment import MARK

    monkeypatch.setenv("DSBRIDGE_NOTEBOOK_SOURCE", "workspace")
    monkeypatch.setenv("DSBRIDGE_WORKSPACE_ROOT", root)
    notebook = (REPO / "notebooks" / "merchant_threshold" / "merchant_threshold.py").read_text()
    if tamper == "other version":
        deploy_to(peers, root, notebook + f'\n{MARK}{{"job": "merchant_threshold", "contract_sha256": "{"0" * 64}"}}\n')
    elif tamper == "no mark":
        deploy_to(peers, root, notebook)
    request_id = f"dagtest-refused-{root.strip('/')}"
    states = run_dag({"merchant_id": "m_8"}, request_id)

    assert states["submit"] == "failed" and states["notify_failure"] == "success", states
    error = failure_of(peers, request_id)
    assert error["code"] == "submit_failed" and error["failed_task"] == "submit"
    assert "job merchant_threshold" in error["message"] and expected in error["message"]
    assert "dsbridge deploy" in error["message"]  # the fix
