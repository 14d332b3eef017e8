"""Smoke run of `dsbridge bench`: 2 requests per path, 2 at a time, a 1-second notebook.

It checks that the benchmark works and that its figures are sane, never that they meet a timing
target (those are measured, see docs/performance.md). The bench needs the baseline DAG as a second
DAG bundle, which the session stack of conftest.py does not load, so it brings up a small stack of
its own: ports from DSBRIDGE_E2E_BASE_PORT + 20 and its own database, so it never meets the
session stack (this module runs, and stops its stack, before the other e2e modules).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

import pytest

from dsbridge_local.bench.stack import bench_config
from dsbridge_local.cli.main import main
from dsbridge_local.stack.stack import down
from tests.e2e.conftest import E2E_BASE_PORT, E2E_DATABASE, _admin
from tests.unit.bench.test_report import SUMMARY_KEYS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

BENCH_DATABASE = os.environ.get("DSBRIDGE_E2E_BENCH_DATABASE", f"{E2E_DATABASE}_bench")
BENCH_BASE_PORT = E2E_BASE_PORT + 20
RECORD_KEYS = {
    "request_id",
    "completed",
    "callbacks",
    "trigger_to_submit_s",
    "submit_to_notebook_s",
    "notebook_s",
    "notebook_to_callback_s",
    "total_s",
    "overhead_s",
    "api_calls",
    "worker_executions",
    "last_state",
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    """Exit code, JSON report and stdout of one bench run on a stack of its own (stopped after)."""
    root = tmp_path_factory.mktemp("bench")
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{BENCH_DATABASE}"
    _admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    _admin(f"CREATE DATABASE {BENCH_DATABASE}")
    out, stdout = root / "bench.json", io.StringIO()
    argv = ["bench", "--requests", "2", "--concurrency", "2", "--notebook-seconds", "1", "--warmup", "0"]
    argv += ["--json", str(out), "--state-dir", str(root / "state"), "--base-port", str(BENCH_BASE_PORT)]
    argv += ["--database-url", url]
    try:
        with contextlib.redirect_stdout(stdout):
            code = main(argv)
    finally:
        down(bench_config(root / "state", BENCH_BASE_PORT, url), progress=lambda _line: None)
        _admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
    print(stdout.getvalue())
    return code, json.loads(out.read_text()), stdout.getvalue()


def test_the_bench_runs_both_paths(bench: tuple[int, dict[str, Any], str]) -> None:
    code, report, stdout = bench
    assert code == 0, stdout
    assert report["config"]["requests"] == 2 and report["config"]["concurrency"] == 2
    header = next(line for line in stdout.splitlines() if line.split() == ["dsbridge", "baseline"])
    assert header  # the side-by-side table was printed
    assert "overhead s: p50 / p95 / max" in stdout


@pytest.mark.parametrize("path", ["dsbridge", "baseline"])
def test_its_figures_are_sane(bench: tuple[int, dict[str, Any], str], path: str) -> None:
    _, report, _ = bench
    summary = report[path]
    assert set(summary) >= SUMMARY_KEYS
    assert summary["requests"] == summary["completed"] == summary["callbacks"] == 2
    assert summary["requests_with_one_callback"] == 2
    assert summary["api_calls_per_request"]["median"] > 0
    assert summary["worker_executions_per_request"]["median"] >= 1
    assert summary["overhead_s"]["p50"] >= 0
    assert summary["throughput_per_min"] > 0
    assert summary["peak_worker_slots"] >= 1
    assert summary["component_restarts"] == {}  # read from the supervisor's status.json: nothing died
    for record in summary["records"]:
        assert set(record) >= RECORD_KEYS
        assert record["completed"] and record["callbacks"] == 1 and record["last_state"] is None
        assert record["api_calls"] > 0 and record["api_calls_by_endpoint"]["runs/submit"] >= 1
        assert record["worker_executions"] >= 1
        assert record["overhead_s"] >= 0
        assert record["notebook_s"] >= 1.0  # the notebook slept 1 s
        assert record["total_s"] >= record["notebook_s"]
