"""`dsbridge notebook run PATH --param k=v ...`: a data scientist's local run of one notebook.

It uses the emulator's own runtime (same parsing, same dbutils, same child process), without a
server, so "works on my machine" means "works in the emulator" and, as far as the emulator is
faithful, on Databricks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.runtime import secrets
from dsbridge_local.emulator.runtime.launch import Outcome, collect, failed_before_start, prepare, start
from dsbridge_local.emulator.runtime.source import LANGUAGE_BY_SUFFIX, NotebookPathError, NotebookSourceError
from dsbridge_local.stack.stack import REPO

MAX_PARAMS = 1000


def register(subparsers: Any) -> None:
    notebook = subparsers.add_parser(
        "notebook", help="work with notebooks locally", description="Work with notebooks locally."
    )
    actions = notebook.add_subparsers(dest="notebook_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run one notebook locally, as the emulator would",
        description=(
            "Run one Databricks source-format notebook (Python or R) locally with the emulator's runtime "
            "(dbutils.widgets, dbutils.notebook.exit, dbutils.fs). Prints the log and the exit value; "
            "exit code 0 on success, 1 when the notebook fails, 2 on bad usage."
        ),
    )
    run.add_argument("path", help="the notebook file (.py, .r or .R)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a widget value (base parameter); repeatable",
    )
    run.add_argument(
        "--workspace",
        help="folder that plays the Databricks workspace, for %%run (default: the notebook's folder)",
    )
    run.add_argument("--timeout", type=float, default=0, help="seconds before the run is killed (0: none)")
    run.add_argument(
        "--secrets",
        metavar="FILE",
        help='secret scopes for dbutils.secrets, a JSON file {"scope": {"key": "value"}}; values are redacted',
    )
    run.add_argument("--json", action="store_true", help="print the outcome as JSON instead of text")
    run.set_defaults(func=run_command)
    test = actions.add_parser(
        "test",
        help="run a job's examples (job.yaml `examples:`) and check what comes out",
        description=(
            "Run each example of a job (or of every job) with the emulator's runtime, check the exit value and "
            "result file against the job's output contract and the example's expectations, and report each "
            "example with what differs. Exit code 0 when every example passes, 1 otherwise."
        ),
    )
    test.add_argument("job", nargs="?", help="the job (a folder under --notebooks); default: every job")
    test.add_argument(
        "--notebooks",
        type=Path,
        default=Path(os.environ.get("DSBRIDGE_NOTEBOOKS_DIR", REPO / "notebooks")),
        help="the folder of jobs (default: notebooks/ of this checkout)",
    )
    test.add_argument("--example", action="append", help="run only this example (repeatable)")
    test.add_argument("--timeout", type=float, default=600, help="seconds each example may run (default 600)")
    test.set_defaults(func=test_command)


def parse_params(items: list[str]) -> dict[str, str]:
    if len(items) > MAX_PARAMS:
        raise ValueError(f"at most {MAX_PARAMS} --param values")
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r} is not KEY=VALUE")
        params[key.strip()] = value
    return params


def run_notebook(
    path: Path,
    params: dict[str, str],
    workspace: Path | None = None,
    timeout: float = 0,
    dbfs_root: Path | None = None,
    secrets_file: Path | None = None,
) -> tuple[Outcome, str]:
    """Run one notebook file in a child process; return (outcome, log). DBFS paths go to `dbfs_root`
    (default: a folder removed with the run)."""
    notebook = path.resolve()
    root = (workspace or notebook.parent).resolve()
    if not notebook.is_relative_to(root):
        raise NotebookPathError(f"{path} is not inside the workspace {root}")
    language = LANGUAGE_BY_SUFFIX.get(notebook.suffix)
    if language is None:
        raise NotebookSourceError(f"{path}: not a Python (.py) or R (.r/.R) notebook")
    with tempfile.TemporaryDirectory(prefix="dsbridge-notebook-") as tmp:
        task_dir = Path(tmp)
        extra = {
            "DSBRIDGE_DBFS_ROOT": str(dbfs_root or task_dir / "dbfs"),
            # dbutils.notebook.run: children resolve against this notebook, in this workspace folder.
            "DSBRIDGE_WORKSPACE_DIR": str(root),
            "DSBRIDGE_NOTEBOOK_PATH": "/" + notebook.relative_to(root).with_suffix("").as_posix(),
        }
        if secrets_file is not None:
            secrets.load(secrets_file)  # a malformed file is a usage error, before anything runs
            extra[secrets.ENV] = str(secrets_file.resolve())
        try:
            launch = prepare(task_dir, root, notebook, language, params, extra_env=extra)
        except (NotebookSourceError, NotebookPathError) as exc:
            return failed_before_start(exc), ""
        proc = start(launch)
        try:
            returncode = proc.wait(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            text = launch.log_file.read_text(encoding="utf-8", errors="replace")
            error = f"TimeoutError: the notebook ran longer than {timeout:g} s"
            return Outcome(status="FAILED", error=error, error_trace=error), text
        outcome = collect(launch, returncode)
        return outcome, launch.log_file.read_text(encoding="utf-8", errors="replace")


def run_command(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        print(f"error: no such notebook file: {path}", file=sys.stderr)
        return 2
    if args.workspace and not Path(args.workspace).is_dir():
        print(f"error: --workspace {args.workspace} is not a folder", file=sys.stderr)
        return 2
    try:
        params = parse_params(args.param)
        outcome, log = run_notebook(
            path,
            params,
            Path(args.workspace) if args.workspace else None,
            timeout=args.timeout,
            secrets_file=Path(args.secrets) if args.secrets else None,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"log": log, **outcome.__dict__}))
    else:
        if log:
            print(log, end="" if log.endswith("\n") else "\n")
        if outcome.status == "SUCCESS":
            print(f"exit value: {outcome.result}" if outcome.result is not None else "exit value: (none)")
        else:
            print(f"notebook failed: {outcome.error}", file=sys.stderr)
            trace = (outcome.error_trace or "").split("\n\n--- notebook log (tail) ---")[0]
            if trace and trace != outcome.error:
                print(trace, file=sys.stderr)
    return 0 if outcome.status == "SUCCESS" else 1


def test_command(args: argparse.Namespace) -> int:
    from dsbridge.contract import discover_contracts
    from dsbridge_local.examples import run_examples

    contracts, errors = discover_contracts(args.notebooks)
    if errors:
        raise ValueError("fix these contracts first:\n" + "\n".join(f"  {e}" for e in errors))
    if args.job:
        contracts = [c for c in contracts if c.name == args.job]
        if not contracts:
            raise ValueError(f"no job named {args.job!r} under {args.notebooks}")
    known = {example.name for contract in contracts for example in contract.examples}
    unknown = sorted(set(args.example or []) - known)
    if unknown:
        raise ValueError(f"no example named {unknown}; the examples are {sorted(known)}")
    results = []
    for contract in contracts:
        if not contract.examples:
            print(f"----  {contract.name}: no examples (add `examples:` to its job.yaml; docs/contract.md)")
        for result in run_examples(contract, args.example, timeout=args.timeout):
            print(result.report(), flush=True)
            results.append(result)
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} example(s) passed")
    return 1 if failed else 0
