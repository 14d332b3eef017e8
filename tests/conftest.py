"""Test-wide Airflow settings: an isolated AIRFLOW_HOME and connections from AIRFLOW_CONN_* only.

This runs before any test imports Airflow, so Airflow reads these values at import time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="dsbridge-airflow-home-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "DSBRIDGE_NOTEBOOKS_DIR": str(REPO / "notebooks"),
        # Placeholders; tests that talk to a real endpoint override them.
        "AIRFLOW_CONN_DATABRICKS_DEFAULT": json.dumps(
            {"conn_type": "databricks", "host": "http://127.0.0.1:9", "password": "test-token"}
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "test-key",
                "password": "test-secret",
                "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
            }
        ),
        "AIRFLOW_CONN_OPTIMIZATION_SERVICE": json.dumps(
            {
                "conn_type": "http",
                "host": "http://127.0.0.1:9",
                "extra": {"signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            }
        ),
    }
)
