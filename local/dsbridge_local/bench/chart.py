"""The bench's chart: the overhead of every request, per path, as a PNG.

matplotlib is an optional extra (`pip install -e './local[bench]'`), imported only when a chart is asked
for, so the rest of the bench and the product never need it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

COLOURS = {"dsbridge": "#1f77b4", "baseline": "#d62728"}


def overheads(report: dict[str, Any], path: str) -> list[float]:
    return [r["overhead_s"] for r in report[path]["records"] if r.get("overhead_s") is not None]


def write_chart(report: dict[str, Any], out: Path) -> None:
    """Box plot of each path's overheads, every request drawn as a point on top."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError(
            "--chart needs matplotlib: pip install -c constraints.txt -e './local[bench]' (or drop --chart)"
        ) from exc
    paths = [path for path in ("dsbridge", "baseline") if path in report]
    data = [overheads(report, path) for path in paths]
    fig, ax = plt.subplots(figsize=(8, 1.4 + 1.1 * len(paths)), dpi=120)
    if any(data):
        ax.boxplot([d or [float("nan")] for d in data], vert=False, widths=0.5, showfliers=False)
    jitter = random.Random(0)
    for row, (path, values) in enumerate(zip(paths, data, strict=True), start=1):
        ys = [row + jitter.uniform(-0.15, 0.15) for _ in values]
        ax.scatter(values, ys, s=14, alpha=0.7, color=COLOURS[path], zorder=3)
    ax.set_yticks(range(1, len(paths) + 1), [f"{p}\n(n={len(d)})" for p, d in zip(paths, data, strict=True)])
    ax.set_xlabel("overhead per request, seconds (REST trigger → callback received, minus the notebook's own time)")
    ax.set_xlim(0, max((v for d in data for v in d), default=1.0) * 1.08)
    ax.invert_yaxis()  # dsbridge on top
    config = report["config"]
    ax.set_title(
        f"{config['requests']} request(s) per path, {config['concurrency']} at a time, "
        f"{config['notebook_seconds']:g} s notebook",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
