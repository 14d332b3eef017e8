"""A small client of the Airflow 3 REST API, used the way the optimization service uses it.

It logs in (`POST /auth/token`), triggers a job with `dag_run_id` = request id, follows the run and
cancels it. The CLI, the demo and the end-to-end tests all go through it, so they exercise exactly
the public interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

TERMINAL_RUN_STATES = ("success", "failed")


class AirflowApiError(RuntimeError):
    """The API answered with an error status; `status` and `detail` say which."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"Airflow API answered {status}: {detail}")


@dataclass
class AirflowClient:
    url: str
    username: str
    password: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def login(self) -> str:
        answer = self._http.post("/auth/token", json={"username": self.username, "password": self.password})
        if answer.status_code >= 400:
            raise AirflowApiError(answer.status_code, _detail(answer))
        self._token = str(answer.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with the bearer token; logs in again once if the token expired."""
        extra_headers = kwargs.pop("headers", None) or {}
        for attempt in range(2):
            token = self._token or self.login()
            headers = {**extra_headers, "Authorization": f"Bearer {token}"}
            answer = self._http.request(method, path, headers=headers, **kwargs)
            if answer.status_code == 401 and attempt == 0:
                self._token = None
                continue
            return answer
        return answer

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.request(method, path, **kwargs)
        if answer.status_code >= 400:
            raise AirflowApiError(answer.status_code, _detail(answer))
        return answer.json() if answer.content else None

    def trigger(self, job: str, conf: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if request_id:
            body["dag_run_id"] = request_id
        return dict(self.call("POST", f"/api/v2/dags/{quote(job)}/dagRuns", json=body))

    def run(self, job: str, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", _run_path(job, run_id)))

    def task_instances(self, job: str, run_id: str) -> dict[str, str | None]:
        answer = self.call("GET", f"{_run_path(job, run_id)}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in answer["task_instances"]}

    def cancel(self, job: str, run_id: str) -> dict[str, Any]:
        """The caller's cancel: mark the run failed (its tasks are killed, the notebook cancelled)."""
        return dict(self.call("PATCH", _run_path(job, run_id), json={"state": "failed"}))

    def wait(
        self,
        job: str,
        run_id: str,
        timeout: float = 600.0,
        poll_seconds: float = 0.5,
        on_change: Callable[[dict[str, str | None]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the run ends (bounded by `timeout`); report task states as they change."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            run = self.run(job, run_id)
            if on_change is not None:
                states = self.task_instances(job, run_id)
                if states != seen:
                    seen = states
                    on_change(states)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            time.sleep(poll_seconds)
        raise TimeoutError(f"run {run_id} of {job} did not end within {timeout:.0f}s")


def _run_path(job: str, run_id: str) -> str:
    return f"/api/v2/dags/{quote(job)}/dagRuns/{quote(run_id, safe='')}"


def _detail(answer: httpx.Response) -> Any:
    try:
        return answer.json().get("detail", answer.text)
    except ValueError:
        return answer.text
