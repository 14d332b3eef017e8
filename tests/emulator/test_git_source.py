"""Notebooks from a Git commit: `git_source` + `source: GIT`, through the official databricks-sdk.

A run at a commit runs that commit's notebook (and what it `%run`s), not the working tree's; a
branch or tag resolves as Git does; a ref or repository the emulator does not have fails the run
(not the submit) with a message naming it, as a workspace does; malformed `git_source` is refused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue
from databricks.sdk.service import jobs

from dsbridge_local.emulator.app import EmulatorConfig
from dsbridge_local.emulator.server import start_background
from tests.emulator.conftest import HEADER, SEP, TOKEN, sdk_finished

GIT_URL = "https://github.com/acme/notebooks.git"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def commit_notebook(repo: Path, answer: str) -> str:
    (repo / "jobs").mkdir(parents=True, exist_ok=True)
    (repo / "jobs" / "lib.py").write_text(HEADER + f"ANSWER = {answer!r}\n")
    cells = ["# MAGIC %run ./lib\n", "dbutils.notebook.exit(ANSWER)\n"]
    (repo / "jobs" / "answer.py").write_text(HEADER + SEP.join(cells))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", f"answer {answer}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    path = tmp_path_factory.mktemp("git") / "notebooks"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    first = commit_notebook(path, "first")
    git(path, "tag", "v1")
    second = commit_notebook(path, "second")
    (path / "jobs" / "lib.py").write_text(HEADER + "ANSWER = 'uncommitted'\n")  # never what a commit runs
    return {"path": path, "first": first, "second": second}


@pytest.fixture(scope="module")
def ws(repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkspaceClient]:
    workspace = tmp_path_factory.mktemp("empty-workspace")
    config = EmulatorConfig(
        workspace=workspace,
        state_dir=tmp_path_factory.mktemp("git-state"),
        token=TOKEN,
        git_repos={GIT_URL: Path(repo["path"])},
    )
    server = start_background(config)
    try:
        yield WorkspaceClient(host=server.url, token=TOKEN)
    finally:
        server.stop()


def run_at(ws: WorkspaceClient, url: str = GIT_URL, **ref: str) -> tuple[jobs.Run, str | None]:
    submitted = ws.jobs.submit(
        run_name="git",
        git_source=jobs.GitSource(git_url=url, git_provider=jobs.GitProvider.GIT_HUB, **ref),
        tasks=[
            jobs.SubmitTask(
                task_key="answer",
                notebook_task=jobs.NotebookTask(notebook_path="jobs/answer", source=jobs.Source.GIT),
            )
        ],
    )
    run = sdk_finished(ws, submitted.run_id, timeout=30)
    assert run.tasks
    out = ws.jobs.get_run_output(run.tasks[0].run_id)
    return run, (out.notebook_output.result if out.notebook_output else None) or out.error


@pytest.mark.parametrize(
    ("ref", "answer"),
    [({"git_commit": "first"}, "first"), ({"git_branch": "main"}, "second"), ({"git_tag": "v1"}, "first")],
)
def test_the_notebook_of_the_given_ref_runs_with_its_own_includes(ws, repo, ref, answer):
    kind, value = next(iter(ref.items()))
    value = str(repo[value]) if kind == "git_commit" else value
    run, result = run_at(ws, **{kind: value})
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert result == answer  # the commit's lib.py, not the working tree's


def test_an_unknown_commit_fails_the_run_naming_it(ws):
    run, error = run_at(ws, git_commit="deadbeef" * 5)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert error and "Failed to checkout Git repository" in error and "deadbeef" in error


def test_a_repository_the_emulator_does_not_serve_fails_the_run_saying_how_to_serve_it(ws, repo):
    run, error = run_at(ws, url="https://github.com/acme/other.git", git_commit=str(repo["first"]))
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert error and "--git-repo https://github.com/acme/other.git=PATH" in error


@pytest.mark.parametrize(
    ("git_source", "path", "message"),
    [
        ({"git_url": GIT_URL, "git_provider": "gitHub"}, "jobs/answer", "exactly one of git_commit"),
        ({"git_url": GIT_URL, "git_provider": "svn", "git_commit": "abc1234"}, "jobs/answer", "git_provider"),
        ({"git_url": GIT_URL, "git_provider": "gitHub", "git_commit": "abc1234"}, "/jobs/answer", "relative"),
        ({"git_url": GIT_URL, "git_provider": "gitHub", "git_commit": "abc1234"}, "../jobs/answer", "'..'"),
    ],
)
def test_malformed_git_sources_are_refused_at_submit(ws, git_source, path, message):
    body = {
        "run_name": "bad",
        "git_source": git_source,
        "tasks": [{"task_key": "t", "notebook_task": {"notebook_path": path, "source": "GIT"}}],
    }
    with pytest.raises(InvalidParameterValue, match=message):
        ws.api_client.do("POST", "/api/2.2/jobs/runs/submit", body=body)


@pytest.mark.parametrize(
    ("entry", "message"), [("no-equals-sign", "must be URL=PATH"), (f"{GIT_URL}=/nonexistent", "not a Git repository")]
)
def test_the_cli_refuses_a_git_repo_it_cannot_serve(tmp_path, capsys, entry, message):
    from dsbridge_local.cli.main import main

    code = main(["emulator", "--workspace", str(tmp_path), "--port", "1", "--git-repo", entry])
    assert code == 2
    assert message in capsys.readouterr().err
