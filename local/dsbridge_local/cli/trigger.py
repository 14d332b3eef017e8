"""`dsbridge trigger` and `dsbridge cancel`: a request to a job, the way the optimization service makes one."""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from dsbridge.client import AirflowClient
from dsbridge.contract import load_contract
from dsbridge.contract.arguments import parse_param_args
from dsbridge_local.cli.stack import add_stack_options, config_from
from dsbridge_local.stack.stack import read_stack


def client_for(args: argparse.Namespace) -> AirflowClient:
    airflow = read_stack(config_from(args))["airflow"]
    return AirflowClient(airflow["url"], airflow["username"], airflow["password"])


def print_states(states: dict[str, str | None]) -> None:
    order = ("submit", "wait", "collect", "notify_success", "notify_failure")
    line = "  ".join(f"{task}={states.get(task) or '-'}" for task in order)
    print(f"  {line}", file=sys.stderr)


def run_trigger(args: argparse.Namespace) -> int:
    contract = load_contract(args.notebooks / args.job / "job.yaml")
    conf = parse_param_args(contract, args.param)
    request_id = args.request_id or f"req-{uuid.uuid4().hex[:12]}"
    with client_for(args) as client:
        run = client.trigger(args.job, conf, request_id)
        print(json.dumps({"dag_run_id": run["dag_run_id"], "state": run["state"]}))
        if not args.wait:
            return 0
        print(f"waiting for {args.job} run {request_id}…", file=sys.stderr)
        final = client.wait(args.job, request_id, timeout=args.timeout, on_change=print_states)
    print(json.dumps({"dag_run_id": request_id, "state": final["state"]}))
    return 0 if final["state"] == "success" else 1


def run_cancel(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        run = client.cancel(args.job, args.request_id)
    print(json.dumps({"dag_run_id": run["dag_run_id"], "state": run["state"]}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    trigger = subparsers.add_parser(
        "trigger",
        help="trigger a job through the Airflow REST API",
        description="Trigger JOB with parameters (typed by the job's contract), as the optimization service does.",
    )
    trigger.add_argument("job", help="the job name (folder under notebooks/)")
    trigger.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a job parameter")
    trigger.add_argument("--request-id", help="the request id (= DAG run id); default: a new random one")
    trigger.add_argument("--wait", action="store_true", help="follow the run until it ends; exit 1 unless it succeeded")
    trigger.add_argument("--timeout", type=float, default=1800, help="seconds to wait at most (default 1800)")
    add_stack_options(trigger)
    trigger.set_defaults(func=run_trigger)

    cancel = subparsers.add_parser(
        "cancel",
        help="cancel a request (marks its DAG run failed; the Databricks run is cancelled)",
        description="Cancel the request REQUEST_ID of JOB, as the optimization service does.",
    )
    cancel.add_argument("job")
    cancel.add_argument("request_id")
    add_stack_options(cancel)
    cancel.set_defaults(func=run_cancel)
