"""The local stack: S3, PostgreSQL, the Databricks emulator, the optimization service and Airflow.

`up` starts the stack's supervisor (`dsbridge_local.stack.supervisor`), which starts every component in
order and keeps them running; `up` follows its start-up, then writes `stack.json` (every URL, port
and credential a client needs, see docs/stack.md). `down` stops the supervisor, then exactly the
processes it recorded; `status` reports each of them and names the unhealthy ones.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dsbridge.callback.signing import new_secret
from dsbridge_local.ports import port_free
from dsbridge_local.stack import airflow, celery, control, postgres, s3
from dsbridge_local.stack.postgres import EmbeddedPostgres
from dsbridge_local.stack.processes import alive, spawn, stop_group

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BASE_PORT = 28080
# base..base+12, and S3's admin gRPC port at base+11+10000 (see StackConfig.s3_ports).
PORT_SPAN = 13
HIGHEST_BASE_PORT = 65535 - 11 - s3.GRPC_PORT_OFFSET
RESULTS_BUCKET = "dsbridge-results"
HEALTH_TIMEOUT = 180.0
EMULATOR_CONCURRENT_RUNS = 100
# How long `up` follows the supervisor's start-up (each of its steps is bounded on its own).
STARTUP_TIMEOUT = 600.0

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot be brought up (or down); the message says why and what to do."""


