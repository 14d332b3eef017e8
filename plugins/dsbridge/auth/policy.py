"""What the optimization service's API user may do: pure functions over one HTTP request.

Airflow asks its auth manager about a method and an entity, never about the endpoint: "PUT on a
DAG run" covers marking it failed, success or queued, editing its note and clearing it, and "POST
on a DAG run" also creates backfills. So the service's rights are an allowlist of the few routes it
needs, each with the auth-manager calls that route makes, and a cancel is recognised by its exact
query and body. Anything not listed here is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

# The one body a cancel may have, and the states a run can be cancelled in.
CANCEL_BODY = {"state": "failed"}
CANCELLABLE_STATES = frozenset({"queued", "running"})

# The routes the service uses (paths as routed: percent-decoded, without the root path).
_DAG = r"/api/v2/dags/(?P<dag>[^/]+)"
_RUN = _DAG + r"/dagRuns/(?P<run>[^/]+)"
ROUTES: dict[str, re.Pattern[str]] = {
    "dag": re.compile(_DAG + r"(?:/details)?"),
    "runs": re.compile(_DAG + r"/dagRuns"),
    "run": re.compile(_RUN),
    "task_instances": re.compile(_RUN + r"/taskInstances(?:/[^/]+(?:/-?\d+)?)?"),
    "tasks": re.compile(_DAG + r"/tasks(?:/[^/]+)?"),
}
READ_ROUTES = frozenset({"dag", "runs", "run", "task_instances", "tasks"})
# DagAccessEntity names the read routes ask about (None: the DAG itself).
READ_ENTITIES = frozenset({None, "RUN", "TASK_INSTANCE", "TASK"})


@dataclass(frozen=True)
class ApiRequest:
    """The HTTP request being authorised, as the guard recorded it."""

    method: str
    path: str
    query: str = ""
    # The raw body of a PATCH on a DAG run; None when not recorded (other routes, or too large).
    body: bytes | None = None


@dataclass(frozen=True)
class Route:
    kind: str
    dag_id: str
    run_id: str | None = None


@dataclass(frozen=True)
class Decision:
    """Allowed or not; a cancel is allowed only once `cancel_run` is known to be the user's own."""

    allowed: bool
    cancel_run: str | None = None


ALLOW = Decision(True)
DENY = Decision(False)

# (HTTP method, routes, auth-manager method, entities, purpose): all the service may do.
RULES: tuple[tuple[str, frozenset[str], str, frozenset[str | None], str], ...] = (
    ("GET", READ_ROUTES, "GET", READ_ENTITIES, "read"),
    ("POST", frozenset({"runs"}), "POST", frozenset({"RUN"}), "trigger"),
    ("PATCH", frozenset({"run"}), "PUT", frozenset({"RUN"}), "cancel"),
)


def route_of(path: str) -> Route | None:
    """Which of the service's routes `path` is, or None."""
    if any(part in (".", "..") for part in path.split("/")):
        return None
    for kind, pattern in ROUTES.items():
        if found := pattern.fullmatch(path):
            return Route(kind, found["dag"], found.groupdict().get("run"))
    return None


def records_body(method: str, path: str) -> bool:
    """Whether the guard must keep the body: only a PATCH on one DAG run (a possible cancel)."""
    if method != "PATCH":
        return False
    route = route_of(path)
    return route is not None and route.kind == "run"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def is_cancel_body(body: bytes | None) -> bool:
    """Exactly {"state": "failed"}: no note, no other state, no duplicate keys."""
    if body is None:
        return False
    try:
        parsed = json.loads(body, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        return False
    return bool(parsed == CANCEL_BODY)


def is_cancel_query(query: str) -> bool:
    """No query, or only `update_mask=state` (repeated or not)."""
    return all(name == "update_mask" and value == "state" for name, value in parse_qsl(query, keep_blank_values=True))


def decide(
    *,
    method: str,
    entity: str | None,
    dag_id: str | None,
    request: ApiRequest | None,
    job_dags: Collection[str],
) -> Decision:
    """The service user's answer to one auth-manager question about a DAG, during `request`."""
    if request is None or dag_id is None or dag_id not in job_dags:
        return DENY
    route = route_of(request.path)
    if route is None or route.dag_id != dag_id:
        return DENY
    for http_method, routes, auth_method, entities, purpose in RULES:
        if (request.method, method) == (http_method, auth_method) and entity in entities and route.kind in routes:
            return _cancel(request, route) if purpose == "cancel" else ALLOW
    return DENY


def _cancel(request: ApiRequest, route: Route) -> Decision:
    if is_cancel_query(request.query) and is_cancel_body(request.body):
        return Decision(False, cancel_run=route.run_id)
    return DENY


def may_cancel(*, triggered_by: str | None, state: str | None, user_name: str) -> bool:
    """A cancel is the user's own run, still queued or running."""
    return bool(user_name) and triggered_by == user_name and state in CANCELLABLE_STATES
