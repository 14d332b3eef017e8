"""Per-run counts of the Jobs API calls made about each run, for `dsbridge bench`.

Why: the cost of waiting on a notebook is paid in Databricks API calls (rate limits, cost), so the
bench reports how many calls each request made. The counts are kept here, in memory, because the
Databricks-shaped answers must stay exactly as a workspace gives them. A task run's calls count for
its parent run. Memory is bounded: past `max_runs` runs the oldest run's counts are dropped (and
`evicted` says how many were). Counts start at zero when the emulator starts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

# The calls that concern one run; runs/list and runs/delete are not counted.
COUNTED_CALLS = ("runs/submit", "runs/get", "runs/get-output", "runs/cancel")
DEFAULT_MAX_RUNS = 10_000


class CallCounts:
    """Thread-safe call counts per parent run id, the oldest dropped past `max_runs`."""

    def __init__(self, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        if max_runs < 1:
            raise ValueError("max_runs must be at least 1")
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._runs: OrderedDict[int, dict[str, int]] = OrderedDict()
        self._totals = dict.fromkeys(COUNTED_CALLS, 0)
        self.evicted = 0

    def count(self, run_id: int, call: str) -> None:
        if call not in COUNTED_CALLS:
            raise ValueError(f"{call!r} is not a counted call; counted: {', '.join(COUNTED_CALLS)}")
        with self._lock:
            counts = self._runs.get(run_id)
            if counts is None:
                counts = self._runs[run_id] = dict.fromkeys(COUNTED_CALLS, 0)
                while len(self._runs) > self.max_runs:
                    self._runs.popitem(last=False)
                    self.evicted += 1
            counts[call] += 1
            self._totals[call] += 1

    def of(self, run_id: int) -> dict[str, Any]:
        """`{"run_id", "tracked", "calls": {call: n}, "total"}`; untracked runs report zeros."""
        with self._lock:
            counts = self._runs.get(run_id)
            calls = dict(counts) if counts is not None else dict.fromkeys(COUNTED_CALLS, 0)
        return {"run_id": run_id, "tracked": counts is not None, "calls": calls, "total": sum(calls.values())}

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs_tracked": len(self._runs),
                "max_runs": self.max_runs,
                "evicted": self.evicted,
                "calls": dict(self._totals),
                "total": sum(self._totals.values()),
            }