def check_database_url(url: str | None) -> None:
    """SQLite cannot serve the stack: refuse it, naming what to do instead."""
    if url is not None and url.split(":", 1)[0].split("+", 1)[0].strip().lower() == "sqlite":
        raise StackError(
            f"--database-url {url!r} is SQLite, which the stack no longer uses: under concurrent requests "
            "Airflow's scheduler, triggerer and dag-processor die with 'database is locked'. Leave out "
            "--database-url (and DSBRIDGE_DATABASE_URL) to use the embedded PostgreSQL, or give --database-url "
            "a PostgreSQL URL, e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/dsbridge"
        )


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which ports and database it uses.

    `database_url=None` means the embedded PostgreSQL under the state dir.
    """

    state_dir: Path = field(default_factory=lambda: REPO / ".dsbridge")
    base_port: int = DEFAULT_BASE_PORT
    database_url: str | None = None
    repo: Path = REPO
    notebooks: Path = REPO / "notebooks"
    # Extra DSBRIDGE_* settings for Airflow's processes (e.g. shorter horizons in tests).
    settings_env: dict[str, str] = field(default_factory=dict)
    # "local" (LocalExecutor) or "celery": `workers` Celery workers on the Redis at `broker_url`.
    executor: str = "local"
    workers: int = 2
    broker_url: str = celery.DEFAULT_BROKER_URL

    def __post_init__(self) -> None:
        check_database_url(self.database_url)
        if self.executor not in celery.EXECUTORS:
            raise StackError(f"--executor {self.executor!r} is not one of: {', '.join(celery.EXECUTORS)}")
        if not 1 <= self.workers <= celery.MAX_WORKERS:
            raise StackError(f"--workers {self.workers} is out of range; use 1..{celery.MAX_WORKERS}")

    @property
    def celery_workers(self) -> list[str]:
        """The stack components that are Celery workers (none with the LocalExecutor)."""
        return celery.worker_names(self.workers) if self.executor == "celery" else []

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def pids_file(self) -> Path:
        return self.state_dir / control.PIDS

    @property
    def config_file(self) -> Path:
        return self.state_dir / "config.json"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self.state_dir / "postgres", self.ports["postgres"])

    @property
    def ports(self) -> dict[str, int]:
        b = self.base_port
        return {"airflow": b, "emulator": b + 1, "service": b + 2, "postgres": b + 12}

    @property
    def s3_ports(self) -> s3.Ports:
        b = self.base_port + 3
        return s3.Ports(
            s3=b,
            s3_grpc=b + 1,
            master=b + 2,
            master_grpc=b + 3,
            volume=b + 4,
            volume_grpc=b + 5,
            filer=b + 6,
            filer_grpc=b + 7,
            admin=b + 8,
            admin_grpc=b + 8 + s3.GRPC_PORT_OFFSET,
        )

    def all_ports(self) -> dict[str, int]:
        ports = dict(self.ports)
        ports.update({f"s3 ({name})": port for name, port in vars(self.s3_ports).items()})
        return ports


def _private_file(path: Path, content: str) -> None:
    path.write_text(content)
    path.chmod(0o600)


def _new_secrets() -> dict[str, str]:
    return {
        "admin_password": secrets.token_urlsafe(12),
        "service_password": secrets.token_urlsafe(12),
        "databricks_token": "dapi" + secrets.token_hex(16),
        "s3_access_key": "dsbridge" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_urlsafe(24),
        "signing_secret": new_secret(),
        "jwt_secret": secrets.token_urlsafe(32),
        "api_secret_key": secrets.token_urlsafe(32),
        # One key for every Airflow process: the scheduler encrypts the trigger kwargs of tasks that
        # start in the triggerer, and the triggerer must decrypt them.
        "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "service_admin_token": secrets.token_urlsafe(32),
    }


def load_secrets(cfg: StackConfig) -> dict[str, str]:
    """Credentials made on the first `up` and kept, so clients keep working across restarts.

    A credential added in a later version is made on the next `up`; the existing ones are kept.
    """
    path = cfg.state_dir / "secrets.json"
    kept: dict[str, str] = dict(json.loads(path.read_text())) if path.exists() else {}
    made = _new_secrets() | kept
    if made != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        _private_file(path, json.dumps(made, indent=2))
    return made


def save_config(cfg: StackConfig) -> None:
    """What the supervisor (another process) needs to rebuild `cfg`; mode 600 (the URL may hold a password)."""
    control.write_private_json(
        cfg.config_file,
        {
            "state_dir": str(cfg.state_dir),
            "base_port": cfg.base_port,
            "database_url": cfg.database_url,
            "repo": str(cfg.repo),
            "notebooks": str(cfg.notebooks),
            "settings_env": cfg.settings_env,
            "executor": cfg.executor,
            "workers": cfg.workers,
            "broker_url": cfg.broker_url,
        },
    )


def load_config(state_dir: Path) -> StackConfig:
    saved = json.loads((state_dir / "config.json").read_text())
    return StackConfig(
        state_dir=Path(saved["state_dir"]),
        base_port=int(saved["base_port"]),
        database_url=saved["database_url"],
        repo=Path(saved["repo"]),
        notebooks=Path(saved["notebooks"]),
        settings_env=dict(saved["settings_env"]),
        executor=saved.get("executor", "local"),
        workers=int(saved.get("workers", 2)),
        broker_url=saved.get("broker_url", celery.DEFAULT_BROKER_URL),
    )


def recorded_pids(cfg: StackConfig) -> dict[str, int]:
    """The current pid of each component, as the supervisor records them."""
    return control.read_pids(cfg.state_dir)


def supervisor_pid(cfg: StackConfig) -> int | None:
    return control.read_supervisor(cfg.state_dir)


def running(cfg: StackConfig) -> dict[str, int]:
    return {name: pid for name, pid in recorded_pids(cfg).items() if alive(pid)}


def check_ports_free(cfg: StackConfig) -> None:
    taken = {name: port for name, port in cfg.all_ports().items() if not port_free(port)}
    if taken:
        listing = ", ".join(f"{port} ({name})" for name, port in taken.items())
        raise StackError(
            f"port(s) already in use on 127.0.0.1: {listing}. Stop what uses them, or choose other "
            f"ports with --base-port (this stack uses {cfg.base_port}..{cfg.base_port + PORT_SPAN - 1})."
        )


def wait_until(check: Callable[[], bool], what: str, timeout: float, log: Path | None = None) -> float:
    """Poll `check` (bounded by `timeout`); return the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return time.monotonic() - began
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-15:])
    raise StackError(f"{what} was not healthy within {timeout:.0f}s; see {log}{tail}")


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


def database_url(cfg: StackConfig) -> str:
    return cfg.database_url or cfg.postgres.url


