"""Deployment settings, read from the environment at run time (never at DAG parse time's cost).

The DAG code is the same locally and in production; only these values and the Airflow
connections change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

DATABRICKS_CONN_ID = "databricks_default"
AWS_CONN_ID = "aws_default"
SERVICE_CONN_ID = "optimization_service"


@dataclass(frozen=True)
class Settings:
    """Where results go, where notebooks live in the workspace, and how long to ride out outages.

    Each horizon is how long a step keeps retrying a dependency that is down (Databricks for
    `submit` and `wait`, S3 and Databricks for `collect`, the optimization service for the
    callbacks) before it gives up and the request fails with a reason.
    """

    results_bucket: str
    results_prefix: str
    workspace_root: str
    airflow_base_url: str
    callback_horizon: timedelta
    databricks_horizon: timedelta = timedelta(minutes=30)
    collect_horizon: timedelta = timedelta(minutes=30)
    reconcile_interval: timedelta = timedelta(seconds=60)
    # The most `collect` reads into memory to check a result file; larger files are refused.
    collect_max_bytes: int = 512 * 1024 * 1024
    # Retries back off from the first delay, doubling up to the cap (each jittered per request).
    retry_first_delay: timedelta = timedelta(seconds=5)
    retry_max_delay: timedelta = timedelta(minutes=30)
    # Where Databricks finds a job's notebook (docs/deploy.md): `git` (the repository at `git_url`, at
    # the commit the DAG run's code came from), `workspace` (imported by `dsbridge deploy` under
    # `workspace_root`, its version checked at submit) or `folder` (the path under `workspace_root`,
    # unchecked: the local stack, whose emulator serves the checkout's notebooks/ itself).
    notebook_source: str = "folder"
    git_url: str = ""
    git_provider: str = "gitHub"
    # The commit when the DAG bundle has no version of its own (a local folder bundle).
    git_commit: str = ""
    # Where the jobs' folders are inside the repository.
    git_notebooks_path: str = "notebooks"

    def output_path(self, job: str, request_id: str) -> str:
        prefix = f"{self.results_prefix.strip('/')}/" if self.results_prefix.strip("/") else ""
        return f"s3://{self.results_bucket}/{prefix}{job}/{request_id}/"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URI, such as an output path; `ValueError` otherwise."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def load_settings() -> Settings:
    return Settings(
        results_bucket=os.environ.get("DSBRIDGE_RESULTS_BUCKET", "dsbridge-results"),
        results_prefix=os.environ.get("DSBRIDGE_RESULTS_PREFIX", "runs"),
        workspace_root=os.environ.get("DSBRIDGE_WORKSPACE_ROOT", ""),
        airflow_base_url=os.environ.get(
            "DSBRIDGE_AIRFLOW_URL", os.environ.get("AIRFLOW__API__BASE_URL", "http://localhost:8080")
        ).rstrip("/"),
        callback_horizon=_minutes("DSBRIDGE_CALLBACK_HORIZON_MINUTES", 360),
        databricks_horizon=_minutes("DSBRIDGE_DATABRICKS_HORIZON_MINUTES", 30),
        collect_horizon=_minutes("DSBRIDGE_COLLECT_HORIZON_MINUTES", 30),
        reconcile_interval=timedelta(seconds=float(os.environ.get("DSBRIDGE_RECONCILE_SECONDS", "60"))),
        collect_max_bytes=int(os.environ.get("DSBRIDGE_COLLECT_MAX_BYTES", str(512 * 1024 * 1024))),
        retry_first_delay=timedelta(seconds=float(os.environ.get("DSBRIDGE_RETRY_FIRST_DELAY_SECONDS", "5"))),
        retry_max_delay=_minutes("DSBRIDGE_RETRY_MAX_DELAY_MINUTES", 30),
        notebook_source=_choice("DSBRIDGE_NOTEBOOK_SOURCE", NOTEBOOK_SOURCES, "folder"),
        git_url=os.environ.get("DSBRIDGE_GIT_URL", ""),
        git_provider=os.environ.get("DSBRIDGE_GIT_PROVIDER", "gitHub"),
        git_commit=os.environ.get("DSBRIDGE_GIT_COMMIT", ""),
        git_notebooks_path=os.environ.get("DSBRIDGE_GIT_NOTEBOOKS_PATH", "notebooks").strip("/"),
    )


NOTEBOOK_SOURCES = ("folder", "git", "workspace")


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """One of `choices` from the environment; a clear error names the variable and the choices."""
    value = os.environ.get(name, default).strip().lower()
    if value not in choices:
        raise ValueError(f"{name}={os.environ.get(name)!r} must be one of: {', '.join(choices)}")
    return value


def _minutes(name: str, default: float) -> timedelta:
    """A positive number of minutes from the environment; a clear error names the variable."""
    raw = os.environ.get(name)
    try:
        minutes = float(raw) if raw is not None else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of minutes") from None
    if not minutes > 0:
        raise ValueError(f"{name}={raw!r} must be a positive number of minutes")
    return timedelta(minutes=minutes)


def notebooks_dir() -> Path:
    """The folder of job contracts: `$DSBRIDGE_NOTEBOOKS_DIR`, else `notebooks/` of this checkout."""
    configured = os.environ.get("DSBRIDGE_NOTEBOOKS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "notebooks"
