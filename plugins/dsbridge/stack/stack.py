"""The local stack: S3, the Databricks emulator, the optimization service and Airflow, on loopback.

`up` starts what is missing, waits until everything is healthy, and writes `stack.json` (every URL,
port and credential a client needs, see docs/stack.md); `down` stops exactly the processes `up`
recorded; `status` reports each of them.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dsbridge.callback.signing import new_secret
from dsbridge.ports import port_free
from dsbridge.stack import airflow, s3
from dsbridge.stack.processes import alive, spawn, stop_group

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BASE_PORT = 28080
RESULTS_BUCKET = "dsbridge-results"
HEALTH_TIMEOUT = 180.0

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The stack cannot be brought up (or down); the message says why and what to do."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which ports and database it uses."""

    state_dir: Path = field(default_factory=lambda: REPO / ".dsbridge")
    base_port: int = DEFAULT_BASE_PORT
    database_url: str | None = None
    repo: Path = REPO
    notebooks: Path = REPO / "notebooks"
    # Extra DSBRIDGE_* settings for Airflow's processes (e.g. shorter horizons in tests).
    settings_env: dict[str, str] = field(default_factory=dict)

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def pids_file(self) -> Path:
        return self.state_dir / "pids.json"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def ports(self) -> dict[str, int]:
        b = self.base_port
        return {"airflow": b, "emulator": b + 1, "service": b + 2}

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


def recorded_pids(cfg: StackConfig) -> dict[str, int]:
    if not cfg.pids_file.exists():
        return {}
    return {name: int(pid) for name, pid in json.loads(cfg.pids_file.read_text()).items()}


def running(cfg: StackConfig) -> dict[str, int]:
    return {name: pid for name, pid in recorded_pids(cfg).items() if alive(pid)}


def check_ports_free(cfg: StackConfig) -> None:
    taken = {name: port for name, port in cfg.all_ports().items() if not port_free(port)}
    if taken:
        listing = ", ".join(f"{port} ({name})" for name, port in taken.items())
        raise StackError(
            f"port(s) already in use on 127.0.0.1: {listing}. Stop what uses them, or choose other "
            f"ports with --base-port (this stack uses {cfg.base_port}..{cfg.base_port + 11})."
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
    return cfg.database_url or f"sqlite:///{cfg.state_dir / 'airflow' / 'airflow.db'}"


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
            "database": "postgresql" if cfg.database_url else "sqlite",
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
    }


def read_stack(cfg: StackConfig) -> dict[str, Any]:
    if not cfg.stack_file.exists():
        raise StackError(f"no stack is up ({cfg.stack_file} is missing); run `dsbridge up` first")
    return dict(json.loads(cfg.stack_file.read_text()))


@dataclass(frozen=True)
class Component:
    """How to start one process of the stack (S3 is started by `dsbridge.stack.s3`)."""

    argv: list[str]
    env: dict[str, str]
    log: Path