def stack_description(cfg: StackConfig, creds: dict[str, str]) -> dict[str, Any]:
    """The documented content of stack.json."""
    host = "127.0.0.1"
    service_url = f"http://{host}:{cfg.ports['service']}"
    return {
        "version": 1,
        "airflow": {
            "url": f"http://{host}:{cfg.ports['airflow']}",
            "username": airflow.SERVICE_USER,
            "password": creds["service_password"],
            "database": "embedded-postgresql" if cfg.embedded_database else "postgresql",
        },
        "airflow_admin": {"username": airflow.ADMIN_USER, "password": creds["admin_password"]},
        "emulator": {"url": f"http://{host}:{cfg.ports['emulator']}", "token": creds["databricks_token"]},
        "s3": {
            "endpoint_url": s3.endpoint(host, cfg.s3_ports.s3),
            "access_key_id": creds["s3_access_key"],
            "secret_access_key": creds["s3_secret_key"],
            "bucket": RESULTS_BUCKET,
            "region": "us-east-1",
        },
        "service": {
            "url": service_url,
            "events_url": f"{service_url}/events",
            "signing_secret": creds["signing_secret"],
            "admin_token": creds["service_admin_token"],
        },
        "logs": str(cfg.logs),
        "alerts_file": str(cfg.logs / "alerts.jsonl"),
        "status_file": str(cfg.state_dir / control.STATUS),
    } | _postgres_description(cfg)


def _postgres_description(cfg: StackConfig) -> dict[str, Any]:
    if not cfg.embedded_database:
        return {}
    pg = cfg.postgres
    return {
        "postgres": {
            "url": f"postgresql://{postgres.SUPERUSER}@127.0.0.1:{pg.port}/{postgres.DATABASE}",
            "sqlalchemy_url": pg.url,
            "data_dir": str(pg.data),
        }
    }


def read_stack(cfg: StackConfig) -> dict[str, Any]:
    if not cfg.stack_file.exists():
        raise StackError(f"no stack is up ({cfg.stack_file} is missing); run `dsbridge up` first")
    return dict(json.loads(cfg.stack_file.read_text()))


@dataclass(frozen=True)
class Component:
    """How to start one process of the stack (S3 and PostgreSQL are started by their own modules)."""

    argv: list[str]
    env: dict[str, str]
    log: Path


