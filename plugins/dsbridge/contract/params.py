"""The contract's parameters as Airflow `Param`s, so the REST API answers bad `conf` with 400."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from airflow.sdk import Param

from dsbridge.contract.model import REQUEST_ID_PATTERN, JobContract

_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def job_params(contract: JobContract) -> dict[str, Param]:
    """One `Param` per contract parameter, plus the optional `request_id`."""
    params: dict[str, Param] = {
        "request_id": Param(
            None,
            description=(
                "Request id used in the S3 output path and the callback. Defaults to the DAG run id "
                "(the optimization service sets dag_run_id to its request id)."
            ),
            type=["null", "string"],
            pattern=REQUEST_ID_PATTERN,
        )
    }
    for name, schema in contract.params.items():
        schema = dict(schema)
        description = schema.pop("description", None)
        default: dict[str, Any] = {}
        if "default" in schema:
            default["default"] = schema.pop("default")
        elif name not in contract.required:
            # Optional without a default: null is allowed and the notebook sees an empty widget.
            default["default"] = None
            schema["type"] = _with_null(schema.get("type"))
            if "enum" in schema and None not in schema["enum"]:
                schema["enum"] = [*schema["enum"], None]
        # A required parameter has no default, so a request without it is answered 400.
        params[name] = Param(description=description, **default, **schema)
    return params


def _with_null(json_type: Any) -> Any:
    if json_type is None:
        return ["null", "string", "number", "integer", "boolean", "array", "object"]
    types = json_type if isinstance(json_type, list) else [json_type]
    return types if "null" in types else ["null", *types]


def request_id_for(run_id: str, requested: str | None) -> str:
    """The request id: the caller's, or the run id made safe (and still unique) for S3 keys."""
    if requested:
        if not _REQUEST_ID_RE.match(requested):
            raise ValueError(f"request_id {requested!r} must match {REQUEST_ID_PATTERN}")
        return requested
    if _REQUEST_ID_RE.match(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return f"{_UNSAFE_CHARS.sub('_', run_id)[:100].lstrip('._-') or 'run'}-{digest}"


def safe_request_id(run_id: str, requested: str | None) -> str:
    """`request_id_for`, falling back to the run id when the requested id is unusable."""
    try:
        return request_id_for(run_id, requested)
    except ValueError:
        return request_id_for(run_id, None)
