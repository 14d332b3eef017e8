"""`dsbridge up`, `down` and `status`: the local stack on loopback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from dsbridge_local.stack import celery
from dsbridge_local.stack.health import status
from dsbridge_local.stack.stack import (
    DEFAULT_BASE_PORT,
    HIGHEST_BASE_PORT,
    PORT_SPAN,
    REPO,
    StackConfig,
    StackError,
    down,
    up,
)


def add_stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("DSBRIDGE_STATE_DIR", REPO / ".dsbridge")),
        help="where the stack keeps stack.json, logs and data (default: .dsbridge/ of this checkout)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("DSBRIDGE_BASE_PORT", DEFAULT_BASE_PORT)),
        help=f"first of the {PORT_SPAN} consecutive loopback ports the stack uses, base+12 being the embedded "
        f"PostgreSQL (default {DEFAULT_BASE_PORT}; S3 also uses base+{11 + 10000})",
    )
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=Path(os.environ.get("DSBRIDGE_NOTEBOOKS_DIR", REPO / "notebooks")),
        help="the folder of jobs (<job>/job.yaml + notebook) that Airflow serves and the emulator runs",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DSBRIDGE_DATABASE_URL"),
        help="Airflow's database, a PostgreSQL SQLAlchemy URL, e.g. postgresql+psycopg2://postgres@127.0.0.1/dsbridge "
        "(default: an embedded PostgreSQL under the state dir; SQLite is refused)",
    )


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """How `up` runs Airflow's tasks (the other commands find it in the stack's saved config)."""
    parser.add_argument(
        "--executor",
        choices=celery.EXECUTORS,
        default=os.environ.get("DSBRIDGE_EXECUTOR", "local"),
        help="Airflow's executor: local (LocalExecutor, the default) or celery (CeleryExecutor with --workers "
        "workers on the Redis at --broker-url, as production scales out)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("DSBRIDGE_WORKERS", "2")),
        help=f"Celery workers, each a process of its own (1..{celery.MAX_WORKERS}, default 2; with --executor celery)",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("DSBRIDGE_BROKER_URL", celery.DEFAULT_BROKER_URL),
        help=f"Celery's Redis (default {celery.DEFAULT_BROKER_URL}); each stack uses its own queue on it",
    )


def config_from(args: argparse.Namespace) -> StackConfig:
    if not args.notebooks.is_dir():
        raise StackError(f"--notebooks {args.notebooks} is not a folder of jobs")
    if not 1024 <= args.base_port <= HIGHEST_BASE_PORT:
        raise StackError(f"--base-port {args.base_port} is out of range; use 1024..{HIGHEST_BASE_PORT}")
    return StackConfig(
        state_dir=args.state_dir.resolve(),
        base_port=args.base_port,
        database_url=args.database_url,
        notebooks=args.notebooks.resolve(),
        executor=getattr(args, "executor", "local"),
        workers=getattr(args, "workers", 2),
        broker_url=getattr(args, "broker_url", celery.DEFAULT_BROKER_URL),
    )


def run_up(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    print("starting the local stack (S3, PostgreSQL, Databricks emulator, optimization service, Airflow)…")
    up(cfg)
    return 0


def run_down(args: argparse.Namespace) -> int:
    down(config_from(args))
    return 0


def _line(name: str, info: dict[str, Any]) -> str:
    state = info.get("state", "?") if info.get("running") or info.get("state") != "running" else "not running"
    extra = f"restarts {info.get('restarts', 0)}"
    if info.get("last_exit_code") is not None:
        extra += f", last exit {info['last_exit_code']}"
    if info.get("since"):
        extra += f", since {info['since']}"
    return f"  {name:<22} pid {info.get('pid') or '-':<8} {state:<11} {extra}"


def print_report(report: dict[str, Any]) -> None:
    supervisor = report["supervisor"]
    running = "running" if supervisor["running"] else "not running"
    print(f"  {'supervisor':<22} pid {supervisor['pid'] or '-':<8} {running}")
    for name, info in report["components"].items():
        print(_line(name, info))
    health = report["airflow_health"]
    if health is not None:
        parts = ", ".join(f"{part} {answer.get('status')}" for part, answer in sorted(health.items()))
        print(f"Airflow health: {parts}")


def run_status(args: argparse.Namespace) -> int:
    report = status(config_from(args))
    if not report["components"] and report["supervisor"]["pid"] is None:
        print("no stack is running", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if report["unhealthy"]:
        named = "; ".join(f"{name} ({why})" for name, why in report["unhealthy"].items())
        print(f"dsbridge status: unhealthy: {named}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text in (
        ("up", run_up, "start the local stack and its supervisor, write .dsbridge/stack.json (waits until healthy)"),
        ("down", run_down, "stop the supervisor, then exactly the processes the stack recorded"),
        ("status", run_status, "show each stack process and Airflow's health; exit 1 naming every unhealthy one"),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        add_stack_options(parser)
        if name == "up":
            add_executor_options(parser)
        if name == "status":
            parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
        parser.set_defaults(func=func)
