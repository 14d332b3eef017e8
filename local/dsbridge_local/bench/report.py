"""The bench's outputs: the side-by-side table on stdout and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _triple(spread: dict[str, float | None]) -> str:
    return " / ".join(_num(spread[key]) for key in ("p50", "p95", "max"))


def _pair(stats: dict[str, float | None], digits: int = 1) -> str:
    return f"{_num(stats['median'], digits)} / {_num(stats['max'], digits)}"


ROWS: list[Row] = [
    ("requests: completed / sent", lambda s: f"{s['completed']} / {s['requests']}"),
    ("succeeded", lambda s: str(s["succeeded"])),
    ("callbacks (requests with exactly one)", lambda s: f"{s['callbacks']} ({s['requests_with_one_callback']})"),
    ("overhead s: p50 / p95 / max", lambda s: _triple(s["overhead_s"])),
    ("total s: p50 / p95 / max", lambda s: _triple(s["total_s"])),
    ("  trigger → submit s (median / max)", lambda s: _pair(s["phases_s"]["trigger_to_submit"])),
    ("  submit → notebook start s", lambda s: _pair(s["phases_s"]["submit_to_notebook"])),
    ("  notebook s", lambda s: _pair(s["phases_s"]["notebook"])),
    ("  notebook end → callback s", lambda s: _pair(s["phases_s"]["notebook_to_callback"])),
    ("Databricks API calls / request (median / max)", lambda s: _pair(s["api_calls_per_request"], 0)),
    ("worker executions / request (median / max)", lambda s: _pair(s["worker_executions_per_request"], 0)),
    ("throughput (requests / min)", lambda s: _num(s["throughput_per_min"])),
    ("peak worker slots (sampled every 0.5 s)", lambda s: str(s["peak_worker_slots"])),
    ("stack components restarted during the run", lambda s: _restarts(s.get("component_restarts"))),
]


def _restarts(restarts: dict[str, int] | None) -> str:
    if restarts is None:
        return "not recorded"
    return ", ".join(f"{name} {n}x" for name, n in restarts.items()) or "none"


def _paths(report: dict[str, Any]) -> list[str]:
    return [path for path in ("dsbridge", "baseline") if path in report]


def title(report: dict[str, Any]) -> str:
    config = report["config"]
    return (
        f"{config['requests']} request(s) per path, {config['concurrency']} at a time, "
        f"notebook {config['notebook_seconds']:g}s"
    )


def table(report: dict[str, Any]) -> str:
    """The figures of each measured path, side by side (stdout)."""
    header = ["", *_paths(report)]
    cells = [[label, *(render(report[path]) for path in header[1:])] for label, render in ROWS]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in [header, *cells]
    ]
    out = [title(report), *lines]
    if ratio := overhead_ratio(report):
        out.append(f"baseline's overhead p50 is {ratio:.1f}x dsbridge's")
    return "\n".join(out)


def markdown(report: dict[str, Any]) -> str:
    """The same figures as a Markdown table, with when and on what they were measured (for the docs)."""
    paths = _paths(report)
    lines = [f"| {title(report)} | {' | '.join(paths)} |", "|---|" + "---:|" * len(paths)]
    lines += [f"| {label.strip()} | {' | '.join(render(report[p]) for p in paths)} |" for label, render in ROWS]
    if ratio := overhead_ratio(report):
        lines.append(f"\nThe baseline's median overhead is {ratio:.1f}x dsbridge's.")
    machine = report.get("machine") or {}
    lines.append(
        f"\nMeasured {report.get('started_at', '?')} on {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('memory_gib', '?')} GiB, Python {machine.get('python', '?')}, Airflow "
        f"{machine.get('airflow', '?')}, Databricks provider {machine.get('databricks_provider', '?')}, "
        f"commit {machine.get('commit', '?')}; load average {(machine.get('load_average') or ['?'])[0]} at the "
        f"start; Airflow database: {(report.get('stack') or {}).get('database', '?')}."
    )
    return "\n".join(lines)


def overhead_ratio(report: dict[str, Any]) -> float | None:
    """How many times dsbridge's median overhead the baseline's is (None without both)."""
    try:
        ours, theirs = report["dsbridge"]["overhead_s"]["p50"], report["baseline"]["overhead_s"]["p50"]
    except KeyError:
        return None
    if ours is None or theirs is None or ours <= 0:
        return None
    return float(theirs / ours)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
