"""Child-process entry point that executes one Python notebook, cell by cell, like a Databricks driver.

Started as `python -m dsbridge_local.emulator.runtime.pyrunner SPEC.json` in its own process group; stdout
and stderr are the run's log. It imports only the standard library and the small dbutils module, so
a trivial notebook costs a few tens of milliseconds of start-up. The outcome (exit value, or error
and trace) is written atomically to the result file named in the spec; the supervisor reads it
after the process ends and treats a missing file as a crash.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from types import TracebackType
from typing import Any

from dsbridge_local.emulator.runtime.dbutils import NotebookExit, notebook_globals

SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")


def _run_cells(cells: list[dict[str, Any]], namespace: dict[str, Any]) -> None:
    for cell in cells:
        # Pad with newlines so that line numbers (also in SyntaxError) are those of the source file.
        padded = "\n" * (int(cell["line"]) - 1) + str(cell["code"])
        tree = ast.parse(padded, filename=cell["file"])
        last: ast.Expression | None = None
        tail = tree.body[-1] if tree.body else None
        if isinstance(tail, ast.Expr):
            tree.body.pop()
            last = ast.Expression(tail.value)
        exec(compile(tree, cell["file"], "exec"), namespace)
        if last is not None:
            value = eval(compile(last, cell["file"], "eval"), namespace)
            if value is not None:
                print(f"Out[{cell['index']}]: {value!r}")


def _locate(cells: list[dict[str, Any]], file: str | None, line: int | None) -> str:
    if file is None or line is None:
        return ""
    for cell in cells:
        code_lines = str(cell["code"]).count("\n") or 1
        first = int(cell["line"])
        if cell["file"] == file and first <= line < first + code_lines:
            return f"(notebook {cell['workspace_path']}, cell {cell['index']}, line {line - first + 1} of the cell)"
    return ""


def _user_traceback(exc: BaseException) -> TracebackType | None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def describe_failure(exc: BaseException, cells: list[dict[str, Any]]) -> tuple[str, str]:
    """Return (error, error_trace) as Databricks reports them: "Type: message" and the traceback."""
    import traceback  # only failures pay for it

    message = str(exc)
    error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    exc.__traceback__ = _user_traceback(exc)
    trace = "".join(traceback.format_exception(exc))
    file: str | None = None
    line: int | None = None
    if isinstance(exc, SyntaxError):
        file, line = exc.filename, exc.lineno
    else:
        for frame in traceback.extract_tb(exc.__traceback__):
            if _locate(cells, frame.filename, frame.lineno):
                file, line = frame.filename, frame.lineno
    where = _locate(cells, file, line)
    if where:
        trace = f"{trace.rstrip()}\n{where}\n"
    return error, trace


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Execute the notebook described by `spec`; return the outcome dict (never raises)."""
    cells: list[dict[str, Any]] = spec["cells"]
    params = {str(k): str(v) for k, v in (spec.get("params") or {}).items()}
    namespace = notebook_globals(params, spec["notebook_file"])
    # `from databricks.sdk.runtime import dbutils` finds this notebook's globals, as on a cluster.
    sys.path.insert(0, SHIM_DIR)
    import dbruntime

    dbruntime.set_namespace(namespace)
    sys.argv = [spec["notebook_file"]]
    sys.path.insert(0, os.path.dirname(spec["notebook_file"]))
    try:
        _run_cells(cells, namespace)
    except NotebookExit as stop:
        return {"status": "SUCCESS", "result": stop.value}
    except SystemExit as stop:
        if stop.code in (None, 0):
            return {"status": "SUCCESS", "result": None}
        error, trace = describe_failure(stop, cells)
        return {"status": "FAILED", "error": error, "error_trace": trace}
    except BaseException as exc:
        error, trace = describe_failure(exc, cells)
        return {"status": "FAILED", "error": error, "error_trace": trace}
    return {"status": "SUCCESS", "result": None}


def write_outcome(path: str, outcome: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(outcome, handle)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as handle:
        spec = json.load(handle)
    outcome = run(spec)
    write_outcome(spec["result_file"], outcome)
    return 0 if outcome["status"] == "SUCCESS" else 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Like a finished Databricks command: threads the notebook left running do not keep it alive.
    os._exit(code)
