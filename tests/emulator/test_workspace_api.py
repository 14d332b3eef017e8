"""The Workspace API subset a deployment uses, through the official databricks-sdk.

Import, get-status and export round-trip a notebook; the API's errors come back as the SDK's
exception classes; an imported notebook is what a run at its path executes, ahead of the
`--workspace` folder, which is never written to.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, ResourceAlreadyExists, ResourceDoesNotExist
from databricks.sdk.service import jobs
from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language, ObjectType

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import start_background
from tests.emulator.conftest import HEADER, TOKEN, sdk_finished


def notebook(answer: str) -> str:
    return base64.b64encode(f"{HEADER}dbutils.notebook.exit({answer!r})\n".encode()).decode()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    (root / "jobs").mkdir()
    (root / "jobs" / "answer.py").write_text(f"{HEADER}dbutils.notebook.exit('from the folder')\n")
    return root


@pytest.fixture(scope="module")
def ws(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceClient]:
    config = EmulatorConfig(workspace=folder, state_dir=tmp_path_factory.mktemp("ws-state"), token=TOKEN)
    server = start_background(config)
    try:
        yield WorkspaceClient(host=server.url, token=TOKEN)
    finally:
        server.stop()


def run(ws: WorkspaceClient, path: str) -> str | None:
    submitted = ws.jobs.submit(
        run_name="t", tasks=[jobs.SubmitTask(task_key="t", notebook_task=jobs.NotebookTask(notebook_path=path))]
    )
    task = sdk_finished(ws, submitted.run_id, timeout=30).tasks[0]
    out = ws.jobs.get_run_output(task.run_id).notebook_output
    return out.result if out else None


def test_import_then_status_and_export_round_trip(ws):
    ws.workspace.mkdirs("/deployed/job")
    content = notebook("imported")
    ws.workspace.import_("/deployed/job/nb", content=content, format=ImportFormat.SOURCE, language=Language.PYTHON)
    status = ws.workspace.get_status("/deployed/job/nb")
    assert (status.object_type, status.language, status.path) == (
        ObjectType.NOTEBOOK,
        Language.PYTHON,
        "/deployed/job/nb",
    )
    assert ws.workspace.get_status("/deployed/job").object_type == ObjectType.DIRECTORY
    assert ws.workspace.export("/deployed/job/nb", format=ExportFormat.SOURCE).content == content
    assert run(ws, "/deployed/job/nb") == "imported"


def test_an_imported_notebook_shadows_the_folder_which_is_never_written(ws, folder):
    assert run(ws, "/jobs/answer") == "from the folder"
    ws.workspace.import_(
        "/jobs/answer", content=notebook("imported"), format=ImportFormat.SOURCE, language=Language.PYTHON
    )
    assert run(ws, "/jobs/answer") == "imported"
    assert "from the folder" in (folder / "jobs" / "answer.py").read_text()


def test_api_errors_are_the_sdks_exceptions(ws):
    ws.workspace.mkdirs("/errors")
    ws.workspace.import_("/errors/nb", content=notebook("x"), format=ImportFormat.SOURCE, language=Language.PYTHON)
    with pytest.raises(ResourceAlreadyExists):
        ws.workspace.import_("/errors/nb", content=notebook("y"), format=ImportFormat.SOURCE, language=Language.PYTHON)
    ws.workspace.import_(
        "/errors/nb", content=notebook("y"), format=ImportFormat.SOURCE, language=Language.PYTHON, overwrite=True
    )
    with pytest.raises(ResourceDoesNotExist):
        ws.workspace.import_("/no/parent/nb", content=notebook("x"), format=ImportFormat.SOURCE, language=Language.R)
    with pytest.raises(ResourceDoesNotExist):
        ws.workspace.get_status("/errors/missing")
    with pytest.raises(InvalidParameterValue, match="language"):
        ws.workspace.import_("/errors/s", content=notebook("x"), format=ImportFormat.SOURCE, language=Language.SQL)
    with pytest.raises(InvalidParameterValue, match=r"'\.\.'"):
        ws.workspace.import_("/errors/../x", content=notebook("x"), format=ImportFormat.SOURCE, language=Language.R)
    with pytest.raises(InvalidParameterValue, match="base64"):
        ws.api_client.do(
            "POST", "/api/2.0/workspace/import", body={"path": "/errors/b", "language": "PYTHON", "content": "%%%"}
        )


REPO = Path(__file__).resolve().parents[2]


def deploy(ws: WorkspaceClient, *args: str) -> int:
    from dsbridge_local.cli.main import main

    return main(["deploy", "--host", ws.config.host, "--token", TOKEN, *args])


def test_dsbridge_deploy_imports_every_job_marked_with_its_contract(ws, capsys):
    from dsbridge.contract import discover_contracts
    from dsbridge.deployment import contract_digest, deployed_digest

    assert deploy(ws, "--notebooks", str(REPO / "notebooks"), "--root", "/cli") == 0
    contracts, _ = discover_contracts(REPO / "notebooks")
    printed = capsys.readouterr().out
    for contract in contracts:
        path = contract.notebook_path("/cli")
        assert path in printed
        source = base64.b64decode(ws.workspace.export(path, format=ExportFormat.SOURCE).content or "").decode()
        assert deployed_digest(source) == contract_digest(contract)
        assert source.startswith(contract.notebook_file.read_text().rstrip())


def test_dsbridge_deploy_stops_on_a_broken_contract_before_importing_anything(ws, tmp_path, capsys):
    import shutil

    shutil.copytree(REPO / "notebooks" / "merchant_threshold", tmp_path / "merchant_threshold")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "job.yaml").write_text("description: [unclosed\n")
    assert deploy(ws, "--notebooks", str(tmp_path), "--root", "/broken-deploy") == 1
    err = capsys.readouterr().err
    assert "nothing deployed; fix these contracts first" in err and "broken" in err
    with pytest.raises(ResourceDoesNotExist):
        ws.workspace.get_status("/broken-deploy/merchant_threshold/merchant_threshold")


def test_dsbridge_deploy_names_an_unknown_job(ws, capsys):
    assert deploy(ws, "--notebooks", str(REPO / "notebooks"), "--job", "no_such_job") == 1
    assert "no job named ['no_such_job']" in capsys.readouterr().err
