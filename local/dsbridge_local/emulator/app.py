"""The emulator's HTTP surface: the Jobs API run endpoints, plus health, faults, call counts and logs.

Why Starlette rather than FastAPI's models: the emulator must answer exactly as a workspace does
(its error shapes, its leniency about numbers sent as strings, its 1 MB parameter limit), so
requests are read by hand and checked by `validate`. The provider's async hook sends `GET`
requests with a JSON body instead of a query string, so both are read. All errors are
`{"error_code", "message"}` with the workspace's status codes; the server keeps serving whatever a
request contains.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import html
import json
import shutil
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dsbridge_local.emulator.errors import ApiError, invalid, malformed, not_found
from dsbridge_local.emulator.faults import FaultError, Faults, FaultSettings
from dsbridge_local.emulator.git import GitCheckouts
from dsbridge_local.emulator.logs import log_event
from dsbridge_local.emulator.runner import Supervisor
from dsbridge_local.emulator.runtime import secrets
from dsbridge_local.emulator.runtime.children import PARENT_RUN_HEADER
from dsbridge_local.emulator.shapes import WORKSPACE_ID, render_output, render_run, render_task_run
from dsbridge_local.emulator.stats import CallCounts
from dsbridge_local.emulator.store import Store
from dsbridge_local.emulator.validate import parse_submit, require_run_id
from dsbridge_local.emulator.workspace import Workspace

API_VERSIONS = ("2.1", "2.2")
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_DRAIN_BYTES = 64 * 1024 * 1024
LIST_LIMIT_MAX = 25
LIST_LIMIT_DEFAULT = 20
MULTI_TASK_OUTPUT_MESSAGE = (
    "Retrieving the output of runs with multiple tasks is not supported. "
    "Please retrieve the output of each individual task run instead."
)
MAX_LOG_BYTES = 10 * 1024 * 1024


@dataclass
class EmulatorConfig:
    """Everything `dsbridge emulator` can set."""

    workspace: Path
    state_dir: Path | None = None
    token: str | None = None
    max_concurrent_runs: int = 16
    public_url: str | None = None
    s3_endpoint_url: str | None = None
    kill_grace_s: float = 3.0
    max_body_bytes: int = MAX_BODY_BYTES
    faults: FaultSettings = field(default_factory=FaultSettings)
    # `git_source` URLs the emulator serves, each from a local clone (`--git-repo URL=PATH`).
    git_repos: dict[str, Path] = field(default_factory=dict)
    # Secret scopes for `dbutils.secrets` (`--secrets FILE`); values are redacted from logs and outputs.
    secrets_file: Path | None = None


Handler = Callable[[Request, dict[str, Any]], Awaitable[Any]]


class Emulator:
    """Wires store, supervisor and faults together and exposes them as an ASGI app."""

    def __init__(self, config: EmulatorConfig) -> None:
        if not config.workspace.is_dir():
            raise ValueError(f"workspace {config.workspace} is not a folder")
        self.config = config
        self._own_state = config.state_dir is None
        self.state_dir = (
            Path(tempfile.mkdtemp(prefix="dsbridge-emulator-")) if config.state_dir is None else config.state_dir
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state_dir / "emulator.sqlite3")
        self.faults = Faults(config.faults)
        self.calls = CallCounts()
        child_env = {"AWS_ENDPOINT_URL_S3": config.s3_endpoint_url} if config.s3_endpoint_url else {}
        if config.secrets_file is not None:
            secrets.load(config.secrets_file)  # a malformed file stops the emulator at start, not a run
            child_env[secrets.ENV] = str(config.secrets_file.resolve())
        self.supervisor = Supervisor(
            self.store,
            self.state_dir,
            config.workspace,
            self.faults,
            max_concurrent_runs=config.max_concurrent_runs,
            kill_grace_s=config.kill_grace_s,
            child_env=child_env,
            git=GitCheckouts(config.git_repos, self.state_dir / "git"),
        )
        self.workspace = Workspace(self.state_dir / "workspace", config.workspace)
        lost = self.supervisor.recover()
        log_event(
            "emulator.started",
            workspace=str(config.workspace),
            state_dir=str(self.state_dir),
            recovered_lost_runs=lost,
            auth=bool(config.token),
        )
        self._closed = False
        self.app = self._build_app()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.supervisor.shutdown()
        self.store.close()
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        log_event("emulator.stopped")

    # -- plumbing --------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes: list[Route] = []
        for version in API_VERSIONS:
            prefix = f"/api/{version}/jobs/runs"
            routes += [
                Route(f"{prefix}/submit", self._api(self.submit), methods=["POST"]),
                Route(f"{prefix}/get", self._api(self.get), methods=["GET"]),
                Route(f"{prefix}/get-output", self._api(self.get_output), methods=["GET"]),
                Route(f"{prefix}/cancel", self._api(self.cancel), methods=["POST"]),
                Route(f"{prefix}/list", self._api(self.list_runs), methods=["GET"]),
                Route(f"{prefix}/delete", self._api(self.delete), methods=["POST"]),
            ]
        workspace = "/api/2.0/workspace"
        routes += [
            Route(f"{workspace}/mkdirs", self._api(self.workspace_call("mkdirs")), methods=["POST"]),
            Route(f"{workspace}/import", self._api(self.workspace_call("import_")), methods=["POST"]),
            Route(f"{workspace}/get-status", self._api(self.workspace_call("get_status")), methods=["GET"]),
            Route(f"{workspace}/export", self._api(self.workspace_call("export")), methods=["GET"]),
        ]
        routes += [
            Route("/health", self.health, methods=["GET"]),
            Route("/.well-known/databricks-config", self.host_metadata, methods=["GET"]),
            Route("/emulator/faults", self._api(self.faults_endpoint, faults=False), methods=["GET", "POST"]),
            Route("/emulator/stats", self._api(self.stats_endpoint, faults=False), methods=["GET"]),
            Route("/emulator/runs/{run_id:int}/log", self.run_log, methods=["GET"]),
            Route("/", self.index, methods=["GET"]),
        ]

        def not_found_handler(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            error = ApiError(
                404 if status in (404, 405) else status,
                "ENDPOINT_NOT_FOUND" if status in (404, 405) else "BAD_REQUEST",
                f"No API found for '{request.method} {request.url.path}'",
            )
            return self._error_response(error)

        def unexpected(request: Request, exc: Exception) -> Response:
            log_event("http.internal_error", path=request.url.path, error=repr(exc))
            return self._error_response(ApiError(500, "INTERNAL_ERROR", f"Emulator error: {exc}"))

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                await asyncio.get_running_loop().run_in_executor(None, self.close)

        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: not_found_handler, Exception: unexpected},
            lifespan=lifespan,
        )

    @staticmethod
    def _error_response(error: ApiError) -> Response:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    def _check_auth(self, request: Request) -> None:
        token = self.config.token
        if not token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        supplied: str | None = None
        if scheme.lower() == "bearer" and credentials.strip():
            supplied = credentials.strip()
        elif scheme.lower() == "basic" and credentials.strip():
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            supplied = decoded.partition(":")[2] or None
        if supplied is None:
            raise ApiError(
                401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API."
            )
        if not hmac.compare_digest(supplied.encode("utf-8"), token.encode("utf-8")):
            raise ApiError(403, "PERMISSION_DENIED", "Invalid access token.")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        too_big = False
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            too_big = True
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                too_big = True
            if too_big:
                chunks.clear()
                if size > MAX_DRAIN_BYTES:
                    break
            else:
                chunks.append(chunk)
        if too_big:
            raise ApiError(
                400, "MALFORMED_REQUEST", f"The request body exceeds the limit of {limit // (1024 * 1024)} MB."
            )
        return b"".join(chunks)

    async def _params(self, request: Request) -> dict[str, Any]:
        body = await self._read_body(request)
        data: Any = {}
        if body.strip():
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise malformed("Invalid JSON given in the body of the request - expected a map") from exc
            if not isinstance(data, dict):
                raise malformed("Invalid JSON given in the body of the request - expected a map")
        if request.method == "GET":
            return {**data, **dict(request.query_params)}
        return data

    def _api(self, handler: Handler, faults: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if faults:
                    latency_ms, status = self.faults.draw()
                    if latency_ms:
                        await asyncio.sleep(latency_ms / 1000)
                    if status is not None:
                        self._raise_fault(status)
                self._check_auth(request)
                params = await self._params(request)
                result = await handler(request, params)
            except ApiError as error:
                if error.status >= 500 or error.status == 429:
                    log_event("http.fault", path=request.url.path, status=error.status)
                return self._error_response(error)
            return JSONResponse(result)

        return endpoint

    def _raise_fault(self, status: int) -> None:
        retry_after = {"Retry-After": str(self.faults.retry_after())}
        if status == 429:
            raise ApiError(
                429,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests. Please wait a moment and try again. (injected by the emulator)",
                retry_after,
            )
        raise ApiError(
            503,
            "TEMPORARILY_UNAVAILABLE",
            "The service is temporarily unavailable. (injected by the emulator)",
            retry_after,
        )

    def base_url(self, request: Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        return f"{request.url.scheme}://{host}"

    def _row(self, run_id: int) -> dict[str, Any]:
        row = self.store.get(run_id)
        if row is None:
            raise not_found(run_id)
        return row

    def _counted_row(self, run_id: int, call: str) -> dict[str, Any]:
        """The run's row, with the call counted for its parent run (a task run's calls are its run's)."""
        row = self._row(run_id)
        self.calls.count(row["parent_id"] or row["run_id"], call)
        return row

    # -- Jobs API --------------------------------------------------------------------------------

    async def submit(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        if self.supervisor.closing:
            raise ApiError(503, "TEMPORARILY_UNAVAILABLE", "The emulator is shutting down.")
        spec = parse_submit(params, self.config.workspace, imported=self.workspace.imported)
        spec.parent_run_id = self._parent_run(request)
        run_id, _ = self.supervisor.submit(spec)
        self.calls.count(run_id, "runs/submit")
        if delay := self.faults.submit_answer_delay():
            await asyncio.sleep(delay)  # the run exists; its answer is slow, or lost if the caller gives up
        return {"run_id": run_id}

    def _parent_run(self, request: Request) -> int | None:
        """The run whose notebook calls `dbutils.notebook.run` (our header; Databricks tracks it itself)."""
        raw = request.headers.get(PARENT_RUN_HEADER)
        if raw is None:
            return None
        if not raw.isdigit() or self.store.get(int(raw)) is None:
            raise invalid(f"{PARENT_RUN_HEADER} {raw[:40]!r} is not a run of this emulator")
        return int(raw)

    def serving_at(self, host: str, port: int) -> None:
        """Tell notebooks where this emulator answers, for the runs `dbutils.notebook.run` starts."""
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.supervisor.child_env["DSBRIDGE_EMULATOR_API"] = f"http://{reachable}:{port}"
        if self.config.token:
            self.supervisor.child_env["DSBRIDGE_EMULATOR_TOKEN"] = self.config.token

    def workspace_call(self, name: str) -> Handler:
        """A Workspace API handler: the `Workspace` method `name` with the call's parameters."""
        method = getattr(self.workspace, name)

        async def handler(_request: Request, params: dict[str, Any]) -> Any:
            return await asyncio.to_thread(method, params)  # file I/O, off the event loop

        return handler

    async def get(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        row = self._counted_row(require_run_id(params), "runs/get")
        base = self.base_url(request)
        if row["parent_id"] is None:
            return render_run(row, self.store.tasks(row["run_id"]), base)
        return render_task_run(row, self._row(row["parent_id"]), base)

    async def get_output(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        row = self._counted_row(require_run_id(params), "runs/get-output")
        base = self.base_url(request)
        if row["parent_id"] is None:
            tasks = self.store.tasks(row["run_id"])
            if not row["legacy"] or len(tasks) != 1:
                raise invalid(MULTI_TASK_OUTPUT_MESSAGE)
            output = render_output(tasks[0], row, base)
            output["metadata"] = render_run(row, tasks, base)
            return output
        return render_output(row, self._row(row["parent_id"]), base)

    async def cancel(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        run_id = require_run_id(params)
        if (row := self.store.get(run_id)) is not None:
            self.calls.count(row["parent_id"] or run_id, "runs/cancel")
        try:
            self.supervisor.cancel(run_id)
        except LookupError as exc:
            raise not_found(run_id) from exc
        return {}

    async def delete(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        run_id = require_run_id(params)
        row = self._row(run_id)
        if row["parent_id"] is not None:
            raise invalid("Only a top-level run can be deleted")
        if row["life_cycle"] in ("QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED"):
            raise invalid(f"Run {run_id} is still active; cancel it first")
        self.store.delete([run_id, *(task["run_id"] for task in self.store.tasks(run_id))])
        return {}

    async def list_runs(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        active_only = _flag(params.get("active_only"), "active_only")
        completed_only = _flag(params.get("completed_only"), "completed_only")
        if active_only and completed_only:
            raise invalid("active_only and completed_only cannot both be true")
        limit = _int_param(params.get("limit"), "limit", LIST_LIMIT_DEFAULT)
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise invalid(f"limit must be between 1 and {LIST_LIMIT_MAX}")
        offset = _int_param(params.get("offset"), "offset", 0)
        token = params.get("page_token")
        if token:
            if not (isinstance(token, str) and token.startswith("o:") and token[2:].isdigit()):
                raise invalid("Invalid page_token")
            offset = int(token[2:])
        run_type = params.get("run_type")
        job_id = params.get("job_id")
        rows, has_more = self.store.list_runs(
            active_only=active_only,
            completed_only=completed_only,
            offset=offset,
            limit=limit,
            start_time_from=_opt_int(params.get("start_time_from"), "start_time_from"),
            start_time_to=_opt_int(params.get("start_time_to"), "start_time_to"),
        )
        if run_type not in (None, "", "SUBMIT_RUN"):
            rows, has_more = [], False
        if job_id not in (None, ""):
            wanted = _int_param(job_id, "job_id", 0)
            rows = [row for row in rows if row["job_id"] == wanted]
        expand = _flag(params.get("expand_tasks"), "expand_tasks")
        base = self.base_url(request)
        runs = []
        for row in rows:
            run = render_run(row, self.store.tasks(row["run_id"]) if expand else [], base)
            if not expand:
                run.pop("tasks", None)
            runs.append(run)
        body: dict[str, Any] = {"has_more": has_more}
        if runs:
            body["runs"] = runs
        if has_more:
            body["next_page_token"] = f"o:{offset + limit}"
        if offset > 0:
            body["prev_page_token"] = f"o:{max(0, offset - limit)}"
        return body

    # -- emulator extras -------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "closing": self.supervisor.closing, **self.supervisor.counts()})

    async def host_metadata(self, request: Request) -> Response:
        return JSONResponse({"workspace_id": WORKSPACE_ID})

    async def faults_endpoint(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        if request.method == "GET":
            return self.faults.snapshot()
        try:
            settings = self.faults.update(params)
        except FaultError as exc:
            raise invalid(str(exc)) from exc
        log_event("faults.updated", **settings)
        return settings

    async def stats_endpoint(self, request: Request, params: dict[str, Any]) -> dict[str, Any]:
        """Calls made about one run (`?run_id=`, a task run's id gives its run's), or the totals."""
        if params.get("run_id") in (None, ""):
            return self.calls.summary()
        row = self._row(require_run_id(params))
        return self.calls.of(row["parent_id"] or row["run_id"])

    async def run_log(self, request: Request) -> Response:
        try:
            self._check_auth(request)
            run_id = int(request.path_params["run_id"])
            row = self._row(run_id)
        except ApiError as error:
            return self._error_response(error)
        rows = [row] if row["parent_id"] is not None else self.store.tasks(run_id)
        parts = []
        for task in rows:
            text = _read_log(task["log_file"])
            parts.append(text if len(rows) == 1 else f"===== task {task['task_key']} ({task['run_id']}) =====\n{text}")
        return PlainTextResponse("\n".join(parts))

    async def index(self, request: Request) -> Response:
        try:
            self._check_auth(request)
        except ApiError as error:
            return self._error_response(error)
        rows, _ = self.store.list_runs(
            active_only=False, completed_only=False, offset=0, limit=50, start_time_from=None, start_time_to=None
        )
        items = "".join(
            f"<tr><td>{row['run_id']}</td><td>{html.escape(row['run_name'])}</td><td>{row['life_cycle']}</td>"
            f"<td>{row['result_state'] or ''}</td><td>{html.escape(row['state_message'] or '')}</td>"
            f"<td><a href='/emulator/runs/{row['run_id']}/log'>log</a></td></tr>"
            for row in rows
        )
        return HTMLResponse(
            "<!doctype html><title>dsbridge Databricks emulator</title><h1>Recent runs</h1>"
            "<table><tr><th>run_id</th><th>name</th><th>life cycle</th><th>result</th><th>message</th>"
            f"<th></th></tr>{items}</table>"
        )


def _read_log(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_LOG_BYTES + 1)
    except OSError:
        return ""
    text = data[:MAX_LOG_BYTES].decode("utf-8", errors="replace")
    return text + ("\n[log truncated]\n" if len(data) > MAX_LOG_BYTES else "")


def _flag(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(f"Invalid value for {name}: expected true or false")


def _int_param(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 18:
        number = int(value)
    else:
        raise invalid(f"Invalid value for {name}: expected a non-negative integer")
    if number < 0:
        raise invalid(f"Invalid value for {name}: expected a non-negative integer")
    return number


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None or value == "" else _int_param(value, name, 0)


def create_app(config: EmulatorConfig) -> tuple[Emulator, Starlette]:
    emulator = Emulator(config)
    return emulator, emulator.app
