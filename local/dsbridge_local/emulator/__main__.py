"""`python -m dsbridge_local.emulator ...`: the emulator's command line without the rest of `dsbridge`.

Same flags as `dsbridge emulator`; it skips importing Airflow (seconds of start-up), which matters
to supervisors and tests that start emulators often.
"""

from __future__ import annotations

import argparse
import sys

from dsbridge_local.cli.emulator import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsbridge_local.emulator")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(["emulator", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
