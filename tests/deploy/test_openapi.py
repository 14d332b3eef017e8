"""`dsbridge contract export` writes an OpenAPI document that an OpenAPI validator accepts.

Callers generate clients from it, so it must be valid OpenAPI 3.1, not only valid JSON; and it
must describe every job's trigger.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from dsbridge.contract import discover_contracts

REPO = Path(__file__).resolve().parents[2]


def test_the_exported_document_is_valid_openapi_for_every_job(tmp_path: Path):
    out = tmp_path / "openapi.json"
    done = subprocess.run(
        [sys.executable, "-m", "dsbridge_local.cli.main", "contract", "export", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    validate(document)  # raises with the path of the first problem
    assert document["openapi"].startswith("3.1")
    contracts, _ = discover_contracts(REPO / "notebooks")
    paths = " ".join(document["paths"])
    for contract in contracts:
        assert f"/api/v2/dags/{contract.name}/dagRuns" in paths, contract.name


def test_the_validator_refuses_a_broken_document():
    """The check above can fail: a path without responses is not OpenAPI."""
    broken = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {"/x": {"get": {"responses": 7}}}}
    try:
        validate(broken)
    except OpenAPIValidationError:
        return
    raise AssertionError("an invalid document was accepted")
