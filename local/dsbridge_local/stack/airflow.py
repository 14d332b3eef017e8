"""Airflow 3 for the local stack: its configuration, database and four components.

Everything is configured through the environment (`AIRFLOW__*`, `AIRFLOW_CONN_*`), so the DAG code
and the connections are the same that a production deployment sets in its own way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from dsbridge.settings import AWS_CONN_ID, DATABRICKS_CONN_ID, SERVICE_CONN_ID

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# 8 worker slots: waiting happens in the triggerer, so many more requests can be in flight.
PARALLELISM = 8
ADMIN_USER = "admin"
SERVICE_USER = "optimization-service"


def conn_env(conn_id: str, conn: dict[str, Any]) -> tuple[str, str]:
    return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn)


def airflow_env(
    *,
    repo: Path,
    notebooks: Path,
    home: Path,
    port: int,
    database_url: str,
    secrets: dict[str, str],
    emulator_url: str,
    s3: dict[str, str],
    service_url: str,
    alerts_file: Path,
) -> dict[str, str]:
    """The environment of every Airflow process of the stack."""
    base_url = f"http://127.0.0.1:{port}"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(PARALLELISM),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER": "dsbridge.auth.manager.DsbridgeAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin,{SERVICE_USER}:user",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__SECRET_KEY": secrets["api_secret_key"],
        "AIRFLOW__CORE__FERNET_KEY": secrets["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "DSBRIDGE_NOTEBOOKS_DIR": str(notebooks),
        "DSBRIDGE_RESULTS_BUCKET": s3["bucket"],
        "DSBRIDGE_AIRFLOW_URL": base_url,
        "DSBRIDGE_ALERTS_FILE": str(alerts_file),
        "PYTHONPATH": str(repo / "plugins"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.update(
        [
            conn_env(
                DATABRICKS_CONN_ID,
                databricks_connection(emulator_url, secrets["databricks_token"]),
            ),
            conn_env(
                AWS_CONN_ID,
                {
                    "conn_type": "aws",
                    "login": s3["access_key_id"],
                    "password": s3["secret_access_key"],
                    "extra": {
                        "endpoint_url": s3["endpoint_url"],
                        "region_name": "us-east-1",
                        "config_kwargs": {"s3": {"addressing_style": "path"}},
                    },
                },
            ),
            conn_env(
                SERVICE_CONN_ID,
                {"conn_type": "http", "host": service_url, "extra": {"signing_secret": secrets["signing_secret"]}},
            ),
        ]
    )
    return env


def databricks_connection(url: str, token: str) -> dict[str, Any]:
    """The hook takes scheme and port from `schema` and `port` (it would assume https:443)."""
    parts = urlsplit(url)
    return {
        "conn_type": "databricks",
        "host": parts.hostname,
        "port": parts.port,
        "schema": parts.scheme,
        "password": token,
    }


def write_passwords(home: Path, admin_password: str, service_password: str) -> None:
    """The simple auth manager's user file: an admin for ops, a `user` role for the service."""
    path = home / "passwords.json"
    path.write_text(json.dumps({ADMIN_USER: admin_password, SERVICE_USER: service_password}))
    path.chmod(0o600)


def migrate(
    env: dict[str, str],
    log_path: Path,
    timeout: float = 300.0,
    interrupted: Callable[[], bool] = lambda: False,
) -> None:
    """Create or upgrade Airflow's database; the log keeps the output. Stops early if `interrupted`."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if interrupted() or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=10)
            why = "was interrupted" if interrupted() else f"took longer than {timeout:.0f}s"
            raise RuntimeError(f"airflow db migrate {why}; see {log_path}")
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed (exit {proc.returncode}); see {log_path}")


def component_argv(component: str) -> list[str]:
    # Everything runs on one machine and the API server reads task logs from local files, so the
    # scheduler's and triggerer's log servers (which bind every interface) are not started.
    skip_log_server = ["--skip-serve-logs"] if component in ("scheduler", "triggerer") else []
    return [str(Path(sys.executable).parent / "airflow"), component, *skip_log_server]


def health(base_url: str) -> dict[str, Any] | None:
    """Airflow's own health answer, or None while the API server is not up."""
    try:
        answer = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=2.0)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None


def unhealthy_components(answer: dict[str, Any] | None) -> list[str]:
    if answer is None:
        return ["api-server"]
    return sorted(name for name, part in answer.items() if part.get("status") != "healthy")