def components(cfg: StackConfig, creds: dict[str, str], desc: dict[str, Any]) -> dict[str, Component]:
    """Every process but S3, by name, in start order; the same for `up` and for `restart`."""
    python = sys.executable
    s3_env = {
        "AWS_ENDPOINT_URL_S3": desc["s3"]["endpoint_url"],
        "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    emulator_argv = [python, "-m", "dsbridge.emulator", "--host", "127.0.0.1", "--port", str(cfg.ports["emulator"])]
    emulator_argv += ["--workspace", str(cfg.notebooks), "--state", str(cfg.state_dir / "emulator")]
    emulator_argv += ["--max-concurrent-runs", "16"]
    service_argv = [python, "-m", "dsbridge.service", "--host", "127.0.0.1", "--port", str(cfg.ports["service"])]
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
    env |= cfg.settings_env
    for name in airflow.COMPONENTS:
        found[f"airflow-{name}"] = Component(airflow.component_argv(name), env, cfg.logs / f"airflow-{name}.log")
    # The sweep that gives every ended request its final event; it needs Airflow's database.
    found["reconciler"] = Component([python, "-m", "dsbridge.reconciler"], env, cfg.logs / "reconciler.log")
    return found


def _record(cfg: StackConfig, name: str, pid: int) -> None:
    pids = recorded_pids(cfg)
    pids[name] = pid
    _private_file(cfg.pids_file, json.dumps(pids))


def _start_s3(cfg: StackConfig, creds: dict[str, str]) -> int:
    proc = s3.start(
        cfg.state_dir / "s3",
        access_key=creds["s3_access_key"],
        secret_key=creds["s3_secret_key"],
        log_path=cfg.logs / "s3.log",
        ports=cfg.s3_ports,
    )
    _record(cfg, "s3", proc.pid)
    return proc.pid


def start_component(cfg: StackConfig, name: str) -> int:
    """Start one recorded component of a stack that is up (after `stop_component`)."""
    creds, desc = load_secrets(cfg), read_stack(cfg)
    if name == "s3":
        return _start_s3(cfg, creds)
    spec = components(cfg, creds, desc)[name]
    pid = spawn(spec.argv, env=spec.env, log_path=spec.log)
    _record(cfg, name, pid)
    return pid


def stop_component(cfg: StackConfig, name: str, *, hard: bool = False) -> None:
    """Stop one component: politely, or with SIGKILL at once (`hard`), as a crash would."""
    pid = recorded_pids(cfg).get(name)
    if pid is None:
        raise StackError(f"no component {name!r}; the stack has {sorted(recorded_pids(cfg))}")
    if name == "s3" and not hard:
        s3.stop(pid, ports=cfg.s3_ports)
    else:
        stop_group(pid, grace=0.0 if hard else 20.0)


def up(cfg: StackConfig, progress: Progress = print) -> dict[str, Any]:
    """Start the stack (or say it is already up) and return the content of stack.json."""
    already = running(cfg)
    if already and cfg.stack_file.exists():
        progress(f"stack is already up ({', '.join(sorted(already))}); `dsbridge down` stops it")
        return read_stack(cfg)
    if already:
        raise StackError(f"a partial stack is running ({sorted(already)}); run `dsbridge down` first")
    check_ports_free(cfg)
    cfg.logs.mkdir(parents=True, exist_ok=True)
    cfg.pids_file.unlink(missing_ok=True)
    creds = load_secrets(cfg)
    desc = stack_description(cfg, creds)
    began = time.monotonic()
    try:
        _start_services(cfg, creds, desc, progress)
        _start_airflow(cfg, creds, desc, progress)
    except BaseException:
        progress("start-up failed; stopping what was started")
        down(cfg, progress=lambda _msg: None)
        raise
    _private_file(cfg.stack_file, json.dumps(desc, indent=2))
    progress(f"stack is up in {time.monotonic() - began:.0f}s; details in {cfg.stack_file}")
    return desc


def _start_services(cfg: StackConfig, creds: dict[str, str], desc: dict[str, Any], progress: Progress) -> None:
    _start_s3(cfg, creds)
    specs = components(cfg, creds, desc)
    for name in ("emulator", "service"):
        _record(cfg, name, spawn(specs[name].argv, env=specs[name].env, log_path=specs[name].log))
    took = s3.wait_healthy(desc["s3"]["endpoint_url"], 60, log_path=cfg.logs / "s3.log")
    s3.ensure_bucket(desc["s3"]["endpoint_url"], creds["s3_access_key"], creds["s3_secret_key"], RESULTS_BUCKET)
    progress(f"  S3 (SeaweedFS)        {desc['s3']['endpoint_url']}  ready in {took:.1f}s")
    auth = {"Authorization": f"Bearer {creds['databricks_token']}"}
    took = wait_until(
        lambda: http_ok(f"{desc['emulator']['url']}/api/2.2/jobs/runs/list", auth),
        "the Databricks emulator",
        60,
        cfg.logs / "emulator.log",
    )
    progress(f"  Databricks emulator   {desc['emulator']['url']}  ready in {took:.1f}s")
    took = wait_until(
        lambda: http_ok(f"{desc['service']['url']}/health"), "the optimization service", 60, cfg.logs / "service.log"
    )
    progress(f"  optimization service  {desc['service']['url']}  ready in {took:.1f}s")


def _start_airflow(cfg: StackConfig, creds: dict[str, str], desc: dict[str, Any], progress: Progress) -> None:
    home = cfg.state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    airflow.write_passwords(home, creds["admin_password"], creds["service_password"])
    specs = components(cfg, creds, desc)
    progress(f"  Airflow database      {desc['airflow']['database']}: migrating…")
    airflow.migrate(specs["airflow-scheduler"].env, cfg.logs / "airflow-migrate.log")
    for name in [*(f"airflow-{c}" for c in airflow.COMPONENTS), "reconciler"]:
        _record(cfg, name, spawn(specs[name].argv, env=specs[name].env, log_path=specs[name].log))
    progress("  Airflow               starting api-server, scheduler, dag-processor, triggerer, reconciler…")
    url = desc["airflow"]["url"]
    took = wait_until(
        lambda: not airflow.unhealthy_components(airflow.health(url)),
        "Airflow",
        HEALTH_TIMEOUT,
        cfg.logs / "airflow-api-server.log",
    )
    progress(f"  Airflow               {url}  ready in {took:.1f}s")


def down(cfg: StackConfig, progress: Progress = print) -> list[str]:
    """Stop every process `up` recorded (and only those); say so when nothing runs."""
    pids = recorded_pids(cfg)
    live = {name: pid for name, pid in pids.items() if alive(pid)}
    if not live:
        progress("no stack is running")
    # Airflow first (it talks to the others), S3 last.
    order = sorted(live, key=lambda name: (not name.startswith("airflow"), name == "s3"))
    for name in order:
        if name == "s3":
            s3.stop(live[name], ports=cfg.s3_ports)
        else:
            stop_group(live[name], grace=20.0)
        progress(f"  stopped {name} (pid {live[name]})")
    cfg.pids_file.unlink(missing_ok=True)
    cfg.stack_file.unlink(missing_ok=True)
    return order


def status(cfg: StackConfig) -> dict[str, Any]:
    """Each recorded process and whether it runs, plus Airflow's own health view."""
    pids = recorded_pids(cfg)
    report: dict[str, Any] = {name: {"pid": pid, "running": alive(pid)} for name, pid in pids.items()}
    if cfg.stack_file.exists():
        report["airflow_health"] = airflow.health(read_stack(cfg)["airflow"]["url"])
    return report
