"""`dsbridge demo`: bring the stack up, request the example job as the service would, show the answer."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import httpx

from dsbridge.client import AirflowClient
from dsbridge.contract import load_contract
from dsbridge.contract.arguments import parse_param_args
from dsbridge_local.cli.stack import add_stack_options, config_from
from dsbridge_local.cli.trigger import print_states
from dsbridge_local.stack.stack import down, up

DEFAULT_PARAMS = ["merchant_id=m_1042", "target_chargeback_rate=0.01", "lookback_days=30"]


def wait_for_event(service: dict[str, str], job: str, request_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
    """The request's latest event as the service keeps it (`/requests/<job>/<id>`), once one arrived."""
    url = f"{service['url']}/requests/{quote(job, safe='')}/{quote(request_id, safe='')}"
    auth = {"Authorization": f"Bearer {service['admin_token']}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(url, headers=auth, timeout=5.0)
        if answer.status_code != 404:
            answer.raise_for_status()
            if answer.json()["latest"] is not None:
                return dict(answer.json()["latest"])
        time.sleep(0.5)
    return None


def s3_object_exists(s3: dict[str, str], location: str) -> bool:
    bucket, key = location[len("s3://") :].split("/", 1)
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key_id"],
        aws_secret_access_key=s3["secret_access_key"],
        region_name=s3.get("region", "us-east-1"),
    )
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError:
        return False
    return True


def run_demo(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    contract = load_contract(args.notebooks / args.job / "job.yaml")
    conf = parse_param_args(contract, args.param or DEFAULT_PARAMS)
    print("1/4 starting the local stack…")
    stack = up(cfg)
    try:
        return _demo(args.job, conf, stack, cfg.stack_file)
    finally:
        if args.keep:
            print("\nthe stack keeps running (--keep); `dsbridge down` stops it")
        else:
            print("\nstopping the stack (use --keep to leave it running)…")
            down(cfg)


def _demo(job: str, conf: dict[str, Any], stack: dict[str, Any], stack_file: Path) -> int:
    airflow = stack["airflow"]
    request_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    print(f"\n2/4 POST {airflow['url']}/api/v2/dags/{job}/dagRuns  dag_run_id={request_id}")
    print(f"    conf={json.dumps(conf)}")
    with AirflowClient(airflow["url"], airflow["username"], airflow["password"]) as client:
        began = time.monotonic()
        client.trigger(job, conf, request_id)
        print("\n3/4 following the run (task states):")
        run = client.wait(job, request_id, timeout=900, on_change=print_states)
    took = time.monotonic() - began
    print(f"    run ended '{run['state']}' after {took:.1f}s")

    print("\n4/4 the callback the optimization service received:")
    event = wait_for_event(stack["service"], job, request_id)
    if event is None:
        print(f"    no callback for {request_id} arrived; see {stack['logs']}")
        return 1
    print(f"    headers: webhook-id={event['headers'].get('webhook-id')}  deliveries={event['deliveries']}")
    print("    " + json.dumps(event["payload"], indent=2).replace("\n", "\n    "))
    payload = event["payload"]
    admin = stack["airflow_admin"]
    print(f"\nAirflow UI:                {airflow['url']}/dags/{job}/runs/{request_id}")
    print(f"                           (log in as {admin['username']} / {admin['password']})")
    print(f"optimization service page: {stack['service']['url']}/?token={stack['service']['admin_token']}")
    print(f"every URL and credential:  {stack_file}")
    if payload["type"] != "request.succeeded":
        print(f"\nthe request did not succeed: {payload['error']}")
        return 1
    location = payload["result_location"]
    present = s3_object_exists(stack["s3"], location)
    print(f"result: {location} ({'present' if present else 'MISSING'} in S3)")
    return 0 if present else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start the stack, run the example job end to end and print the callback",
        description=(
            "Bring the local stack up, trigger the example job through the Airflow REST API exactly as the "
            "optimization service would, follow it, print the signed callback and where the result lies. "
            "Exits 0 on success, 1 with the reason otherwise."
        ),
    )
    parser.add_argument("--job", default="merchant_threshold", help="the job to run (default merchant_threshold)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="override the demo's parameters")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    add_stack_options(parser)
    parser.set_defaults(func=run_demo)
