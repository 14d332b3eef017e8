"""The few statistics the bench reports, written out so their definition is unambiguous.

Percentiles interpolate linearly between the two nearest ranks (numpy's default, "type 7"), so
p50 is the median and p95 of twenty values lies between the 19th and the 20th. Figures are rounded
to milliseconds (3 decimals): the clocks they come from are no finer.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of `values`, or None when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 3)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """`{p50, p95, max}`, each None when there are no values."""
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values) if values else None}


def median_max(values: Sequence[float]) -> dict[str, float | None]:
    """`{median, max}`, each None when there are no values."""
    return {"median": round(statistics.median(values), 3) if values else None, "max": max(values) if values else None}


def per_minute(count: int, seconds: float | None) -> float | None:
    """`count` events over `seconds`, per minute; None when the span is unknown or empty."""
    if seconds is None or seconds <= 0:
        return None
    return round(count * 60.0 / seconds, 2)
