"""Write the figures of `dsbridge bench` runs into docs/performance.md (what `make bench` ends with).

Why a script: the doc's prose is written by hand, its figures never are. Each JSON given becomes a
Markdown table (the same rows `dsbridge bench` prints) between the doc's `<!-- bench:figures -->`
and `<!-- /bench:figures -->` markers; without --doc, or if the markers are missing, the tables are
printed for pasting.

    .venv/bin/python benchmarks/performance_doc.py RUN.json [RUN.json …] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsbridge_local.bench.report import markdown

BEGIN, END = "<!-- bench:figures -->", "<!-- /bench:figures -->"


def figures(paths: list[Path]) -> str:
    return "\n\n".join(markdown(json.loads(path.read_text())) for path in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files written by `dsbridge bench --json`")
    parser.add_argument("--doc", type=Path, help="the Markdown file whose figures block to replace")
    args = parser.parse_args(argv)
    block = figures(args.runs)
    if args.doc is None:
        print(block)
        return 0
    text = args.doc.read_text()
    if BEGIN not in text or END not in text:
        print(f"{args.doc} has no {BEGIN} … {END} block; the figures are:\n\n{block}", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    args.doc.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")
    print(f"figures of {len(args.runs)} run(s) written to {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
