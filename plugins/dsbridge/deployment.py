"""Which version of a job a workspace notebook is: the deployment mark `dsbridge deploy` writes.

In `workspace` mode (`DSBRIDGE_NOTEBOOK_SOURCE=workspace`) Databricks runs the notebook imported
into the workspace, and `submit` refuses to run it unless it was deployed from the same contract
and notebook Airflow validated. Workspace objects carry no tags, so the mark is the notebook's last
line, a comment: the job and a digest of its `job.yaml` and notebook as deployed.
"""

from __future__ import annotations

import hashlib
import json

from dsbridge.contract import JobContract

MARK = "# dsbridge-deployed: "


def contract_digest(contract: JobContract) -> str:
    """sha256 of the job's contract and notebook, the pair Airflow validated."""
    digest = hashlib.sha256()
    digest.update(contract.path.read_bytes())  # the job.yaml
    digest.update(b"\0")
    digest.update(contract.notebook_file.read_bytes())
    return digest.hexdigest()


def marked_source(contract: JobContract) -> str:
    """The notebook as `dsbridge deploy` imports it: its source plus the deployment mark."""
    source = contract.notebook_file.read_text(encoding="utf-8")
    mark = json.dumps({"job": contract.name, "contract_sha256": contract_digest(contract)}, sort_keys=True)
    return f"{source.rstrip()}\n\n{MARK}{mark}\n"


def deployed_digest(source: str) -> str | None:
    """The contract digest a deployed notebook was marked with, or None if it carries no mark."""
    for line in reversed(source.rstrip().splitlines()[-5:]):
        if line.startswith(MARK):
            try:
                digest = json.loads(line[len(MARK) :]).get("contract_sha256")
            except (ValueError, AttributeError):
                return None
            return digest if isinstance(digest, str) else None
    return None


def stale_deployment(contract: JobContract, path: str, source: str | None) -> str | None:
    """Why the notebook at `path` must not run for `contract` (None when it is the deployed version)."""
    fix = "run `dsbridge deploy` from the commit Airflow runs (docs/deploy.md)"
    if source is None:
        return f"job {contract.name}: no notebook is deployed at {path}; {fix}"
    found = deployed_digest(source)
    if found is None:
        return f"job {contract.name}: the notebook at {path} was not deployed by dsbridge deploy (no mark); {fix}"
    expected = contract_digest(contract)
    if found != expected:
        return (
            f"job {contract.name}: the notebook at {path} was deployed from another version of the job "
            f"(contract {found[:12]}, Airflow has {expected[:12]}); {fix}"
        )
    return None
