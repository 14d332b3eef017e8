"""The `dsbridge` command line: one sub-command module per purpose, wired together here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dsbridge.client import AirflowApiError
from dsbridge.contract import ContractError
from dsbridge_local.stack.stack import StackError

USER_ERRORS = (StackError, AirflowApiError, ContractError, ValueError, TimeoutError, FileNotFoundError)

# Each module exposes `register(subparsers)`, which adds its sub-commands and sets `func`.
COMMAND_MODULES = (
    "dsbridge_local.cli.demo",
    "dsbridge_local.cli.stack",
    "dsbridge_local.cli.trigger",
    "dsbridge_local.cli.emulator",
    "dsbridge_local.cli.notebook",
    "dsbridge_local.cli.contract",
    "dsbridge_local.cli.deploy",
    "dsbridge_local.cli.auth",
    "dsbridge_local.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsbridge",
        description=(
            "Run data-science Databricks notebooks as callable APIs through Airflow 3. "
            "Start with `dsbridge demo`; `dsbridge COMMAND --help` explains each command."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        # Problems a user can fix get one clear line, not a stack trace.
        print(f"dsbridge {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
