"""Emulator overhead: median time from runs/submit to TERMINATED, minus the notebook's own run time.

Why: every second the emulator adds shows up in dsbridge's end-to-end overhead measurement, so it
must stay far below Airflow's own ~1 s per task. The notebook sleeps a known time; the client polls
runs/get every 5 ms (bounded), so the figure includes process start-up, Python start-up, result
collection and state bookkeeping.

    PYTHONPATH=plugins .venv/bin/python benchmarks/emulator_overhead.py [--runs 20] [--sleep 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import start_background

NOTEBOOK = """# Databricks notebook source
import time
time.sleep(float(dbutils.widgets.get("seconds")))

# COMMAND ----------

dbutils.notebook.exit("done")
"""
POLL_S = 0.005
RUN_TIMEOUT_S = 30.0


def measure(runs: int, sleep_s: float) -> list[float]:
    overheads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dsbridge-bench-") as tmp:
        workspace = Path(tmp) / "workspace"
        (workspace / "bench").mkdir(parents=True)
        (workspace / "bench" / "sleep.py").write_text(NOTEBOOK, encoding="utf-8")
        server = start_background(EmulatorConfig(workspace=workspace, state_dir=Path(tmp) / "state"))
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for index in range(runs + 1):  # the first run warms caches and is not counted
                    body = {
                        "run_name": f"bench-{index}",
                        "tasks": [
                            {
                                "task_key": "t",
                                "notebook_task": {
                                    "notebook_path": "/bench/sleep",
                                    "base_parameters": {"seconds": str(sleep_s)},
                                },
                            }
                        ],
                    }
                    started = time.perf_counter()
                    run_id = http.post("/api/2.2/jobs/runs/submit", json=body).json()["run_id"]
                    deadline = started + RUN_TIMEOUT_S
                    while True:
                        state = http.get("/api/2.2/jobs/runs/get", params={"run_id": run_id}).json()["state"]
                        if state["life_cycle_state"] == "TERMINATED":
                            break
                        if time.perf_counter() > deadline:
                            raise RuntimeError(f"run {run_id} did not finish: {state}")
                        time.sleep(POLL_S)
                    elapsed = time.perf_counter() - started
                    if state.get("result_state") != "SUCCESS":
                        raise RuntimeError(f"run {run_id} ended {state}")
                    if index:
                        overheads.append(elapsed - sleep_s)
        finally:
            server.stop()
    return overheads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="measured runs (default 20, max 500)")
    parser.add_argument("--sleep", type=float, default=0.2, help="the notebook's own run time in seconds")
    args = parser.parse_args(argv)
    runs = max(1, min(args.runs, 500))
    overheads = measure(runs, max(0.0, args.sleep))
    ordered = sorted(overheads)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    print(
        f"emulator overhead over {runs} runs (notebook sleeps {args.sleep:g} s): "
        f"median {statistics.median(overheads) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
        f"min {ordered[0] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
