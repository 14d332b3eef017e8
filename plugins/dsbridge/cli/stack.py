"""`dsbridge up`, `down` and `status`: the local stack on loopback."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from dsbridge.stack.stack import DEFAULT_BASE_PORT, REPO, StackConfig, StackError, down, status, up


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
        help=f"first of the 12 consecutive loopback ports the stack uses (default {DEFAULT_BASE_PORT})",
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
        help="Airflow's database as a SQLAlchemy URL, e.g. postgresql+psycopg2://postgres@127.0.0.1/dsbridge "
        "(default: SQLite under the state dir)",
    )


def config_from(args: argparse.Namespace) -> StackConfig:
    if not args.notebooks.is_dir():
        raise StackError(f"--notebooks {args.notebooks} is not a folder of jobs")
    if not 1024 <= args.base_port <= 65535 - 11 - 10000:
        raise StackError(f"--base-port {args.base_port} is out of range; use 1024..{65535 - 11 - 10000}")
    return StackConfig(
        state_dir=args.state_dir.resolve(),
        base_port=args.base_port,
        database_url=args.database_url,
        notebooks=args.notebooks.resolve(),
    )


def run_up(args: argparse.Namespace) -> int:
    print("starting the local stack (S3, Databricks emulator, optimization service, Airflow)…")
    up(config_from(args))
    return 0


def run_down(args: argparse.Namespace) -> int:
    down(config_from(args))
    return 0


def run_status(args: argparse.Namespace) -> int:
    report = status(config_from(args))
    print(json.dumps(report, indent=2))
    processes = [v for k, v in report.items() if k != "airflow_health"]
    return 0 if processes and all(p["running"] for p in processes) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, func, help_text in (
        ("up", run_up, "start the local stack and write .dsbridge/stack.json (waits until healthy)"),
        ("down", run_down, "stop exactly the processes `up` started"),
        ("status", run_status, "show each stack process and Airflow's health; exit 1 if any is down"),
    ):
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        add_stack_options(parser)
        parser.set_defaults(func=func)