def components(cfg: StackConfig, creds: dict[str, str], desc: dict[str, Any]) -> dict[str, Component]:
    """Every process but S3 and PostgreSQL, by name, in start order; the supervisor starts each
    the same way on every (re)start."""
    python = sys.executable
    s3_env = {
        "AWS_ENDPOINT_URL_S3": desc["s3"]["endpoint_url"],
        "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    emulator_argv = [
        python,
        "-m",
        "dsbridge_local.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(cfg.ports["emulator"]),
    ]
    emulator_argv += ["--workspace", str(cfg.notebooks), "--state", str(cfg.state_dir / "emulator")]
    # Notebooks stand in for Databricks clusters: mostly asleep, so the local machine can run many.
    emulator_argv += ["--max-concurrent-runs", str(EMULATOR_CONCURRENT_RUNS)]
    if (cfg.repo / ".git").exists():
        # For DSBRIDGE_NOTEBOOK_SOURCE=git with DSBRIDGE_GIT_URL=file://<this checkout> (docs/deploy.md).
        emulator_argv += ["--git-repo", f"file://{cfg.repo}={cfg.repo}"]
    service_argv = [python, "-m", "dsbridge_local.service", "--host", "127.0.0.1", "--port", str(cfg.ports["service"])]
    service_argv += ["--db", str(cfg.state_dir / "service.db")]
    found = {
        "emulator": Component(
            emulator_argv,
            dict(os.environ) | s3_env | {"DSBRIDGE_EMULATOR_TOKEN": creds["databricks_token"]},
            cfg.logs / "emulator.log",
        ),
        "service": Component(
            service_argv,
            dict(os.environ)
            | {
                "DSBRIDGE_SERVICE_SECRETS": creds["signing_secret"],
                "DSBRIDGE_SERVICE_ADMIN_TOKEN": creds["service_admin_token"],
            },
            cfg.logs / "service.log",
        ),
    }
    env = dict(os.environ) | airflow.airflow_env(
        repo=cfg.repo,
        notebooks=cfg.notebooks,
        home=cfg.state_dir / "airflow",
        port=cfg.ports["airflow"],
        database_url=database_url(cfg),
        secrets=creds,
        emulator_url=desc["emulator"]["url"],
        s3={**desc["s3"]},
        service_url=desc["service"]["url"],
        alerts_file=Path(desc["alerts_file"]),
    )
    queue, concurrency = celery.queue_name(cfg.base_port), max(1, airflow.PARALLELISM // cfg.workers)
    if cfg.executor == "celery":
        env |= celery.celery_env(
            queue=queue, broker_url=cfg.broker_url, database_url=database_url(cfg), concurrency=concurrency
        )
    env |= cfg.settings_env
    for name in airflow.COMPONENTS:
        found[f"airflow-{name}"] = Component(airflow.component_argv(name), env, cfg.logs / f"airflow-{name}.log")
    for index, name in enumerate(cfg.celery_workers, start=1):
        found[name] = Component(celery.worker_argv(index, queue, concurrency), env, cfg.logs / f"{name}.log")
    # The sweep that gives every ended request its final event; it needs Airflow's database.
    found["reconciler"] = Component([python, "-m", "dsbridge.reconciler"], env, cfg.logs / "reconciler.log")
    return found


def _poll(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def supervisor_running(cfg: StackConfig) -> bool:
    pid = supervisor_pid(cfg)
    return pid is not None and alive(pid)


def _component_status(cfg: StackConfig, name: str) -> dict[str, Any]:
    return dict(((control.read_status(cfg.state_dir) or {}).get("components") or {}).get(name) or {})


def stop_component(cfg: StackConfig, name: str, *, hard: bool = False) -> None:
    """Stop one component and keep it stopped: politely, or with SIGKILL at once (`hard`), as a
    crash would. It is held (the supervisor does not restart it) until `start_component`."""
    pids = recorded_pids(cfg)
    pid = pids.get(name)
    if pid is None:
        raise StackError(f"no component {name!r}; the stack has {sorted(pids)}")
    control.hold(cfg.state_dir, name)
    _stop_one(cfg, name, pid, hard=hard)
    if supervisor_running(cfg):
        # The supervisor marks it stopped once it saw it go (then a start request cannot race the exit).
        _poll(lambda: _component_status(cfg, name).get("state") in ("stopped", "failed"), 20.0)


def start_component(cfg: StackConfig, name: str) -> int:
    """Start a component again (after `stop_component`, or one that failed): the supervisor starts
    it and releases the hold. Returns its new pid."""
    if not supervisor_running(cfg):
        raise StackError(
            f"the stack's supervisor is not running, so nothing can start {name}; "
            "run `dsbridge down`, then `dsbridge up`"
        )
    if not _component_status(cfg, name):
        known = sorted((control.read_status(cfg.state_dir) or {}).get("components") or {})
        raise StackError(f"no component {name!r}; the stack has {known}")
    control.request_start(cfg.state_dir, name)

    def started() -> bool:
        info = _component_status(cfg, name)
        return (
            not control.start_requested(cfg.state_dir, name)
            and info.get("state") == "running"
            and info.get("pid") is not None
            and alive(int(info["pid"]))
        )

    if not _poll(started, 60.0):
        raise StackError(f"the supervisor did not start {name} within 60s; see {cfg.logs / 'supervisor.log'}")
    return int(_component_status(cfg, name)["pid"])


def _stop_one(cfg: StackConfig, name: str, pid: int, *, hard: bool = False) -> None:
    if hard:
        stop_group(pid, grace=0.0)
    elif name == "s3":
        s3.stop(pid, ports=cfg.s3_ports)
    elif name == "postgres":
        postgres.stop(pid)
    else:
        stop_group(pid, grace=20.0)


def up(cfg: StackConfig, progress: Progress = print) -> dict[str, Any]:
    """Start the stack (or say it is already up) and return the content of stack.json."""
    already, supervised = running(cfg), supervisor_running(cfg)
    if already and supervised and cfg.stack_file.exists():
        progress(f"stack is already up ({', '.join(sorted(already))}); `dsbridge down` stops it")
        return read_stack(cfg)
    if already and cfg.stack_file.exists():
        raise StackError(
            "the stack runs without its supervisor, so nothing restarts a component that dies; "
            "run `dsbridge down`, then `dsbridge up`"
        )
    if already or supervised:
        parts = sorted(already) + (["supervisor"] if supervised else [])
        raise StackError(f"a partial stack is running ({parts}); run `dsbridge down` first")
    check_ports_free(cfg)
    if cfg.executor == "celery":
        try:
            celery.check_broker(cfg.broker_url)
        except celery.BrokerUnreachable as exc:
            raise StackError(str(exc)) from None
    cfg.logs.mkdir(parents=True, exist_ok=True)
    for stale in (cfg.pids_file, cfg.state_dir / control.STATUS, cfg.state_dir / control.SUPERVISOR_PID):
        stale.unlink(missing_ok=True)
    control.clear(cfg.state_dir)
    creds = load_secrets(cfg)
    desc = stack_description(cfg, creds)
    save_config(cfg)
    began = time.monotonic()
    try:
        supervisor = _start_supervisor(cfg)
        _follow_startup(cfg, supervisor, progress)
    except BaseException:
        progress("start-up failed; stopping what was started")
        down(cfg, progress=lambda _msg: None)
        raise
    _private_file(cfg.stack_file, json.dumps(desc, indent=2))
    progress(f"stack is up in {time.monotonic() - began:.0f}s; details in {cfg.stack_file}")
    return desc


def _start_supervisor(cfg: StackConfig) -> int:
    # The runtime and the local kit, as the checkout has them (installed or not).
    code = [str(cfg.repo / "plugins"), str(cfg.repo / "local")]
    path = os.pathsep.join(p for p in (*code, os.environ.get("PYTHONPATH")) if p)
    pid = spawn(
        [sys.executable, "-m", "dsbridge_local.stack.supervisor", "--state-dir", str(cfg.state_dir)],
        env=dict(os.environ) | {"PYTHONPATH": path},
        log_path=cfg.logs / "supervisor.log",
        cwd=cfg.state_dir,
    )
    control.record_supervisor(cfg.state_dir, pid)
    return pid


def _follow_startup(cfg: StackConfig, supervisor: int, progress: Progress) -> None:
    """Print the supervisor's start-up steps as they come; return once it says the stack is up."""
    shown = 0
    deadline = time.monotonic() + STARTUP_TIMEOUT
    log = cfg.logs / "supervisor.log"
    while time.monotonic() < deadline:
        report = control.read_status(cfg.state_dir) or {}
        steps = list(report.get("steps") or [])
        for line in steps[shown:]:
            progress(line)
        shown = len(steps)
        phase = (report.get("supervisor") or {}).get("phase")
        if phase == "up":
            return
        if phase == "failed":
            raise StackError(str(report.get("error")))
        if not alive(supervisor):
            raise StackError(f"the supervisor exited while starting the stack; see {log}{_tail(log)}")
        time.sleep(0.2)
    raise StackError(f"the stack did not come up within {STARTUP_TIMEOUT:.0f}s; see {log}")


def _tail(log: Path, lines: int = 15) -> str:
    if not log.exists():
        return ""
    return "\n  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-lines:])


# `down` stops these tiers in order, the components of a tier together: Airflow and the reconciler
# first (they use the others), PostgreSQL last but one, S3 last.
def _tier(name: str) -> int:
    if name.startswith("airflow") or name == "reconciler":
        return 0
    return {"postgres": 2, "s3": 3}.get(name, 1)


def down(cfg: StackConfig, progress: Progress = print) -> list[str]:
    """Stop the supervisor (so nothing is restarted), then every process it recorded, and only those."""
    stopped = []
    supervisor = supervisor_pid(cfg)
    if supervisor is not None and alive(supervisor):
        stop_group(supervisor, grace=15.0)
        progress(f"  stopped supervisor (pid {supervisor})")
        stopped.append("supervisor")
    # Read after the supervisor is gone: it may have restarted a component meanwhile.
    live = {name: pid for name, pid in recorded_pids(cfg).items() if alive(pid)}
    if not live and not stopped:
        progress("no stack is running")
    for tier in sorted({_tier(name) for name in live}):
        names = [name for name in live if _tier(name) == tier]
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda name: _stop_one(cfg, name, live[name]), names))
        for name in names:
            progress(f"  stopped {name} (pid {live[name]})")
        stopped += names
    for done in (cfg.pids_file, cfg.stack_file, cfg.state_dir / control.STATUS, cfg.state_dir / control.SUPERVISOR_PID):
        done.unlink(missing_ok=True)
    control.clear(cfg.state_dir)
    return stopped
