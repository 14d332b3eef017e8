"""`dsbridge emulator`: the local Databricks Jobs API emulator on its own.

The local stack starts it for Airflow's `databricks_default` connection; run alone, it lets a data
scientist or a test drive notebooks through the same REST calls a workspace answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.faults import FORCEABLE_STATES, MAX_LATENCY_MS, FaultError, Faults, FaultSettings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run the local Databricks Jobs API emulator",
        description=(
            "Serve /api/2.2/jobs/runs/* (and /api/2.1) locally, executing Databricks source-format "
            "notebooks from --workspace in child processes. See docs/emulator.md."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: 8765)")
    parser.add_argument("--workspace", required=True, help="folder that plays the workspace's notebooks")
    parser.add_argument(
        "--token",
        default=os.environ.get("DSBRIDGE_EMULATOR_TOKEN"),
        help="require this bearer token (default: $DSBRIDGE_EMULATOR_TOKEN; none means no auth)",
    )
    parser.add_argument("--state", help="folder for the SQLite state and run logs (default: a temporary one)")
    parser.add_argument(
        "--max-concurrent-runs", type=int, default=16, help="runs beyond this wait as QUEUED (default: 16)"
    )
    parser.add_argument("--public-url", help="base URL used in run_page_url (default: the request's host)")
    parser.add_argument(
        "--s3-endpoint-url", help="S3 endpoint for notebooks' dbutils.fs (sets AWS_ENDPOINT_URL_S3 for them)"
    )
    parser.add_argument(
        "--kill-grace", type=float, default=3.0, help="seconds between SIGTERM and SIGKILL on cancel/timeout"
    )
    parser.add_argument("--log-level", default="info", help="emulator event log level (default: info)")
    parser.add_argument(
        "--secrets",
        metavar="FILE",
        help='secret scopes for dbutils.secrets, a JSON file {"scope": {"key": "value"}}; values are redacted',
    )
    parser.add_argument(
        "--git-repo",
        action="append",
        default=[],
        metavar="URL=PATH",
        help="serve runs whose git_source.git_url is URL from the local clone PATH (repeatable)",
    )
    faults = parser.add_argument_group("fault injection (also: POST /emulator/faults)")
    faults.add_argument("--fault-429-rate", type=float, default=0.0, help="share of API calls answered 429")
    faults.add_argument("--fault-503-rate", type=float, default=0.0, help="share of API calls answered 503")
    faults.add_argument(
        "--fault-latency-ms", type=int, default=0, help=f"latency added to API calls (max {MAX_LATENCY_MS})"
    )
    faults.add_argument("--fault-retry-after", type=int, default=1, help="Retry-After seconds on 429/503")
    faults.add_argument("--fault-force-state", choices=FORCEABLE_STATES, help="end every new run in this state")
    faults.add_argument("--fault-seed", type=int, help="seed of the fault RNG, for replayable runs")
    parser.set_defaults(func=run_emulator)


def run_emulator(args: argparse.Namespace) -> int:
    from dsbridge_local.emulator.app import EmulatorConfig
    from dsbridge_local.emulator.logs import configure
    from dsbridge_local.emulator.runtime.secrets import load as load_secrets
    from dsbridge_local.emulator.server import serve

    workspace = Path(args.workspace)
    if not workspace.is_dir():
        print(f"error: --workspace {workspace} is not a folder", file=sys.stderr)
        return 2
    if args.max_concurrent_runs < 1:
        print("error: --max-concurrent-runs must be at least 1", file=sys.stderr)
        return 2
    settings = FaultSettings(
        rate_429=args.fault_429_rate,
        rate_503=args.fault_503_rate,
        latency_ms=args.fault_latency_ms,
        retry_after_s=args.fault_retry_after,
        force_state=args.fault_force_state,
        seed=args.fault_seed,
    )
    try:
        Faults(settings)  # validates the bounds
    except FaultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        git_repos = git_repo_map(args.git_repo)
        secrets_file = Path(args.secrets) if args.secrets else None
        load_secrets(secrets_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure(args.log_level)
    config = EmulatorConfig(
        workspace=workspace,
        state_dir=Path(args.state) if args.state else None,
        token=args.token or None,
        max_concurrent_runs=args.max_concurrent_runs,
        public_url=args.public_url,
        s3_endpoint_url=args.s3_endpoint_url,
        kill_grace_s=args.kill_grace,
        faults=settings,
        git_repos=git_repos,
        secrets_file=secrets_file,
    )
    print(
        f"dsbridge emulator on http://{args.host}:{args.port} (workspace {workspace}, "
        f"auth {'on' if config.token else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    serve(config, args.host, args.port)
    return 0


def git_repo_map(entries: list[str]) -> dict[str, Path]:
    """`--git-repo URL=PATH` values as {URL: PATH}; each PATH must be a Git repository."""
    repos: dict[str, Path] = {}
    for entry in entries:
        url, sep, path = entry.rpartition("=")
        if not sep or not url or not path:
            raise ValueError(f"--git-repo {entry!r} must be URL=PATH")
        if not (Path(path) / ".git").exists():
            raise ValueError(f"--git-repo {entry!r}: {path} is not a Git repository (no .git)")
        repos[url] = Path(path).resolve()
    return repos
