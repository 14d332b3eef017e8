"""Run the bench: the same requests through dsbridge and through the usual wiring, in one stack.

Each path gets its own phase, one after the other, so neither competes with the other for the two
cores: a few unmeasured warm-up requests, then N requests kept C at a time in flight (a request
leaves the flight when its callback arrived, or when the bench gave up on it). Every wait is
bounded: a request without a callback after `request_timeout` seconds, or whose DAG run ended and
no callback followed within `ended_grace` seconds, is reported as not completed, with its last state.
"""

from __future__ import annotations

import math
import os
import platform
import secrets
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dsbridge.client import AirflowApiError
from dsbridge_local.bench.observe import SlotSampler, Sources, databricks_run_name
from dsbridge_local.bench.records import PATHS, Observation, build_record, restarts_between, summarize
from dsbridge_local.bench.stack import BASELINE_DAG, BENCH_JOB, bench_jobs, bring_up, wait_for_dags
from dsbridge_local.stack.control import read_status
from dsbridge_local.stack.stack import REPO, StackConfig, down

Progress = Callable[[str], None]
T = TypeVar("T")
# What a read of a busy or restarting stack may raise; the bench reads again on its next round.
READ_ERRORS = (httpx.HTTPError, AirflowApiError)
TERMINAL = ("success", "failed")
MAX_TRIGGER_THREADS = 8
RUN_STATE_CHECK_SECONDS = 5.0
# After the last callback: how long DAG runs may take to end, and a pause to catch late duplicates.
SETTLE_TIMEOUT = 180.0
SETTLE_PAUSE = 3.0


@dataclass(frozen=True)
class Plan:
    """What to measure; `validate` names any value out of range."""

    requests: int
    concurrency: int
    notebook_seconds: float
    paths: tuple[str, ...] = PATHS
    job: str = BENCH_JOB
    warmup: int = 1
    request_timeout: float = 900.0
    ended_grace: float = 30.0
    poll_seconds: float = 1.0

    def validate(self) -> None:
        if not 1 <= self.requests <= 1000:
            raise ValueError(f"--requests {self.requests}: give 1..1000")
        if not 1 <= self.concurrency <= 200:
            raise ValueError(f"--concurrency {self.concurrency}: give 1..200 (the bench job admits 200 at once)")
        if not 0 <= self.notebook_seconds <= 1200:
            raise ValueError(f"--notebook-seconds {self.notebook_seconds}: give 0..1200 (the job's maximum)")
        if self.job not in bench_jobs():
            raise ValueError(f"--job {self.job}: give one of {', '.join(bench_jobs())} (folders of benchmarks/jobs)")
        unknown = [p for p in self.paths if p not in PATHS]
        if unknown or not self.paths or len(set(self.paths)) != len(self.paths):
            raise ValueError(f"--paths {','.join(self.paths)}: give one or both of {','.join(PATHS)}, each once")
        if not 0 <= self.warmup <= 20:
            raise ValueError(f"--warmup {self.warmup}: give 0..20")
        if self.request_timeout < 10:
            raise ValueError(f"--request-timeout {self.request_timeout}: give at least 10 seconds")

    def dag_of(self, path: str) -> str:
        """The DAG a path triggers: the bench job's own, or the usual wiring's."""
        return self.job if path == "dsbridge" else BASELINE_DAG

    def phase_timeout(self, count: int, concurrency: int) -> float:
        """The most one phase may take: every wave of requests timing out, plus a margin."""
        return math.ceil(count / concurrency) * self.request_timeout + 120.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _read(read: Callable[[], T], fallback: T) -> T:
    """One read of a source; on a transient error, `fallback` (the next round reads again)."""
    try:
        return read()
    except READ_ERRORS:
        return fallback


