"""Turn a notebook into a child-process command line, and a finished child into an outcome.

Shared by the emulator's supervisor and `dsbridge notebook run`, so a notebook behaves the same in
both. The notebook is parsed here, in the parent (cheap), so the child starts with ready cells; a
source problem (bad %run, unsupported magic) becomes an ordinary failed run with a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.runtime import secrets
from dsbridge_local.emulator.runtime.source import NotebookPathError, NotebookSourceError, parse_notebook

# The package root that holds `dsbridge`, put on the child's PYTHONPATH.
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
R_RUNNER = Path(__file__).resolve().with_name("r_runner.R")
RESULT_LIMIT_BYTES = 5 * 1024 * 1024
LOG_TAIL_IN_TRACE = 8 * 1024


@dataclass
class Launch:
    """Everything needed to start the child process."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_file: Path
    result_file: Path


@dataclass
class Outcome:
    """How a notebook ended, in the terms of the Jobs API output."""

    status: str  # SUCCESS | FAILED
    result: str | None = None
    truncated: bool = False
    error: str | None = None
    error_trace: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def rscript() -> str | None:
    return shutil.which("Rscript")


def child_env(base: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    python_path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + python_path if python_path else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env["DSBRIDGE_PYTHON"] = sys.executable
    env["DSBRIDGE_EMULATOR"] = "1"
    env["DSBRIDGE_LD_LIBRARY_PATH"] = env.get("LD_LIBRARY_PATH", "")
    env.update(extra or {})
    return env


def prepare(
    task_dir: Path,
    workspace: Path,
    notebook_file: Path,
    language: str,
    params: dict[str, str],
    extra_env: dict[str, str] | None = None,
) -> Launch:
    """Parse the notebook and write the child's spec; raises NotebookSourceError/NotebookPathError."""
    task_dir.mkdir(parents=True, exist_ok=True)
    parsed = parse_notebook(workspace, notebook_file, language)
    log_file = task_dir / "log.txt"
    result_file = task_dir / "result.json"
    result_file.unlink(missing_ok=True)
    with log_file.open("w", encoding="utf-8") as log:
        for warning in parsed.warnings:
            log.write(warning + "\n")
    spec = {
        "language": language,
        "notebook_file": str(notebook_file),
        "params": params,
        "cells": [cell.as_dict() for cell in parsed.cells],
        "result_file": str(result_file),
    }
    spec_file = task_dir / "spec.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    if language == "r":
        binary = rscript()
        if binary is None:
            raise NotebookSourceError("R notebooks need Rscript (Debian: apt-get install r-base-core r-cran-jsonlite)")
        argv = [binary, "--vanilla", str(R_RUNNER), str(spec_file)]
    else:
        argv = [sys.executable, "-m", "dsbridge_local.emulator.runtime.pyrunner", str(spec_file)]
    return Launch(
        argv=argv,
        env=child_env(extra=extra_env),
        cwd=str(notebook_file.parent),
        log_file=log_file,
        result_file=result_file,
    )


def start(launch: Launch) -> subprocess.Popen[bytes]:
    """Start the prepared notebook in its own process group, output appended to its log."""
    with launch.log_file.open("ab") as log:
        return subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def log_tail(log_file: Path, limit: int = LOG_TAIL_IN_TRACE) -> str:
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return ("[...]\n" if size > limit else "") + text


def truncate_result(value: str) -> tuple[str, bool]:
    """Databricks returns the first 5 MB of the exit value and flags the rest as truncated."""
    raw = value.encode("utf-8")
    if len(raw) <= RESULT_LIMIT_BYTES:
        return value, False
    return raw[:RESULT_LIMIT_BYTES].decode("utf-8", errors="ignore"), True


def collect(launch: Launch, returncode: int) -> Outcome:
    """Read the child's result file (a missing or broken file means the process crashed), with every
    secret value the notebook could read redacted from its log and outcome."""
    hidden = secrets.values(secrets.load(launch.env.get(secrets.ENV)))
    secrets.redact_file(launch.log_file, hidden)
    outcome = _collect(launch, returncode)
    if hidden:
        outcome.result = secrets.redact(outcome.result, hidden)
        outcome.error = secrets.redact(outcome.error, hidden)
        outcome.error_trace = secrets.redact(outcome.error_trace, hidden)
    return outcome


def _collect(launch: Launch, returncode: int) -> Outcome:
    try:
        data = json.loads(launch.result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    tail = log_tail(launch.log_file)
    if not isinstance(data, dict) or data.get("status") not in ("SUCCESS", "FAILED"):
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        error = f"NotebookProcessError: the notebook process {how} without reporting a result"
        return Outcome(status="FAILED", error=error, error_trace=_with_log(error, tail))
    if data["status"] == "SUCCESS":
        result = data.get("result")
        if result is None:
            return Outcome(status="SUCCESS")
        text, truncated = truncate_result(str(result))
        return Outcome(status="SUCCESS", result=text, truncated=truncated)
    error = str(data.get("error") or "NotebookError")
    trace = str(data.get("error_trace") or error)
    return Outcome(status="FAILED", error=error, error_trace=_with_log(trace, tail))


def _with_log(trace: str, tail: str) -> str:
    if not tail.strip():
        return trace
    return f"{trace.rstrip()}\n\n--- notebook log (tail) ---\n{tail}"


def failed_before_start(exc: Exception) -> Outcome:
    """Outcome for a notebook that could not even be prepared (bad %run, missing Rscript, ...)."""
    name = type(exc).__name__ if not isinstance(exc, (NotebookSourceError, NotebookPathError)) else "NotebookError"
    error = f"{name}: {exc}"
    return Outcome(status="FAILED", error=error, error_trace=error)
