"""The bench's table, JSON and chart, from a report built out of records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsbridge_local.bench.records import build_record, summarize
from dsbridge_local.bench.report import markdown, overhead_ratio, table, write_json
from tests.unit.bench.test_records import observation

SUMMARY_KEYS = {
    "requests",
    "completed",
    "callbacks",
    "overhead_s",
    "api_calls_per_request",
    "worker_executions_per_request",
    "throughput_per_min",
    "peak_worker_slots",
    "records",
}


def report() -> dict[str, Any]:
    ours = [build_record(observation(f"d-{i}", shift=i)) for i in range(3)]
    theirs = [build_record(observation(f"b-{i}", path="baseline", shift=i)) for i in range(3)]
    for record in theirs:
        record["overhead_s"] = 30.0
    return {
        "config": {"requests": 3, "concurrency": 2, "notebook_seconds": 5.0, "paths": ["dsbridge", "baseline"]},
        "dsbridge": summarize(ours, 2),
        "baseline": summarize(theirs, 3),
    }


def test_table_has_both_paths_side_by_side() -> None:
    text = table(report())
    lines = text.splitlines()
    assert lines[0] == "3 request(s) per path, 2 at a time, notebook 5s"
    assert lines[1].split() == ["dsbridge", "baseline"]
    assert any(line.startswith("overhead s: p50 / p95 / max") and "4.0 / 4.0 / 4.0" in line for line in lines)
    assert "peak worker slots" in text
    assert "stack components restarted during the run" in text and "not recorded" in text
    assert lines[-1] == "baseline's overhead p50 is 7.5x dsbridge's"


def test_table_of_one_path_and_unknown_figures() -> None:
    one = report()
    del one["baseline"]
    one["dsbridge"] = summarize([], None)
    text = table(one)
    assert "baseline" not in text
    assert "- / - / -" in text
    assert overhead_ratio(one) is None


def test_json_has_every_key(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "bench.json"
    write_json(report(), out)
    saved = json.loads(out.read_text())
    for path in ("dsbridge", "baseline"):
        assert set(saved[path]) >= SUMMARY_KEYS
        assert set(saved[path]["overhead_s"]) == {"p50", "p95", "max"}
        assert set(saved[path]["api_calls_per_request"]) == {"median", "max"}
        assert len(saved[path]["records"]) == 3


def test_chart_is_a_png(tmp_path: Path) -> None:
    from dsbridge_local.bench.chart import write_chart

    out = tmp_path / "overhead.png"
    write_chart(report(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_for_the_docs() -> None:
    full = report() | {
        "started_at": "2026-01-05T12:00:00+00:00",
        "machine": {"cpus": 2, "memory_gib": 23.4, "python": "3.11.7", "airflow": "3.3.2", "commit": "abc1234"},
        "stack": {"database": "postgresql"},
    }
    text = markdown(full)
    lines = text.splitlines()
    assert lines[0] == "| 3 request(s) per path, 2 at a time, notebook 5s | dsbridge | baseline |"
    assert lines[1] == "|---|---:|---:|"
    assert "| overhead s: p50 / p95 / max | 4.0 / 4.0 / 4.0 | 30.0 / 30.0 / 30.0 |" in lines
    assert "| trigger → submit s (median / max) | 0.8 / 0.8 | 0.8 / 0.8 |" in lines
    assert "The baseline's median overhead is 7.5x dsbridge's." in text
    assert "2 CPUs, 23.4 GiB, Python 3.11.7, Airflow 3.3.2" in text and "commit abc1234" in text


def test_restarts_are_named_in_the_table() -> None:
    run = report()
    run["dsbridge"]["component_restarts"] = {"airflow-scheduler": 1}
    run["baseline"]["component_restarts"] = {}
    line = next(line for line in table(run).splitlines() if line.startswith("stack components restarted"))
    assert "airflow-scheduler 1x" in line and line.split()[-1] == "none"
