"""An alert that needs no external service: a structured log line, plus a JSON-lines file.

Ops see the line in the task log and in whatever collects Airflow's logs; with
`DSBRIDGE_ALERTS_FILE` set, each alert is also appended to that file, which the local stack and
the tests read. Production deployments add Slack/SMTP/HTTP notifiers next to this one.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger("dsbridge.alerts")


def raise_alert(alert: dict[str, Any], alerts_file: str | None = None) -> None:
    """Log one alert (and append it to the alerts file when one is configured)."""
    alert = {"at": datetime.now(UTC).isoformat(), **alert}
    log.error("dsbridge alert: %s", json.dumps(alert, default=str))
    path = alerts_file or os.environ.get("DSBRIDGE_ALERTS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(alert, default=str) + "\n")


class AlertLogNotifier(BaseNotifier):
    """Log (and optionally append to a file) one alert per failed or retried task."""

    template_fields = ("event",)

    def __init__(self, event: str = "task_failed", alerts_file: str | None = None) -> None:
        super().__init__()
        self.event = event
        self.alerts_file = alerts_file

    def notify(self, context: Any) -> None:
        ti = context.get("ti")
        dag_run = context.get("dag_run")
        exception = context.get("exception")
        alert = {
            "event": self.event,
            "dag_id": getattr(ti, "dag_id", None),
            "run_id": getattr(dag_run, "run_id", None),
            "task_id": getattr(ti, "task_id", None),
            "try_number": getattr(ti, "try_number", None),
            "error": str(exception) if exception else None,
        }
        raise_alert(alert, self.alerts_file)
