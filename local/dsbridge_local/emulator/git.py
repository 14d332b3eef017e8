"""Notebooks from a Git commit (`git_source` + `notebook_task.source: GIT`), as a workspace checks them out.

Databricks clones `git_url` at the run's start and runs the notebook at `notebook_path` (relative to
the repository) from the commit, branch or tag given; a ref it cannot find fails the run, not the
submit. The emulator cannot clone from the internet: it serves the repositories it was given
(`--git-repo URL=PATH`, a local clone per URL) and exports each commit once, with `git archive`,
into its state folder, where the notebook and everything it `%run`s are read from.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.errors import invalid, malformed

GIT_PROVIDERS = (
    "gitHub",
    "bitbucketCloud",
    "azureDevOpsServices",
    "gitHubEnterprise",
    "bitbucketServer",
    "gitLab",
    "gitLabEnterpriseEdition",
    "awsCodeCommit",
)
REFS = ("git_commit", "git_branch", "git_tag")
SHA = re.compile(r"^[0-9a-f]{40}$")
GIT_TIMEOUT_S = 60


class GitCheckoutError(RuntimeError):
    """The run's repository or ref could not be checked out; the message is the run's state message."""


@dataclass(frozen=True)
class GitSource:
    """A validated `git_source`: the repository and exactly one ref."""

    url: str
    provider: str
    ref_kind: str
    ref: str

    def as_dict(self) -> dict[str, str]:
        return {"git_url": self.url, "git_provider": self.provider, self.ref_kind: self.ref}


def parse_git_source(raw: Any) -> GitSource:
    """Check `git_source` as the Jobs API does (field types, provider, one ref); raise ApiError."""
    if not isinstance(raw, dict):
        raise malformed("Could not parse request object: Expected an object for 'git_source'")
    url = raw.get("git_url")
    if not isinstance(url, str) or not url.strip():
        raise invalid("Missing required field: git_source.git_url")
    provider = raw.get("git_provider")
    if not isinstance(provider, str):
        raise invalid("Missing required field: git_source.git_provider")
    known = {p.lower(): p for p in GIT_PROVIDERS}
    if provider.lower() not in known:
        raise invalid(f"git_source.git_provider {provider!r} is not one of {', '.join(GIT_PROVIDERS)}")
    given = [kind for kind in REFS if raw.get(kind) not in (None, "")]
    if len(given) != 1:
        raise invalid("git_source needs exactly one of git_commit, git_branch or git_tag")
    ref = raw[given[0]]
    if not isinstance(ref, str) or len(ref) > 255 or ref.startswith("-") or "\x00" in ref:
        raise invalid(f"git_source.{given[0]} {str(ref)[:80]!r} is not a valid Git reference")
    return GitSource(url=url.strip(), provider=known[provider.lower()], ref_kind=given[0], ref=ref)


def check_git_notebook_path(path: str) -> str:
    """A GIT notebook path is relative to the repository: no leading '/', no '..'."""
    if path.startswith("/"):
        raise invalid(f"Invalid notebook_path {path!r}: with source GIT it is relative to the repository root")
    if any(part == ".." for part in path.split("/")):
        raise invalid(f"Invalid notebook_path {path!r}: '..' is not allowed")
    return path


class GitCheckouts:
    """The repositories the emulator serves, and the commits it has exported so far."""

    def __init__(self, repos: dict[str, Path], root: Path) -> None:
        self.repos = {url.rstrip("/"): path for url, path in repos.items()}
        self.root = root
        self._lock = threading.Lock()

    def checkout(self, source: GitSource) -> Path:
        """The folder holding `source`'s commit (exported on first use); `GitCheckoutError` if none."""
        repo = self.repos.get(source.url.rstrip("/"))
        if repo is None:
            raise GitCheckoutError(
                f"Failed to checkout Git repository {source.url}: the emulator serves no repository at this URL "
                f"(start it with --git-repo {source.url}=PATH)"
            )
        sha = self._resolve(repo, source)
        target = self.root / sha
        with self._lock:
            if not target.is_dir():
                self._export(repo, sha, target)
        return target

    def _resolve(self, repo: Path, source: GitSource) -> str:
        prefix = {"git_commit": "", "git_branch": "refs/heads/", "git_tag": "refs/tags/"}[source.ref_kind]
        if source.ref_kind == "git_commit" and not re.fullmatch(r"[0-9a-f]{7,40}", source.ref):
            raise GitCheckoutError(f"Failed to checkout Git repository: {source.ref!r} is not a commit hash")
        found = _git(repo, "rev-parse", "--verify", "--quiet", f"{prefix}{source.ref}^{{commit}}")
        if found.returncode != 0 or not SHA.match(found.stdout.strip()):
            kind = source.ref_kind.removeprefix("git_")
            raise GitCheckoutError(
                f"Failed to checkout Git repository {source.url}: {kind} {source.ref!r} was not found"
            )
        return found.stdout.strip()

    def _export(self, repo: Path, sha: str, target: Path) -> None:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", sha],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if archive.returncode != 0:
            raise GitCheckoutError(f"Failed to checkout Git repository at {sha}: {archive.stderr.decode()[:300]}")
        partial = target.with_name(target.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(target)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
    )
