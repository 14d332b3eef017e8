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
    """Where results go and where notebooks live in the Databricks workspace."""

    results_bucket: str
    results_prefix: str
    workspace_root: str
    airflow_base_url: str
    callback_horizon: timedelta

    def output_path(self, job: str, request_id: str) -> str:
        prefix = f"{self.results_prefix.strip('/')}/" if self.results_prefix.strip("/") else ""
        return f"s3://{self.results_bucket}/{prefix}{job}/{request_id}/"


def load_settings() -> Settings:
    return Settings(
        results_bucket=os.environ.get("DSBRIDGE_RESULTS_BUCKET", "dsbridge-results"),
        results_prefix=os.environ.get("DSBRIDGE_RESULTS_PREFIX", "runs"),
        workspace_root=os.environ.get("DSBRIDGE_WORKSPACE_ROOT", ""),
        airflow_base_url=os.environ.get(
            "DSBRIDGE_AIRFLOW_URL", os.environ.get("AIRFLOW__API__BASE_URL", "http://localhost:8080")
        ).rstrip("/"),
        callback_horizon=timedelta(minutes=float(os.environ.get("DSBRIDGE_CALLBACK_HORIZON_MINUTES", "360"))),
    )


def notebooks_dir() -> Path:
    """The folder of job contracts: `$DSBRIDGE_NOTEBOOKS_DIR`, else `notebooks/` of this checkout."""
    configured = os.environ.get("DSBRIDGE_NOTEBOOKS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "notebooks"
