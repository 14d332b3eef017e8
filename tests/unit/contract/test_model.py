"""The contract loader accepts the shipped jobs and explains every mistake: file, field, fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from dsbridge.contract import ContractError, discover_contracts, load_contract

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "notebooks" / "merchant_threshold"


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    target = tmp_path / "merchant_threshold"
    shutil.copytree(EXAMPLE, target)
    return target


def rewrite(job_dir: Path, change) -> Path:
    path = job_dir / "job.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_contracts_are_valid():
    contracts, errors = discover_contracts(REPO / "notebooks")
    assert errors == []
    assert {c.name for c in contracts} >= {"merchant_threshold"}


def test_example_contract_fields(job_dir: Path):
    contract = load_contract(job_dir / "job.yaml")
    assert contract.name == "merchant_threshold"
    assert contract.language == "python"
    assert contract.required == ("merchant_id",)
    assert contract.output.result_file == "curve.json"
    assert contract.timeout_seconds == 20 * 60
    assert contract.expected_minutes is None and contract.expected_seconds is None
    assert contract.notebook_path("/Repos/ds") == "/Repos/ds/merchant_threshold/merchant_threshold"


@pytest.mark.parametrize(
    ("change", "field", "fix_words"),
    [
        (lambda r: r.pop("owner"), "owner", "owning team"),
        (lambda r: r.update(timeout_minutes="soon"), "timeout_minutes", "whole number of minutes"),
        (lambda r: r.update(timeout_minutes=0), "timeout_minutes", "between 1 and 2880"),
        (lambda r: r.update(expected_minutes=0), "expected_minutes", "usually runs"),
        (lambda r: r.update(expected_minutes="ten"), "expected_minutes", "usually runs"),
        (lambda r: r.update(expected_minutes=25), "expected_minutes", "raise timeout_minutes"),
        (lambda r: r.update(colour="blue"), "colour", "remove or rename"),
        (lambda r: r.update(compute={}), "compute", "exactly one of"),
        (
            lambda r: r.update(compute={"existing_cluster_id": "x", "serverless": {}}),
            "compute",
            "exactly one of",
        ),
        (lambda r: r["params"].update(request_id={"type": "string"}), "params", "which dsbridge sets"),
        (lambda r: r["params"].update(BadName={"type": "string"}), "params", "lower_snake_case"),
        (lambda r: r.update(notebook="../../etc/passwd"), "notebook", "file name next to job.yaml"),
        (lambda r: r.update(notebook="missing.py"), "notebook", "same folder"),
        (lambda r: r["params"]["lookback_days"].update(type="integr"), "params.lookback_days", "JSON Schema"),
        (lambda r: r["params"]["lookback_days"].pop("type"), "params.lookback_days.type", "give a type"),
        (lambda r: r["params"]["lookback_days"].update(default=0), "params.lookback_days.default", "default"),
        (lambda r: r.update(required=["nope"]), "required", "declare params.nope"),
        (lambda r: r.update(output={}), "output", "exit_value"),
        (
            lambda r: r["output"]["result_file"].update(name="a/b.json"),
            "output.result_file.name",
            "plain file",
        ),
        (
            lambda r: r.update(callback={"success_path": "http://evil"}),
            "callback.success_path",
            "starting with /",
        ),
    ],
)
def test_invalid_contract_names_field_and_fix(job_dir: Path, change, field: str, fix_words: str):
    path = rewrite(job_dir, change)
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    error = caught.value
    assert error.path == str(path)
    assert error.field == field
    assert fix_words in error.fix
    assert str(path) in str(error) and f"field '{field}'" in str(error)


def test_yaml_syntax_error_gives_line(job_dir: Path):
    path = job_dir / "job.yaml"
    path.write_text("description: x\nparams: [unclosed\n")
    with pytest.raises(ContractError, match=r"line \d+, column \d+") as caught:
        load_contract(path)
    assert caught.value.field == "(file)"


def test_bad_job_folder_name(tmp_path: Path):
    bad = tmp_path / "Bad-Job"
    shutil.copytree(EXAMPLE, bad)
    with pytest.raises(ContractError, match="lower_snake_case"):
        load_contract(bad / "job.yaml")


def test_discover_keeps_good_jobs_next_to_bad(tmp_path: Path):
    shutil.copytree(EXAMPLE, tmp_path / "good_job")
    shutil.copytree(EXAMPLE, tmp_path / "bad_job")
    (tmp_path / "bad_job" / "job.yaml").write_text("owner: [\n")
    contracts, errors = discover_contracts(tmp_path)
    assert [c.name for c in contracts] == ["good_job"]
    assert len(errors) == 1 and "bad_job/job.yaml" in errors[0].path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe not utf-8", "is not UTF-8 text"),
        (b"description: " + b"x" * 300_000, "larger than 256 KiB"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_hostile_contract_files_are_refused_clearly(job_dir: Path, content: bytes, problem: str):
    path = job_dir / "job.yaml"
    path.write_bytes(content)
    with pytest.raises(ContractError, match=problem):
        load_contract(path)


def test_expected_minutes_may_be_a_fraction_and_reaches_the_wait_task(job_dir: Path):
    from dsbridge.dag_factory import build_job_dag

    contract = load_contract(rewrite(job_dir, lambda r: r.update(expected_minutes=0.5)))
    assert contract.expected_seconds == 30
    wait = build_job_dag(contract).get_task("wait")
    assert wait.start_trigger_args.trigger_kwargs["expected_seconds"] == 30


def test_examples_are_read_with_their_expectations(job_dir: Path):
    contract = load_contract(job_dir / "job.yaml")
    first = contract.examples[0]
    assert first.params == {"merchant_id": "m_1042", "lookback_days": 7}
    assert first.expect["exit_value"]["orders"] == 280


@pytest.mark.parametrize(
    ("examples", "field", "problem"),
    [
        ([{"name": "x", "params": {"lookback_days": 7}}], "examples[0].params", "'merchant_id' is a required property"),
        ([{"name": "x", "params": {"merchant_id": "m", "lookback_days": 0}}], "examples[0].params.lookback_days", "0"),
        ([{"name": "x", "params": {"merchant_id": "m", "colour": "red"}}], "examples[0].params", "colour"),
        ([{"name": "x", "params": {"merchant_id": "m"}}] * 2, "examples[1].name", "used twice"),
        (
            [{"name": "x", "params": {"merchant_id": "m"}, "expect": {"failure": "boom", "exit_value": {}}}],
            "examples",
            "",
        ),
        ([{"params": {"merchant_id": "m"}}], "examples", "'name' is a required property"),
    ],
)
def test_an_example_a_request_could_not_send_is_a_contract_error(job_dir: Path, examples, field, problem):
    path = rewrite(job_dir, lambda raw: raw.update(examples=examples))
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    assert caught.value.field.startswith(field), caught.value
    assert problem in str(caught.value)
