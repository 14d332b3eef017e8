"""`dsbridge bench`: dsbridge's overhead measured next to the usual wiring, in the same run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dsbridge_local.bench.records import PATHS, all_well
from dsbridge_local.bench.report import table, write_json
from dsbridge_local.bench.runner import Plan, run_bench
from dsbridge_local.bench.stack import BENCH_JOB, DEFAULT_BASE_PORT, DEFAULT_STATE_DIR, bench_config
from dsbridge_local.stack.stack import StackError


def run(args: argparse.Namespace) -> int:
    if not 1024 <= args.base_port <= 65535 - 11 - 10000:
        raise StackError(f"--base-port {args.base_port} is out of range; use 1024..{65535 - 11 - 10000}")
    plan = Plan(
        requests=args.requests,
        concurrency=args.concurrency,
        notebook_seconds=args.notebook_seconds,
        paths=tuple(p.strip() for p in args.paths.split(",") if p.strip()),
        job=args.job,
        warmup=args.warmup,
        request_timeout=args.request_timeout,
    )
    plan.validate()
    cfg = bench_config(args.state_dir.resolve(), args.base_port, args.database_url)
    report = run_bench(plan, cfg, keep=args.keep, progress=lambda line: print(line, flush=True))
    print()
    print(table(report))
    if args.json:
        write_json(report, args.json)
        print(f"JSON: {args.json}")
    if args.chart:
        from dsbridge_local.bench.chart import write_chart

        write_chart(report, args.chart)
        print(f"chart: {args.chart}")
    bad = [path for path in plan.paths if not all_well(report[path])]
    if bad:
        print(
            f"dsbridge bench: {', '.join(bad)}: not every request completed with one successful callback; "
            "see `last_state` in the JSON records and the logs under the state dir",
            file=sys.stderr,
        )
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure dsbridge's overhead next to the usual wiring (DatabricksSubmitRunOperator + HttpOperator)",
        description=(
            "Send the same requests for a sleeper notebook through dsbridge and through the usual wiring "
            "(benchmarks/dags/bench_sleep_baseline.py), one path after the other on one local stack, and report "
            "per path: overhead (REST trigger to callback received, minus the notebook's own time), its phases, "
            "Databricks API calls and worker executions per request, throughput and peak worker slots. Starts a "
            "stack of its own (the product's DAGs plus the baseline, only the bench's job) unless one it started "
            "runs at --state-dir, and stops it afterwards unless --keep. Exits 1 if any request did not complete "
            "with exactly one successful callback. Timings are measured, never asserted."
        ),
    )
    parser.add_argument("--requests", type=int, default=20, help="requests per path (default 20)")
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight at once (default 10)")
    parser.add_argument("--notebook-seconds", type=float, default=5.0, help="how long the notebook sleeps (default 5)")
    parser.add_argument(
        "--job",
        default=BENCH_JOB,
        help=f"the dsbridge path's job, a folder of benchmarks/jobs (default {BENCH_JOB}; bench_sleep_10min "
        "declares expected_minutes: 10, for --notebook-seconds 600)",
    )
    parser.add_argument(
        "--paths",
        default=",".join(PATHS),
        help=f"which paths to measure, in order (default {','.join(PATHS)})",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="unmeasured requests per path before measuring (default 1)"
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=900.0,
        help="seconds after its trigger a request without callback is given up (default 900)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure and per-request record here")
    parser.add_argument("--chart", type=Path, metavar="PATH", help="draw the overheads of both paths as a PNG here")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the bench stack's state folder; a stack the bench started there is reused (default .dsbridge/bench)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"first of the stack's consecutive loopback ports (default {DEFAULT_BASE_PORT}, clear of `dsbridge up`)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DSBRIDGE_DATABASE_URL"),
        help="Airflow's database, e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/dsbridge_bench "
        "(created if missing); default: the stack's own",
    )
    parser.set_defaults(func=run)
