"""The bench's stack: the product's DAGs plus the baseline DAG, and only the bench's job.

Why a second DAG bundle rather than a copied or extended dags folder: the product's `dags/` is
loaded in place, unchanged, as Airflow's default `dags-folder` bundle, and `benchmarks/dags/` is
added next to it as a second `LocalDagBundle` (`[dag_processor] dag_bundle_config_list`, set
through the stack's `settings_env`, which reaches every Airflow process). The baseline DAG thus
never enters the product's folder, and the stack code needs no bench-specific option.
The jobs folder is `benchmarks/jobs/`, so the bench's stack serves (and its emulator runs) only the
bench's sleeper job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from dsbridge.client import AirflowClient
from dsbridge_local.stack.stack import REPO, StackConfig, StackError, read_stack, running, up

BENCH_DIR = REPO / "benchmarks"
BENCH_JOBS = BENCH_DIR / "jobs"
BASELINE_DAGS = BENCH_DIR / "dags"
DEFAULT_STATE_DIR = REPO / ".dsbridge" / "bench"
DEFAULT_BASE_PORT = 29080
BENCH_JOB = "bench_sleep"
BASELINE_DAG = "bench_sleep_baseline"
DAGS_READY_TIMEOUT = 180.0
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


def bundle_env() -> dict[str, str]:
    """Airflow's default `dags-folder` bundle (the product's dags/) plus the baseline's folder."""
    bundles = [
        {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
        {"name": "bench-baseline", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(BASELINE_DAGS)}},
    ]
    return {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles)}


def bench_config(state_dir: Path, base_port: int, database_url: str | None) -> StackConfig:
    return StackConfig(
        state_dir=state_dir,
        base_port=base_port,
        database_url=database_url,
        notebooks=BENCH_JOBS,
        settings_env=bundle_env(),
    )


def ensure_database(database_url: str | None) -> None:
    """Create the PostgreSQL database the URL names if it is missing (never drops anything)."""
    if not database_url or not database_url.startswith("postgresql"):
        return
    import psycopg2

    parts = urlsplit(database_url)
    name = unquote(parts.path.lstrip("/"))
    if not name.replace("_", "").isalnum():
        raise StackError(f"database name {name!r} in --database-url: use letters, digits and _ only")
    dsn = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 5432, "dbname": "postgres"}
    if parts.username:
        dsn["user"] = unquote(parts.username)
    if parts.password:
        dsn["password"] = unquote(parts.password)
    try:
        conn = psycopg2.connect(**dsn, connect_timeout=10)
    except psycopg2.Error as exc:
        raise StackError(f"cannot reach PostgreSQL for {database_url}: {exc}".strip()) from exc
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def bring_up(cfg: StackConfig, progress: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """The stack's description, and whether this call started it (and so should stop it)."""
    if running(cfg) and cfg.stack_file.exists():
        progress(f"using the stack that runs at {cfg.state_dir}")
        return read_stack(cfg), False
    ensure_database(cfg.database_url)
    return up(cfg, progress=progress), True


def admin_client(stack: dict[str, Any]) -> AirflowClient:
    admin = stack["airflow_admin"]
    return AirflowClient(stack["airflow"]["url"], admin["username"], admin["password"])


def bench_jobs() -> list[str]:
    """The jobs the bench stack serves: the folders of `benchmarks/jobs` with a contract."""
    return sorted(path.parent.name for path in BENCH_JOBS.glob("*/job.yaml"))


def wait_for_dags(stack: dict[str, Any], dag_ids: list[str], timeout: float = DAGS_READY_TIMEOUT) -> None:
    """Bounded wait until the DAG processor has serialised every DAG the bench triggers."""
    deadline = time.monotonic() + timeout
    missing = list(dag_ids)
    with admin_client(stack) as admin:
        while missing and time.monotonic() < deadline:
            missing = [
                dag_id for dag_id in dag_ids if admin.request("GET", f"/api/v2/dags/{dag_id}").status_code != 200
            ]
            if missing:
                time.sleep(1.0)
    if missing:
        raise StackError(
            f"DAG(s) {', '.join(missing)} did not appear in Airflow within {timeout:.0f}s. A stack not started by "
            "`dsbridge bench` lacks them: stop it (`dsbridge down --state-dir …`) or give the bench its own "
            "--state-dir; otherwise see the dag-processor log under the state dir's logs/."
        )


def http_json(url: str, headers: dict[str, str], params: dict[str, Any] | None = None) -> Any:
    answer = httpx.get(url, headers=headers, params=params, timeout=30.0)
    answer.raise_for_status()
    return answer.json()