def run_phase(
    sources: Sources, path: str, plan: Plan, prefix: str, count: int, concurrency: int, progress: Progress
) -> list[Observation]:
    """Trigger `count` requests, at most `concurrency` in flight; return one observation each."""
    dag_id = plan.dag_of(path)
    conf = {"seconds": plan.notebook_seconds}
    observations = {f"{prefix}-{i:04d}": Observation(path, dag_id, f"{prefix}-{i:04d}") for i in range(1, count + 1)}
    waiting = deque(observations)
    in_flight: dict[str, tuple[Future[datetime], float]] = {}
    run_ended: dict[str, float] = {}
    done = 0
    deadline = time.monotonic() + plan.phase_timeout(count, concurrency)
    last_run_check = 0.0
    with ThreadPoolExecutor(max_workers=min(concurrency, MAX_TRIGGER_THREADS), thread_name_prefix="trigger") as pool:
        while (waiting or in_flight) and time.monotonic() < deadline:
            while waiting and len(in_flight) < concurrency:
                request_id = waiting.popleft()
                future = pool.submit(sources.trigger, path, dag_id, request_id, conf)
                in_flight[request_id] = (future, time.monotonic())
            events: dict[str, list[dict[str, Any]]] = _read(lambda: sources.events(dag_id), {})
            runs: dict[str, dict[str, Any]] = {}
            if time.monotonic() - last_run_check >= RUN_STATE_CHECK_SECONDS:
                runs, last_run_check = _read(lambda: sources.dag_runs(dag_id, prefix), {}), time.monotonic()
            for request_id, (future, began) in list(in_flight.items()):
                if not future.done():
                    continue
                obs = observations[request_id]
                finished = _settle(obs, future, events, runs, run_ended, began, plan)
                if finished:
                    del in_flight[request_id]
                    done += 1
                    progress(_progress_line(obs, done, count))
            time.sleep(plan.poll_seconds)
        for request_id in [*in_flight, *waiting]:
            obs = observations[request_id]
            obs.gave_up = "the phase ran out of time" if request_id in in_flight else "never triggered: out of time"
            progress(_progress_line(obs, done, count))
    return list(observations.values())


def _settle(
    obs: Observation,
    future: Future[datetime],
    events: dict[str, list[dict[str, Any]]],
    runs: dict[str, dict[str, Any]],
    run_ended: dict[str, float],
    began: float,
    plan: Plan,
) -> bool:
    """Whether the request is done: its callback arrived, its trigger failed, or the bench gave up."""
    if (error := future.exception()) is not None:
        obs.trigger_error = f"{type(error).__name__}: {error}"
        return True
    obs.triggered_at = future.result()
    if obs.request_id in events:
        obs.events = events[obs.request_id]
        return True
    now = time.monotonic()
    if now - began > plan.request_timeout:
        obs.gave_up = f"no callback within {plan.request_timeout:.0f}s"
        return True
    if (runs.get(obs.request_id) or {}).get("state") in TERMINAL:
        ended = run_ended.setdefault(obs.request_id, now)
        if now - ended > plan.ended_grace:
            obs.gave_up = f"the DAG run ended and no callback came within {plan.ended_grace:.0f}s"
            return True
    return False


def _progress_line(obs: Observation, done: int, count: int) -> str:
    head = f"  {obs.path:<8} {done:>4}/{count:<4} {obs.request_id}"
    if obs.events and obs.triggered_at:
        received = min(datetime.fromisoformat(e["received_at"]) for e in obs.events)
        seconds = (received - obs.triggered_at).total_seconds()
        return f"{head}  {obs.events[0]['payload'].get('type')} after {seconds:.1f}s"
    return f"{head}  NOT COMPLETED: {obs.trigger_error or obs.gave_up}"


