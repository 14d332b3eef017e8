"""What the supervisor runs for the real stack, and the order and readiness checks of its start-up.

S3, PostgreSQL (when embedded), the Databricks emulator and the optimization service are launched
together, then each is waited for; then Airflow's database is created or migrated, and Airflow's
four components and the reconciler are launched and waited for through Airflow's own health.
A restart later launches a component exactly as here, without the waiting.
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Callable

from dsbridge_local.stack import airflow, celery, s3
from dsbridge_local.stack.processes import launch
from dsbridge_local.stack.stack import (
    HEALTH_TIMEOUT,
    RESULTS_BUCKET,
    StackConfig,
    components,
    http_ok,
    load_config,
    load_secrets,
    stack_description,
)
from dsbridge_local.stack.supervisor import Launcher, Supervisor, file_alert

__all__ = ["launchers", "load_config", "start_stack", "supervisor_for"]


def _launch_s3(cfg: StackConfig, creds: dict[str, str]) -> subprocess.Popen[bytes]:
    # A SIGKILLed weed leaves its gRPC sockets in /tmp; they are ours (named by our ports).
    for sock in s3.grpc_socket_paths(cfg.s3_ports):
        sock.unlink(missing_ok=True)
    return s3.start(
        cfg.state_dir / "s3",
        access_key=creds["s3_access_key"],
        secret_key=creds["s3_secret_key"],
        log_path=cfg.logs / "s3.log",
        ports=cfg.s3_ports,
    )


def launchers(cfg: StackConfig) -> dict[str, Launcher]:
    """Every component of the stack, in start order: how to launch it."""
    creds = load_secrets(cfg)
    desc = stack_description(cfg, creds)
    found: dict[str, Launcher] = {"s3": functools.partial(_launch_s3, cfg, creds)}
    if cfg.embedded_database:
        found["postgres"] = functools.partial(cfg.postgres.launch, cfg.logs / "postgres.log")
    for name, spec in components(cfg, creds, desc).items():
        found[name] = functools.partial(launch, spec.argv, env=spec.env, log_path=spec.log)
    return found


def needs(cfg: StackConfig) -> dict[str, list[str]]:
    """Airflow's processes and the reconciler die without their database: while the embedded
    PostgreSQL is down they wait for it rather than spend their restarts."""
    if not cfg.embedded_database:
        return {}
    return {name: ["postgres"] for name in airflow_processes(cfg)}


def airflow_processes(cfg: StackConfig) -> list[str]:
    """Airflow's components, its Celery workers (if any) and the reconciler: what runs on Airflow's database."""
    return [*(f"airflow-{c}" for c in airflow.COMPONENTS), *cfg.celery_workers, "reconciler"]


def supervisor_for(cfg: StackConfig) -> Supervisor:
    return Supervisor(
        cfg.state_dir,
        launchers(cfg),
        log_file=cfg.logs / "supervisor.log",
        alert=file_alert(cfg.logs / "alerts.jsonl"),
        needs=needs(cfg),
    )


def _s3_healthy(endpoint: str) -> bool:
    try:
        s3.wait_healthy(endpoint, timeout=0.0)
    except s3.S3ServerError:
        return False
    return True


def start_stack(sup: Supervisor, cfg: StackConfig) -> None:
    """Start every component in order, each step bounded; progress goes to `sup.step`."""
    creds = load_secrets(cfg)
    desc = stack_description(cfg, creds)
    first = ["s3", "postgres", "emulator", "service"] if cfg.embedded_database else ["s3", "emulator", "service"]
    launched = time.monotonic()
    for name in first:
        sup.start(name)

    def ready(check: Callable[[], bool], what: str, log: str) -> float:
        sup.wait_for(check, what, 60, cfg.logs / log)
        return time.monotonic() - launched

    endpoint = desc["s3"]["endpoint_url"]
    took = ready(lambda: _s3_healthy(endpoint), "S3 (SeaweedFS)", "s3.log")
    s3.ensure_bucket(endpoint, creds["s3_access_key"], creds["s3_secret_key"], RESULTS_BUCKET)
    sup.step(f"  S3 (SeaweedFS)        {endpoint}  ready in {took:.1f}s")
    if cfg.embedded_database:
        pg = cfg.postgres
        took = ready(pg.accepts_connections, "PostgreSQL", "postgres.log")
        pg.ensure_database()
        sup.step(f"  PostgreSQL (embedded) 127.0.0.1:{pg.port}  ready in {took:.1f}s")
    auth = {"Authorization": f"Bearer {creds['databricks_token']}"}
    emulator = desc["emulator"]["url"]
    took = ready(lambda: http_ok(f"{emulator}/api/2.2/jobs/runs/list", auth), "the Databricks emulator", "emulator.log")
    sup.step(f"  Databricks emulator   {emulator}  ready in {took:.1f}s")
    service = desc["service"]["url"]
    took = ready(lambda: http_ok(f"{service}/health"), "the optimization service", "service.log")
    sup.step(f"  optimization service  {service}  ready in {took:.1f}s")
    _start_airflow(sup, cfg, creds, desc["airflow"])


def _start_airflow(sup: Supervisor, cfg: StackConfig, creds: dict[str, str], info: dict[str, str]) -> None:
    home = cfg.state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    airflow.write_passwords(home, creds["admin_password"], creds["service_password"])
    env = components(cfg, creds, stack_description(cfg, creds))["airflow-scheduler"].env
    sup.step(f"  Airflow database      {info['database']}: migrating…")
    airflow.migrate(env, cfg.logs / "airflow-migrate.log", interrupted=lambda: sup.stop_requested)
    launched_at = {name: celery.log_size(cfg.logs / f"{name}.log") for name in cfg.celery_workers}
    for name in airflow_processes(cfg):
        sup.start(name)
    workers = f", {len(cfg.celery_workers)} Celery workers" if cfg.celery_workers else ""
    sup.step(f"  Airflow               starting api-server, scheduler, dag-processor, triggerer{workers}, reconciler…")
    url = info["url"]
    took = sup.wait_for(
        lambda: not airflow.unhealthy_components(airflow.health(url)),
        "Airflow",
        HEALTH_TIMEOUT,
        cfg.logs / "airflow-api-server.log",
    )
    sup.step(f"  Airflow               {url}  ready in {took:.1f}s")
    for name, since in launched_at.items():
        log = cfg.logs / f"{name}.log"
        sup.wait_for(functools.partial(celery.worker_ready, log, since), name, HEALTH_TIMEOUT, log)
        sup.step(f"  Celery worker         {name} on queue {celery.queue_name(cfg.base_port)}  ready")
