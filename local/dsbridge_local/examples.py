"""Run a job's examples (`examples:` in job.yaml) and judge what came out, before anything is deployed.

Each example runs the notebook with the emulator's runtime and the widgets `submit` would give it
(the parameters with their defaults, the request id, an output path), writing into a local DBFS
folder instead of S3. What came out is judged the way `collect` judges a real run -- the exit value
and result file against the output contract -- and then against the example's own expectations:
fields that must be equal, JSON Schemas that must hold, or a failure whose message must contain a
text. Every problem names the job, the example and the field.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsbridge.contract import Example, JobContract
from dsbridge.operators.collect import OutputInvalid, check_exit_value, check_result_file, check_schema
from dsbridge.operators.submit import base_parameters
from dsbridge_local.cli.notebook import run_notebook

OUTPUT_ROOT = "dbfs:/dsbridge-examples"


@dataclass
class ExampleResult:
    """How one example went: its problems (none means it passed) and the notebook's log."""

    job: str
    example: str
    problems: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems

    def report(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.job} / {self.example}"
        return "\n".join([head, *(f"      {problem}" for problem in self.problems)])


def request_params(contract: JobContract, example: Example) -> dict[str, Any]:
    """The parameters a request with `example.params` has once Airflow filled in the defaults."""
    defaults = {name: schema.get("default") for name, schema in contract.params.items()}
    return {**defaults, **example.params}


def run_example(contract: JobContract, example: Example, index: int, timeout: float = 600) -> ExampleResult:
    result = ExampleResult(contract.name, example.name)
    request_id = f"example-{index}"
    output_path = f"{OUTPUT_ROOT}/{contract.name}/{request_id}/"
    widgets = base_parameters(contract.name, request_id, output_path, request_params(contract, example))
    with tempfile.TemporaryDirectory(prefix="dsbridge-example-") as tmp:
        dbfs = Path(tmp) / "dbfs"
        outcome, result.log = run_notebook(
            contract.notebook_file, widgets, workspace=contract.path.parent.parent, timeout=timeout, dbfs_root=dbfs
        )
        written = dbfs / output_path.removeprefix("dbfs:/")
        result.problems = judge(contract, example, outcome.status, outcome.result, outcome.error, written)
    return result


def judge(
    contract: JobContract, example: Example, status: str, exit_text: str | None, error: str | None, written: Path
) -> list[str]:
    """What is wrong with one run of `example` (an empty list when nothing is)."""
    expect = example.expect
    if "failure" in expect:
        if status == "SUCCESS":
            return [f"expected a failure containing {expect['failure']!r}, but the notebook succeeded ({exit_text!r})"]
        if expect["failure"] not in (error or ""):
            return [f"expected the error to contain {expect['failure']!r}, but it was: {error}"]
        return []
    if status != "SUCCESS":
        return [f"the notebook failed: {error}"]
    output = contract.output
    problems: list[str] = []
    if output.exit_value_schema is not None or output.result_file is None or _wants(expect, "exit_value"):
        try:
            value = check_exit_value({"notebook_output": {"result": exit_text}}, output)
        except OutputInvalid as exc:
            problems.append(str(exc))
        else:
            problems += _expectations(value, expect, "exit_value", "the exit value")
    if output.result_file is not None:
        path = written / output.result_file
        if not path.is_file():
            problems.append(f"the result file {output.result_file} was not written under output_path")
        else:
            try:
                value = check_result_file(path.read_bytes(), output)
            except OutputInvalid as exc:
                problems.append(str(exc))
            else:
                problems += _expectations(value, expect, "result_file", "the result file")
    return problems


def _wants(expect: dict[str, Any], what: str) -> bool:
    return what in expect or f"{what}_matches" in expect


def _expectations(value: Any, expect: dict[str, Any], what: str, label: str) -> list[str]:
    problems = []
    for name, wanted in (expect.get(what) or {}).items():
        if not isinstance(value, dict) or name not in value:
            problems.append(f"{label} has no field {name!r} (expected {json.dumps(wanted)})")
        elif value[name] != wanted:
            problems.append(f"{label} field {name!r}: expected {json.dumps(wanted)}, got {json.dumps(value[name])}")
    if f"{what}_matches" in expect:
        try:
            check_schema(value, expect[f"{what}_matches"], f"{label} (example check)")
        except OutputInvalid as exc:
            problems.append(str(exc))
    return problems


def run_examples(contract: JobContract, only: list[str] | None = None, timeout: float = 600) -> list[ExampleResult]:
    """Run the job's examples (those named in `only`, or all), in order."""
    chosen = [(i, e) for i, e in enumerate(contract.examples) if not only or e.name in only]
    return [run_example(contract, example, index, timeout) for index, example in chosen]
