"""Render stored rows as the Jobs API's JSON objects (Run, RunTask, RunOutput).

Field names and enum values are those of databricks-sdk's `jobs` dataclasses (Run, RunState,
RunStatus, RunTask, RunOutput, NotebookOutput), which the SDK's `from_dict` parses and the
provider's hook reads (`state.life_cycle_state`, `run_page_url`, `tasks[].run_id`, ...). Both the
legacy `state` object and the newer `status` object are given, as a workspace does.
"""

from __future__ import annotations

import json
from typing import Any

WORKSPACE_ID = "7001000000000001"
CREATOR = "emulator@dsbridge.local"
TERMINAL_V2 = {"TERMINATED", "INTERNAL_ERROR", "SKIPPED"}


def run_page_url(base_url: str, job_id: int, run_id: int) -> str:
    return f"{base_url.rstrip('/')}/?o={WORKSPACE_ID}#job/{job_id}/run/{run_id}"


def state_of(row: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "life_cycle_state": row["life_cycle"],
        "state_message": row["state_message"] or "",
        "user_cancelled_or_timedout": bool(row["user_cancelled"]),
    }
    if row["result_state"]:
        state["result_state"] = row["result_state"]
    if row["queue_reason"] and row["life_cycle"] == "QUEUED":
        state["queue_reason"] = row["queue_reason"]
    return state


def status_of(row: dict[str, Any]) -> dict[str, Any]:
    life_cycle = row["life_cycle"]
    status: dict[str, Any] = {"state": "TERMINATED" if life_cycle in TERMINAL_V2 else life_cycle}
    if life_cycle == "QUEUED" and row["queue_reason"]:
        status["queue_details"] = {"code": "ACTIVE_RUNS_LIMIT_REACHED", "message": row["queue_reason"]}
    if life_cycle in TERMINAL_V2 and row["term_code"]:
        status["termination_details"] = {
            "code": row["term_code"],
            "type": row["term_type"] or "SUCCESS",
            "message": row["state_message"] or "",
        }
    return status


def _span(end: int | None, start: int | None) -> int:
    return max(0, end - start) if end and start else 0


def _timing(row: dict[str, Any], start_key: str) -> dict[str, Any]:
    start = row[start_key] or 0
    timing = {
        "start_time": start,
        "end_time": row["end_ms"] or 0,
        "setup_duration": _span(row["running_ms"], row["exec_start_ms"]),
        "execution_duration": _span(row["exec_end_ms"], row["running_ms"]),
        "cleanup_duration": _span(row["end_ms"], row["exec_end_ms"]),
    }
    if row["end_ms"]:
        timing["run_duration"] = _span(row["end_ms"], start)
    if row["exec_start_ms"]:
        timing["queue_duration"] = _span(row["exec_start_ms"], row["created_ms"])
    return timing


def render_task(task: dict[str, Any], base_url: str) -> dict[str, Any]:
    spec = json.loads(task["spec"])
    body: dict[str, Any] = {
        "run_id": task["run_id"],
        "task_key": task["task_key"],
        "attempt_number": 0,
        "state": state_of(task),
        "status": status_of(task),
        "run_page_url": run_page_url(base_url, task["job_id"], task["run_id"]),
        **_timing(task, "exec_start_ms"),
        **spec.get("echo", {}),
    }
    return body


def run_type_of(parent: dict[str, Any]) -> str:
    """SUBMIT_RUN, or WORKFLOW_RUN for a run a notebook started with `dbutils.notebook.run`."""
    try:
        return str(json.loads(parent.get("spec") or "{}").get("run_type") or "SUBMIT_RUN")
    except ValueError:
        return "SUBMIT_RUN"


def render_run(parent: dict[str, Any], tasks: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
    """A parent run as `runs/get` returns it."""
    body: dict[str, Any] = {
        "job_id": parent["job_id"],
        "run_id": parent["run_id"],
        "number_in_job": parent["run_id"],
        "original_attempt_run_id": parent["run_id"],
        "attempt_number": 0,
        "creator_user_name": CREATOR,
        "run_name": parent["run_name"],
        "run_type": run_type_of(parent),
        "run_page_url": run_page_url(base_url, parent["job_id"], parent["run_id"]),
        "state": state_of(parent),
        "status": status_of(parent),
        "tasks": [render_task(task, base_url) for task in tasks],
        "format": "SINGLE_TASK" if parent["legacy"] else "MULTI_TASK",
        **_timing(parent, "created_ms"),
    }
    if not parent["legacy"]:
        # Multi-task runs report the phases per task; the parent's own phases are zero.
        body["setup_duration"] = body["execution_duration"] = body["cleanup_duration"] = 0
    if parent["end_ms"]:
        body["run_duration"] = _span(parent["end_ms"], parent["created_ms"])
    return body


def render_task_run(task: dict[str, Any], parent: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A task run addressed by its own run_id (runs/get on a task, get-output's metadata)."""
    body = render_task(task, base_url)
    body.update(
        {
            "job_id": task["job_id"],
            "job_run_id": parent["run_id"],
            "number_in_job": task["run_id"],
            "original_attempt_run_id": task["run_id"],
            "creator_user_name": CREATOR,
            "run_name": parent["run_name"],
            "run_type": run_type_of(parent),
        }
    )
    return body


def render_output(task: dict[str, Any], parent: dict[str, Any], base_url: str) -> dict[str, Any]:
    """`runs/get-output` of a task run."""
    body: dict[str, Any] = {"metadata": render_task_run(task, parent, base_url)}
    finished = task["life_cycle"] in TERMINAL_V2
    if finished and task["result_state"] == "SUCCESS":
        output: dict[str, Any] = {}
        if task["result"] is not None:
            output = {"result": task["result"], "truncated": bool(task["truncated"])}
        body["notebook_output"] = output
    if task["error"]:
        body["error"] = task["error"]
    if task["error_trace"]:
        body["error_trace"] = task["error_trace"]
    return body
