"""`dsbridge deploy`: every job's notebook into a workspace folder, marked with its contract's digest.

For `DSBRIDGE_NOTEBOOK_SOURCE=workspace` deployments: the notebook is imported with the official
databricks-sdk (`workspace.import_`, SOURCE format, the notebook's language) to
`<root>/<job>/<notebook>`, the path `submit` runs, with the mark `submit` checks
(`dsbridge.deployment`). Broken contracts stop the deploy before anything is imported.
"""

from __future__ import annotations

import argparse
import base64
import os
from typing import Any

from dsbridge.contract import JobContract, discover_contracts
from dsbridge.deployment import contract_digest, marked_source
from dsbridge_local.cli.stack import add_stack_options, config_from
from dsbridge_local.stack.stack import StackError, read_stack


def workspace_client(args: argparse.Namespace) -> Any:
    """Where to deploy: --host/--token, else DATABRICKS_HOST/_TOKEN, else the local stack's emulator."""
    from databricks.sdk import WorkspaceClient

    host = args.host or os.environ.get("DATABRICKS_HOST")
    token = args.token or os.environ.get("DATABRICKS_TOKEN")
    if host:
        return WorkspaceClient(host=host, token=token) if token else WorkspaceClient(host=host)
    try:
        emulator = read_stack(config_from(args))["emulator"]
    except StackError as exc:
        raise StackError(
            f"no workspace to deploy to: give --host (and --token), or start the local stack ({exc})"
        ) from None
    return WorkspaceClient(host=emulator["url"], token=emulator["token"])


def deploy_job(client: Any, contract: JobContract, root: str) -> str:
    """Import one job's marked notebook; return where it went."""
    from databricks.sdk.service.workspace import ImportFormat, Language

    path = contract.notebook_path(root)
    client.workspace.mkdirs(path.rsplit("/", 1)[0] or "/")
    content = base64.b64encode(marked_source(contract).encode("utf-8")).decode()
    language = Language.R if contract.language == "r" else Language.PYTHON
    client.workspace.import_(path, content=content, format=ImportFormat.SOURCE, language=language, overwrite=True)
    return path


def run_deploy(args: argparse.Namespace) -> int:
    contracts, errors = discover_contracts(args.notebooks)
    if errors:
        raise ValueError("nothing deployed; fix these contracts first:\n" + "\n".join(f"  {e}" for e in errors))
    chosen = [c for c in contracts if not args.job or c.name in args.job]
    unknown = sorted(set(args.job or []) - {c.name for c in contracts})
    if unknown:
        raise ValueError(f"no job named {unknown} under {args.notebooks}; jobs: {[c.name for c in contracts]}")
    client = workspace_client(args)
    for contract in chosen:
        path = deploy_job(client, contract, args.root)
        print(f"  deployed {contract.name:<24} {path}  (contract {contract_digest(contract)[:12]})")
    print(f"{len(chosen)} job(s) deployed to {client.config.host}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="import every job's notebook into a workspace folder, marked with its contract's digest",
        description=(
            "Import each job's notebook into <root>/<job>/<notebook> with the official databricks-sdk, "
            "marked with a digest of its job.yaml and notebook. With DSBRIDGE_NOTEBOOK_SOURCE=workspace, "
            "submit refuses a notebook whose mark does not match the contract Airflow has (docs/deploy.md)."
        ),
    )
    add_stack_options(parser)
    parser.add_argument("--host", help="the workspace URL (default: $DATABRICKS_HOST, else the local stack's emulator)")
    parser.add_argument("--token", help="a token for it (default: $DATABRICKS_TOKEN or the SDK's own auth)")
    parser.add_argument(
        "--root",
        default=os.environ.get("DSBRIDGE_WORKSPACE_ROOT", ""),
        help="the workspace folder of the jobs, as Airflow's DSBRIDGE_WORKSPACE_ROOT (default: that variable)",
    )
    parser.add_argument("--job", action="append", help="deploy only this job (repeatable; default: every job)")
    parser.set_defaults(func=run_deploy)
