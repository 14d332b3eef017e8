"""Every job's examples hold (what `make test` guards for data scientists), and breaking a notebook's
output on purpose fails `dsbridge notebook test` with the job, the example and the field named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dsbridge.contract import discover_contracts, load_contract
from dsbridge_local.cli.main import main
from dsbridge_local.examples import run_examples

REPO = Path(__file__).resolve().parents[2]
CONTRACTS, _ = discover_contracts(REPO / "notebooks")


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.name for c in CONTRACTS])
def test_every_shipped_job_has_examples_and_they_pass(contract):
    assert contract.examples, f"{contract.name} ships without examples"
    results = run_examples(contract, timeout=120)
    failed = [r for r in results if not r.passed]
    assert not failed, "\n".join(r.report() + "\n" + r.log[-2000:] for r in failed)


def test_renaming_an_output_field_fails_the_examples_naming_job_example_and_field(tmp_path, capsys):
    shutil.copytree(REPO / "notebooks" / "merchant_threshold", tmp_path / "merchant_threshold")
    notebook = tmp_path / "merchant_threshold" / "merchant_threshold.py"
    source = notebook.read_text()
    assert '"threshold": best["threshold"]' in source
    notebook.write_text(source.replace('"threshold": best["threshold"]', '"cutoff": best["threshold"]'))

    assert main(["notebook", "test", "merchant_threshold", "--notebooks", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  merchant_threshold / a week of a merchant's orders" in out
    assert "'threshold' is a required property" in out
    assert "0 of 2 example(s) passed" in out


def test_an_expected_failure_passes_only_with_its_message(tmp_path):
    shutil.copytree(REPO / "notebooks" / "merchant_threshold", tmp_path / "merchant_threshold")
    job = tmp_path / "merchant_threshold" / "job.yaml"
    job.write_text(
        job.read_text().split("\nexamples:")[0]
        + """
examples:
  - name: fails as promised
    params: {merchant_id: m_1}
    expect: {failure: "boom in the notebook"}
  - name: fails with another message
    params: {merchant_id: m_1}
    expect: {failure: "something else"}
"""
    )
    notebook = tmp_path / "merchant_threshold" / "merchant_threshold.py"
    notebook.write_text(notebook.read_text() + "\n# COMMAND ----------\n\nraise RuntimeError('boom in the notebook')\n")
    notebook.write_text(notebook.read_text().replace("dbutils.notebook.exit(", "print(", 1))
    passed, other = run_examples(load_contract(job), timeout=120)
    assert passed.passed, passed.report()
    assert not other.passed and "boom in the notebook" in other.report()


def test_unknown_job_or_example_is_named(capsys):
    assert main(["notebook", "test", "no_such_job"]) == 1
    assert "no job named 'no_such_job'" in capsys.readouterr().err
    assert main(["notebook", "test", "merchant_threshold", "--example", "nope"]) == 1
    assert "no example named ['nope']" in capsys.readouterr().err
