"""One request as a DAG run sees it: its id, attempt, parameters and S3 home.

A request is (job, request id) *and* its parameters: the first DAG run that uses a request id owns
it (see `dsbridge.ledger`), and a clear of that DAG run is a new *attempt* at the same request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dsbridge.contract import JobContract
from dsbridge.contract.params import request_id_for
from dsbridge.settings import load_settings

# Conf keys dsbridge itself understands besides the contract's parameters.
CONF_KEYS = ("request_id",)


@dataclass(frozen=True)
class Request:
    """What identifies one request, and where its output and records live."""

    job: str
    request_id: str
    dag_run_id: str
    attempt: int
    conf: dict[str, Any]
    output_path: str
    params: dict[str, Any] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()

    @property
    def params_digest(self) -> str:
        """The parameters exactly as asked (the conf, without the request id), hashed in canonical
        JSON: equal digests mean the same request. Defaults are not filled in, so the digest needs
        no contract and a resent request compares equal to itself."""
        asked = {k: v for k, v in self.conf.items() if k not in CONF_KEYS}
        canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


def attempt_of(dag_run: Any) -> int:
    """How many times the DAG run was cleared: each clear is a new attempt at the request."""
    return int(getattr(dag_run, "clear_number", 0) or 0)


def request_of(context: Any, contract: JobContract) -> Request:
    """The request of this DAG run; `ValueError` (naming the fix) for an unusable request id."""
    dag_run = context["dag_run"]
    conf = dict(dag_run.conf or {})
    params = context["params"]
    request_id = request_id_for(dag_run.run_id, params.get("request_id"))
    return Request(
        job=contract.name,
        request_id=request_id,
        dag_run_id=dag_run.run_id,
        attempt=attempt_of(dag_run),
        conf=conf,
        output_path=load_settings().output_path(contract.name, request_id),
        params={name: params.get(name) for name in contract.params},
        unknown=tuple(sorted(k for k in conf if k not in contract.params and k not in CONF_KEYS)),
    )


def run_name(job: str, request_id: str) -> str:
    """Every Databricks run of a request carries this name, so `runs/list` can find them."""
    return f"dsbridge {job} {request_id}"
