"""The bench's plumbing that needs no stack: its options, its DAG bundles, worker counts from logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsbridge_local.bench.observe import count_worker_starts, databricks_run_name
from dsbridge_local.bench.runner import Plan
from dsbridge_local.bench.stack import BASELINE_DAGS, BENCH_JOBS, bench_config, bundle_env, ensure_database
from dsbridge_local.cli.main import build_parser
from dsbridge_local.stack.stack import StackError


def test_the_product_bundle_stays_the_default_and_the_baseline_is_added() -> None:
    bundles = json.loads(bundle_env()["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert bundles[0] == {
        "name": "dags-folder",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {},
    }
    assert bundles[1]["kwargs"] == {"path": str(BASELINE_DAGS)}
    assert (BASELINE_DAGS / "bench_sleep_baseline.py").is_file()
    cfg = bench_config(Path("/tmp/x"), 39080, "postgresql+psycopg2://postgres@127.0.0.1:5432/bench")
    assert cfg.notebooks == BENCH_JOBS
    assert cfg.settings_env == bundle_env()


def test_ensure_database_refuses_odd_names_before_connecting() -> None:
    ensure_database(None)  # the stack's own database: nothing to do
    with pytest.raises(StackError, match="letters, digits and _"):
        ensure_database('postgresql+psycopg2://postgres@127.0.0.1:5432/bad"name')


def test_worker_starts_are_counted_per_attempt_log(tmp_path: Path) -> None:
    task = tmp_path / "task_id=wait"
    task.mkdir()
    start = '{"event":"::group::Pre Execute","logger":"task"}\n'
    (task / "attempt=1.log").write_text(start + '{"event":"deferring"}\n' + start + '{"event":"done"}\n')
    (task / "attempt=2.log").write_text(start)
    (task / "attempt=1.log.trigger.7.log").write_text(start)  # the triggerer's, never counted
    assert count_worker_starts(task) == 3
    assert count_worker_starts(tmp_path / "task_id=missing") == 0


def test_run_names_follow_each_path() -> None:
    assert databricks_run_name("bench_sleep", "r-1") == "dsbridge bench_sleep r-1"
    assert databricks_run_name("bench_sleep_10min", "r-1") == "dsbridge bench_sleep_10min r-1"
    assert databricks_run_name("bench_sleep_baseline", "r-1") == "bench_sleep_baseline r-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"requests": 0}, "--requests"),
        ({"concurrency": 500}, "--concurrency"),
        ({"notebook_seconds": -1}, "--notebook-seconds"),
        ({"paths": ("dsbridge", "airflow")}, "--paths"),
        ({"paths": ("dsbridge", "dsbridge")}, "--paths"),
        ({"paths": ()}, "--paths"),
        ({"warmup": 50}, "--warmup"),
        ({"request_timeout": 1}, "--request-timeout"),
        ({"job": "../notebooks/merchant_threshold"}, "--job"),
        ({"job": "merchant_threshold"}, "--job"),
    ],
)
def test_plan_names_the_option_out_of_range(change: dict, message: str) -> None:
    plan = Plan(**{"requests": 2, "concurrency": 2, "notebook_seconds": 1.0, **change})
    with pytest.raises(ValueError, match=message):
        plan.validate()


def test_phase_timeout_is_bounded_by_waves() -> None:
    plan = Plan(requests=20, concurrency=10, notebook_seconds=5, request_timeout=100)
    assert plan.phase_timeout(20, 10) == 2 * 100 + 120


def test_cli_defaults() -> None:
    args = build_parser().parse_args(["bench"])
    assert (args.requests, args.concurrency, args.notebook_seconds) == (20, 10, 5.0)
    assert args.paths == "dsbridge,baseline"
    assert args.json is None and args.chart is None and args.keep is False
    assert args.state_dir.parts[-2:] == (".dsbridge", "bench")


def test_the_bench_jobs_are_valid_contracts_and_the_long_one_declares_ten_minutes() -> None:
    from dsbridge.contract import discover_contracts
    from dsbridge_local.bench.stack import bench_jobs

    contracts, errors = discover_contracts(BENCH_JOBS)
    assert errors == []
    assert bench_jobs() == sorted(c.name for c in contracts) == ["bench_sleep", "bench_sleep_10min"]
    expected = {c.name: c.expected_minutes for c in contracts}
    assert expected == {"bench_sleep": None, "bench_sleep_10min": 10}