def wait_runs_ended(sources: Sources, observations: list[Observation], prefix: str) -> dict[str, dict[str, Any]]:
    """The phase's DAG runs, once every triggered one ended (or SETTLE_TIMEOUT passed)."""
    dag_id = observations[0].dag_id
    triggered = {o.request_id for o in observations if o.triggered_at is not None}
    deadline = time.monotonic() + SETTLE_TIMEOUT
    runs: dict[str, dict[str, Any]] = _read(lambda: sources.dag_runs(dag_id, prefix), {})
    while time.monotonic() < deadline and any(runs.get(r, {}).get("state") not in TERMINAL for r in triggered):
        time.sleep(2.0)
        runs = _read(lambda: sources.dag_runs(dag_id, prefix), runs)
    return runs


def collect(sources: Sources, observations: list[Observation], prefix: str, since_ms: int) -> None:
    """Once the phase is over: wait (bounded) for its DAG runs to end, then read every source."""
    if not observations:
        return
    dag_id = observations[0].dag_id
    runs = wait_runs_ended(sources, observations, prefix)
    time.sleep(SETTLE_PAUSE)
    events = sources.events(dag_id)
    databricks = sources.databricks_runs(since_ms)
    for obs in observations:
        obs.events = events.get(obs.request_id, [])
        obs.dag_run = runs.get(obs.request_id)
        if obs.dag_run is not None:
            obs.task_instances = sources.task_instances(dag_id, obs.request_id)
            task_ids = [ti["task_id"] for ti in obs.task_instances]
            obs.worker_executions = sources.worker_executions(dag_id, obs.request_id, task_ids)
        obs.databricks_runs = databricks.get(databricks_run_name(obs.dag_id, obs.request_id), [])
        obs.api_calls = sources.api_calls([int(run["run_id"]) for run in obs.databricks_runs])


def machine() -> dict[str, Any]:
    """What the figures were measured on (the load average says whether something else ran too)."""
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "airflow": _version("apache-airflow"),
        "databricks_provider": _version("apache-airflow-providers-databricks"),
        "commit": commit or None,
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def run_bench(plan: Plan, cfg: StackConfig, *, keep: bool, progress: Progress = print) -> dict[str, Any]:
    """Bring the stack up (or use the running one), measure each path, and return the report."""
    plan.validate()
    started_at, measured_on = datetime.now(UTC), machine()
    stack, started = bring_up(cfg, progress)
    try:
        wait_for_dags(stack, [plan.dag_of(path) for path in plan.paths])
        sources = Sources(stack, cfg.state_dir / "airflow" / "logs")
        try:
            paths = {path: _measure(sources, path, plan, progress, cfg.state_dir) for path in plan.paths}
        finally:
            sources.close()
    finally:
        if started and not keep:
            progress("stopping the bench's stack (--keep leaves it running)…")
            down(cfg, progress=progress)
        else:
            progress(f"the stack keeps running; `dsbridge down --state-dir {cfg.state_dir}` stops it")
    return {
        "version": 1,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {**asdict(plan), "paths": list(plan.paths)},
        "machine": measured_on,
        "stack": {"state_dir": str(cfg.state_dir), "database": stack["airflow"].get("database")},
        **paths,
    }


def _measure(sources: Sources, path: str, plan: Plan, progress: Progress, state_dir: Path) -> dict[str, Any]:
    stamp = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}-{path}"
    if plan.warmup:
        progress(f"{path}: {plan.warmup} warm-up request(s), not measured…")
        warm = run_phase(sources, path, plan, f"{stamp}-warm", plan.warmup, plan.warmup, lambda _line: None)
        wait_runs_ended(sources, warm, f"{stamp}-warm")
    progress(f"{path}: {plan.requests} request(s), {plan.concurrency} at a time, notebook {plan.notebook_seconds:g}s…")
    since_ms = _now_ms() - 5_000
    status_before = read_status(state_dir)
    with SlotSampler(sources) as sampler:
        observations = run_phase(sources, path, plan, f"{stamp}-req", plan.requests, plan.concurrency, progress)
        collect(sources, observations, f"{stamp}-req", since_ms)
    restarts = restarts_between(status_before, read_status(state_dir))
    sys.stdout.flush()
    return summarize([build_record(obs) for obs in observations], sampler.peak, restarts)
