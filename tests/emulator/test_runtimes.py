"""Notebook runtimes without a server: source parsing, `dsbridge notebook run`, and R via Rscript."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from dsbridge_local.cli.main import main
from dsbridge_local.emulator.runtime.source import (
    NotebookNotFound,
    NotebookPathError,
    NotebookSourceError,
    parse_notebook,
    resolve_notebook,
)
from tests.emulator.conftest import HEADER, output, submit, wait_for

needs_r = pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript is not installed")


def test_parse_cells_md_run_and_line_numbers(workspace: Path) -> None:
    file, language = resolve_notebook(workspace, "/jobs/uses_lib")
    parsed = parse_notebook(workspace, file, language)
    assert language == "python"
    assert [cell.workspace_path for cell in parsed.cells] == ["/jobs/lib/helpers", "/jobs/uses_lib"]
    assert parsed.cells[0].code.startswith("def double")
    assert parsed.cells[1].line == 10  # counted in the source file, header included
    assert any("%pip" in warning for warning in parsed.warnings)


def test_resolution_rules(workspace: Path, tmp_path: Path) -> None:
    assert resolve_notebook(workspace, "/jobs/echo.py")[0].name == "echo.py"
    assert resolve_notebook(workspace, "/jobs/report")[1] == "r"
    with pytest.raises(NotebookNotFound):
        resolve_notebook(workspace, "/jobs/missing")
    for bad in ("/../x", "relative", "/jobs/link_out", 5):
        with pytest.raises(NotebookPathError):
            resolve_notebook(workspace, bad)
    (tmp_path / "q.sql").write_text("-- Databricks notebook source\nSELECT 1\n")
    with pytest.raises(NotebookSourceError):
        resolve_notebook(tmp_path, "/q")


def test_run_cycles_escapes_and_foreign_magics(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(HEADER + "# MAGIC %run ./b\n")
    (tmp_path / "b.py").write_text(HEADER + "# MAGIC %run ./a\n")
    (tmp_path / "c.py").write_text(HEADER + "# MAGIC %run ../../../etc/passwd\n")
    (tmp_path / "d.py").write_text(HEADER + "# MAGIC %sql\n# MAGIC SELECT 1\n")
    (tmp_path / "e.py").write_text(HEADER + "# MAGIC %python\n# MAGIC x = 1\n")
    with pytest.raises(NotebookSourceError, match="cycle"):
        parse_notebook(tmp_path, tmp_path / "a.py", "python")
    with pytest.raises(NotebookSourceError, match="not found"):
        parse_notebook(tmp_path, tmp_path / "c.py", "python")
    assert parse_notebook(tmp_path, tmp_path / "e.py", "python").cells[0].code == "x = 1\n"


def test_sql_cells_run_through_local_spark_or_say_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    from dsbridge_local.emulator.runtime import source

    (tmp_path / "d.py").write_text(HEADER + "# MAGIC %sql\n# MAGIC SELECT '${day}' AS d\n")
    monkeypatch.setattr(source, "spark_installed", lambda: False)
    with pytest.raises(NotebookSourceError, match=r"install the spark extra"):
        parse_notebook(tmp_path, tmp_path / "d.py", "python")
    monkeypatch.setattr(source, "spark_installed", lambda: True)
    (cell,) = parse_notebook(tmp_path, tmp_path / "d.py", "python").cells
    assert cell.code == "_sqldf = _dsbridge_sql(\"SELECT '${day}' AS d\")\n"
    (tmp_path / "r.r").write_text(HEADER + "# MAGIC %sql\n# MAGIC SELECT 1\n")
    with pytest.raises(NotebookSourceError, match="SQL cells are not supported"):
        parse_notebook(tmp_path, tmp_path / "r.r", "r")


def test_notebook_cli_success(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "notebook",
            "run",
            str(workspace / "jobs" / "uses_lib.py"),
            "--workspace",
            str(workspace),
            "--param",
            "unused=1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "exit value: 42" in captured.out and "%pip" in captured.out


def test_notebook_cli_failure_and_json(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notebook", "run", str(workspace / "jobs" / "fail.py")]) == 1
    captured = capsys.readouterr()
    assert "ValueError: bad threshold 42" in captured.err and "about to fail" in captured.out
    assert main(["notebook", "run", str(workspace / "jobs" / "echo.py"), "--param", "name=cli", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["status"] == "SUCCESS" and json.loads(outcome["result"])["name"] == "cli"


def test_notebook_cli_usage_errors(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notebook", "run", str(workspace / "nope.py")]) == 2
    assert "no such notebook" in capsys.readouterr().err
    assert main(["notebook", "run", str(workspace / "jobs" / "echo.py"), "--param", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.r
@needs_r
def test_r_notebook_through_the_emulator(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/report", {"n": "7"}), timeout=30)
    assert run["state"]["result_state"] == "SUCCESS", run
    out = output(client, run["tasks"][0]["run_id"])
    assert json.loads(out["notebook_output"]["result"]) == {"square": 49}
    assert "n is 7" in client.get(f"/emulator/runs/{run['tasks'][0]['run_id']}/log").text


@pytest.mark.r
@needs_r
def test_r_notebook_failure_and_defaults(client: httpx.Client) -> None:
    run = wait_for(client, submit(client, "/jobs/fail", {}), timeout=30)  # python control
    assert run["state"]["result_state"] == "FAILED"
    run = wait_for(client, submit(client, "/jobs/fail.r"), timeout=30)
    out = output(client, run["tasks"][0]["run_id"])
    assert run["state"]["result_state"] == "FAILED"
    assert "R went wrong" in out["error"] and "before" in out["error_trace"]
    run = wait_for(client, submit(client, "/jobs/report"), timeout=30)
    assert json.loads(output(client, run["tasks"][0]["run_id"])["notebook_output"]["result"]) == {"square": 4}


@pytest.mark.r
@needs_r
def test_r_notebook_cli(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notebook", "run", str(workspace / "jobs" / "report.r"), "--param", "n=3"]) == 0
    assert '"square":9' in capsys.readouterr().out
