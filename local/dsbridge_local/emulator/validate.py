"""Check a `runs/submit` payload the way the Jobs API does and turn it into a run specification.

Rules follow the API reference: a multi-task payload (`tasks[]`) or the legacy single-task form
(`notebook_task` at the top level); `task_key` unique and well-formed; `depends_on` naming known
tasks without cycles; `base_parameters` a map of strings whose JSON may not exceed 1 MB; integer
fields given as numbers or as decimal strings (the provider's operator sends every number as a
string). Unknown fields are ignored, as the real API does. Type errors are MALFORMED_REQUEST,
semantic errors INVALID_PARAMETER_VALUE, each with a message that names the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.errors import ApiError, invalid, malformed
from dsbridge_local.emulator.git import GitSource, check_git_notebook_path, parse_git_source
from dsbridge_local.emulator.runtime.source import (
    NotebookNotFound,
    NotebookPathError,
    NotebookSourceError,
    resolve_in,
)

MAX_TASKS = 100
MAX_BASE_PARAMETERS_BYTES = 1024 * 1024
MAX_IDEMPOTENCY_TOKEN = 64
MAX_RUN_NAME = 4096
TASK_KEY = re.compile(r"^[\w\-.]{1,100}$")
CLUSTER_FIELDS = ("new_cluster", "existing_cluster_id", "job_cluster_key", "environment_key")
UNSUPPORTED_TASK_TYPES = (
    "spark_python_task",
    "spark_jar_task",
    "spark_submit_task",
    "python_wheel_task",
    "pipeline_task",
    "sql_task",
    "dbt_task",
    "run_job_task",
    "condition_task",
    "for_each_task",
)


@dataclass
class TaskSpec:
    """One notebook task of a submitted run."""

    task_key: str
    notebook_path: str
    notebook_file: str
    language: str
    base_parameters: dict[str, str]
    depends_on: list[str]
    timeout_seconds: int
    echo: dict[str, Any] = field(default_factory=dict)  # fields echoed back in runs/get
    # With source GIT: the run's `git_source`; the notebook is found at the run's start.
    git_source: dict[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(**data)


@dataclass
class RunSpec:
    """A validated submit payload."""

    run_name: str
    timeout_seconds: int
    idempotency_token: str | None
    legacy: bool
    tasks: list[TaskSpec]
    request_id: str | None = None
    # A run started by `dbutils.notebook.run` in another run's notebook: ended with it.
    parent_run_id: int | None = None


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise malformed(f"Could not parse request object: Expected an integer for '{name}'")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
        number = int(value)
    else:
        raise malformed(f"Could not parse request object: Expected an integer for '{name}'")
    if number < 0:
        raise invalid(f"{name} must be a non-negative integer, got {number}")
    return number


def _string(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise malformed(f"Could not parse request object: Expected a string for '{name}'")
    if len(value) > limit:
        raise invalid(f"{name} is longer than {limit} characters")
    return value


def _parameters(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(f"Could not parse request object: Expected a map for '{name}'")
    params: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            params[key] = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            params[key] = str(item)
        else:
            raise malformed(f"Could not parse request object: Expected a string for '{name}.{key}'")
    size = len(json.dumps({"base_parameters": params}, separators=(",", ":")).encode("utf-8"))
    if size > MAX_BASE_PARAMETERS_BYTES:
        raise invalid(f"The JSON representation of {name} cannot exceed 1MB (it is {size} bytes).")
    return params


def _task(raw: Any, index: int, workspace: Path, git: GitSource | None, imported: Path | None = None) -> TaskSpec:
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        raise malformed(f"Could not parse request object: Expected an object for '{where}'")
    task_key = raw.get("task_key")
    if task_key is None:
        raise invalid(f"Missing required field: {where}.task_key")
    task_key = _string(task_key, f"{where}.task_key", 100)
    if not TASK_KEY.match(task_key):
        raise invalid(f"Invalid task_key {task_key!r}: only alphanumerics, '_', '-' and '.' are allowed (1-100 chars)")
    for kind in UNSUPPORTED_TASK_TYPES:
        if kind in raw:
            raise invalid(f"{where}.{kind}: the emulator runs notebook_task tasks only")
    notebook_task = raw.get("notebook_task")
    if notebook_task is None:
        raise invalid(f"{where}: a task must have notebook_task (the only task type the emulator runs)")
    if not isinstance(notebook_task, dict):
        raise malformed(f"Could not parse request object: Expected an object for '{where}.notebook_task'")
    source = notebook_task.get("source") or ("GIT" if git is not None else "WORKSPACE")
    if source not in ("WORKSPACE", "GIT"):
        raise invalid(f"{where}.notebook_task.source must be WORKSPACE or GIT, got {source!r}")
    if source == "GIT" and git is None:
        raise invalid(f"{where}.notebook_task.source is GIT, but the run has no git_source")
    notebook_path = notebook_task.get("notebook_path")
    if notebook_path is None:
        raise invalid(f"Missing required field: {where}.notebook_task.notebook_path")
    notebook_path = _string(notebook_path, f"{where}.notebook_task.notebook_path", 4096)
    if source == "GIT":
        notebook_file, language = "", ""  # found in the commit when the run starts, as Databricks does
        check_git_notebook_path(notebook_path)
    else:
        try:
            found, language = resolve_in([imported, workspace] if imported else [workspace], notebook_path)
        except (NotebookPathError, NotebookNotFound, NotebookSourceError) as exc:
            raise invalid(str(exc)) from exc
        notebook_file = str(found)
    params = _parameters(notebook_task.get("base_parameters"), f"{where}.notebook_task.base_parameters")
    depends_raw = raw.get("depends_on") or []
    if not isinstance(depends_raw, list):
        raise malformed(f"Could not parse request object: Expected an array for '{where}.depends_on'")
    depends_on: list[str] = []
    for dep in depends_raw:
        if not isinstance(dep, dict) or not isinstance(dep.get("task_key"), str):
            raise malformed(f"Could not parse request object: Expected {{task_key}} in '{where}.depends_on'")
        depends_on.append(dep["task_key"])
    timeout = _integer(raw.get("timeout_seconds", 0), f"{where}.timeout_seconds")
    echo = {key: raw[key] for key in (*CLUSTER_FIELDS, "description", "libraries") if key in raw}
    echo["notebook_task"] = {"notebook_path": notebook_path, "source": source}
    if params:
        echo["notebook_task"]["base_parameters"] = params
    if depends_on:
        echo["depends_on"] = [{"task_key": key} for key in depends_on]
    if timeout:
        echo["timeout_seconds"] = timeout
    return TaskSpec(
        task_key=task_key,
        notebook_path=notebook_path,
        notebook_file=notebook_file,
        language=language,
        base_parameters=params,
        depends_on=depends_on,
        timeout_seconds=timeout,
        echo=echo,
        git_source=git.as_dict() if source == "GIT" and git is not None else None,
    )


def _check_graph(tasks: list[TaskSpec]) -> None:
    keys = [task.task_key for task in tasks]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise invalid(f"Duplicate task_key {duplicate!r}: task keys must be unique within a run")
    known = set(keys)
    for task in tasks:
        for dep in task.depends_on:
            if dep not in known:
                raise invalid(f"Task {task.task_key} depends on {dep}, which is not a task of this run")
    remaining = {task.task_key: set(task.depends_on) for task in tasks}
    for _ in range(len(tasks) + 1):
        ready = [key for key, deps in remaining.items() if not deps]
        if not ready:
            break
        for key in ready:
            del remaining[key]
        for deps in remaining.values():
            deps.difference_update(ready)
    if remaining:
        raise invalid(f"The task dependencies form a cycle: {sorted(remaining)}")


def parse_submit(body: Any, workspace: Path, imported: Path | None = None) -> RunSpec:
    """Validate a runs/submit payload; raise ApiError in the Jobs API's terms."""
    if not isinstance(body, dict):
        raise malformed("Invalid JSON given in the body of the request - expected a map")
    run_name = _string(body.get("run_name") or "Untitled", "run_name", MAX_RUN_NAME)
    timeout = _integer(body.get("timeout_seconds", 0), "timeout_seconds")
    token = body.get("idempotency_token")
    if token is not None:
        token = _string(token, "idempotency_token", MAX_IDEMPOTENCY_TOKEN)
        if not token:
            token = None
    git = parse_git_source(body["git_source"]) if body.get("git_source") is not None else None
    tasks_raw = body.get("tasks")
    legacy = False
    if tasks_raw is None:
        if "notebook_task" not in body:
            if any(kind in body for kind in UNSUPPORTED_TASK_TYPES):
                raise invalid("The emulator runs notebook_task tasks only")
            raise invalid("Missing required field: tasks")
        legacy = True
        single = {key: body[key] for key in ("notebook_task", *CLUSTER_FIELDS, "libraries") if key in body}
        single["task_key"] = re.sub(r"[^\w\-.]", "_", run_name)[:100] or "notebook_task"
        tasks_raw = [single]
    if not isinstance(tasks_raw, list):
        raise malformed("Could not parse request object: Expected an array for 'tasks'")
    if not tasks_raw:
        raise invalid("tasks must contain at least one task")
    if len(tasks_raw) > MAX_TASKS:
        raise invalid(f"A run submitted to the emulator may have at most {MAX_TASKS} tasks")
    tasks = [_task(raw, index, workspace, git, imported) for index, raw in enumerate(tasks_raw)]
    _check_graph(tasks)
    request_id = next((t.base_parameters["request_id"] for t in tasks if "request_id" in t.base_parameters), None)
    return RunSpec(
        run_name=run_name,
        timeout_seconds=timeout,
        idempotency_token=token,
        legacy=legacy,
        tasks=tasks,
        request_id=request_id,
    )


def require_run_id(params: dict[str, Any]) -> int:
    """Read `run_id` from query parameters or a JSON body; ApiError when missing or not an integer."""
    value = params.get("run_id")
    if value is None or value == "":
        raise invalid("Missing required field: run_id")
    if isinstance(value, bool):
        raise invalid(f"Invalid run_id: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,18}", value.strip()):
        return int(value)
    raise invalid(f"Invalid run_id: {str(value)[:100]!r}")


__all__ = ["ApiError", "RunSpec", "TaskSpec", "parse_submit", "require_run_id"]
