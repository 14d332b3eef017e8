"""The built-in alert needs no external service: a log line and a JSON-lines file."""

from __future__ import annotations

import json
from types import SimpleNamespace

from dsbridge.notifiers.log import AlertLogNotifier


def test_alert_is_logged_and_appended(tmp_path, caplog):
    alerts = tmp_path / "alerts.jsonl"
    context = {
        "ti": SimpleNamespace(dag_id="job", task_id="wait", try_number=3),
        "dag_run": SimpleNamespace(run_id="req-1"),
        "exception": RuntimeError("503 from Databricks"),
    }
    AlertLogNotifier(event="task_failed", alerts_file=str(alerts)).notify(context)
    AlertLogNotifier(event="task_retry", alerts_file=str(alerts)).notify(context)

    lines = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [a["event"] for a in lines] == ["task_failed", "task_retry"]
    assert lines[0] | {"at": None} == {
        "at": None,
        "event": "task_failed",
        "dag_id": "job",
        "run_id": "req-1",
        "task_id": "wait",
        "try_number": 3,
        "error": "503 from Databricks",
    }
    assert "dsbridge alert" in caplog.text and "503 from Databricks" in caplog.text
