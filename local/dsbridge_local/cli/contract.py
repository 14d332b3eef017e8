"""`dsbridge contract export`: every job's request and callback contract as OpenAPI / JSON Schema."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from dsbridge.contract import discover_contracts
from dsbridge.contract.model import REQUEST_ID_PATTERN
from dsbridge.settings import notebooks_dir


def request_schema(params: dict[str, dict[str, Any]], required: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["dag_run_id", "conf"],
        "properties": {
            "dag_run_id": {"type": "string", "pattern": REQUEST_ID_PATTERN, "description": "Your request id."},
            "logical_date": {"type": "null"},
            "conf": {
                "type": "object",
                "additionalProperties": False,
                "required": list(required),
                "properties": params,
            },
        },
    }


def export(notebooks: Path) -> dict[str, Any]:
    contracts, errors = discover_contracts(notebooks)
    if errors:
        raise ValueError("invalid contracts:\n" + "\n".join(map(str, errors)))
    event = json.loads(resources.files("dsbridge.callback").joinpath("event.schema.json").read_text())
    paths: dict[str, Any] = {}
    for contract in contracts:
        paths[f"/api/v2/dags/{contract.name}/dagRuns"] = {
            "post": {
                "summary": contract.description.splitlines()[0],
                "operationId": f"request_{contract.name}",
                "tags": list(contract.tags),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request_schema(contract.params, contract.required)}},
                },
                "responses": {
                    "200": {"description": "accepted; the result arrives as a callback event"},
                    "400": {"description": "invalid conf: nothing runs"},
                    "409": {"description": "this request id exists already: nothing new runs"},
                },
                "callbacks": {
                    "result": {
                        contract.success_path: {
                            "post": {
                                "requestBody": {"content": {"application/json": {"schema": event}}},
                                "responses": {"200": {"description": "stored (or a duplicate)"}},
                            }
                        }
                    }
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "dsbridge jobs", "version": "1"},
        "paths": paths,
    }


def run_export(args: argparse.Namespace) -> int:
    text = json.dumps(export(args.notebooks), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    contract = subparsers.add_parser("contract", help="work with job contracts")
    actions = contract.add_subparsers(dest="action", metavar="ACTION", required=True)
    exporter = actions.add_parser(
        "export",
        help="print every job's request/callback contract as OpenAPI 3.1 (JSON Schema inside)",
        description="Print (or write) the OpenAPI 3.1 document of every job: the trigger request and the callback.",
    )
    exporter.add_argument("--out", type=Path, help="write to this file instead of standard output")
    exporter.add_argument("--notebooks", type=Path, default=notebooks_dir(), help="the notebooks folder")
    exporter.set_defaults(func=run_export)
