"""``python -m dsbridge_local.service``: run the reference optimization service.

Why a module entry point: the local stack supervisor starts the service as a child process with
plain arguments; secrets travel in ``DSBRIDGE_SERVICE_SECRETS`` and the admin token in
``DSBRIDGE_SERVICE_ADMIN_TOKEN``, so they never show up in ``ps``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsbridge_local.service.app import DEFAULT_CALLBACK_PATH, ENV_DB, ENV_SECRETS, main
from dsbridge_local.service.auth import ENV_ADMIN_TOKEN


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsbridge_local.service",
        description=(
            f"Receive and verify dsbridge callbacks. Secrets come from {ENV_SECRETS} and the admin token "
            f"(for everything but /health and the callbacks) from {ENV_ADMIN_TOKEN}, never from arguments."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--db", default=None, help=f"SQLite path (default: ${ENV_DB} or .dsbridge/)")
    parser.add_argument("--tolerance", type=int, default=None, help="timestamp tolerance in seconds")
    parser.add_argument("--callback-path", default=None, help=f"default {DEFAULT_CALLBACK_PATH}")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        main(
            args.host,
            args.port,
            args.db,
            tolerance_seconds=args.tolerance,
            callback_path=args.callback_path,
            log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"dsbridge_local.service: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
