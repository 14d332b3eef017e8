"""Celery for the local stack: Airflow's CeleryExecutor on the machine's Redis, N workers as processes.

Why: production scales Airflow out with Celery workers (docker-compose.yaml, docs/deploy.md); the
local stack runs the same executor so the DAGs meet it before production does. Each stack sends its
tasks to a queue of its own (`dsbridge-<base port>`) and keeps Celery's results in its own Airflow
database, so stacks that share one Redis never take each other's work.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

EXECUTORS = ("local", "celery")
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
MAX_WORKERS = 8
# A worker that dies takes its running tasks with it; the scheduler fails (and retries) them once
# their heartbeat is this old. Airflow's default (300 s) is for busy production workers.
HEARTBEAT_TIMEOUT_SECONDS = 60


class BrokerUnreachable(RuntimeError):
    """Redis does not answer where the stack's Celery broker should be."""


def queue_name(base_port: int) -> str:
    return f"dsbridge-{base_port}"


def worker_name(index: int) -> str:
    """The stack component of worker `index` (1-based), as `dsbridge status` lists it."""
    return f"airflow-worker-{index}"


def worker_names(workers: int) -> list[str]:
    return [worker_name(i) for i in range(1, workers + 1)]


def celery_env(*, queue: str, broker_url: str, database_url: str, concurrency: int) -> dict[str, str]:
    """The Airflow settings of a stack that runs its tasks on Celery workers."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        # Celery's database result backend takes a SQLAlchemy URL behind `db+`.
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS),
    }


def worker_argv(index: int, queue: str, concurrency: int) -> list[str]:
    """`airflow celery worker` for worker `index`: its own Celery node name, the stack's queue only,
    and no log server (the API server reads task logs from the shared local folder; a second worker
    would find the log server's port taken)."""
    return [
        str(Path(sys.executable).parent / "airflow"),
        "celery",
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(concurrency),
        "--celery-hostname",
        f"{queue}-w{index}@%h",
        "--skip-serve-logs",
        "--without-gossip",
        "--without-mingle",
    ]


def check_broker(url: str, timeout: float = 2.0) -> None:
    """Raise `BrokerUnreachable`, saying what to do, unless a Redis answers PING at `url`."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise BrokerUnreachable(f"--broker-url {url!r} is not a redis://host:port/db URL")
    host, port = parts.hostname, parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            if parts.password:
                user = parts.username or "default"
                conn.sendall(f"AUTH {user} {parts.password}\r\n".encode())
                conn.recv(64)
            conn.sendall(b"PING\r\n")
            answer = conn.recv(64)
    except OSError as exc:
        raise BrokerUnreachable(
            f"Redis is not reachable at {host}:{port} ({exc}); start it (e.g. `redis-server --daemonize yes`) "
            "or give --broker-url"
        ) from None
    if not answer.startswith(b"+PONG"):
        reply = answer.decode(errors="replace").strip()
        raise BrokerUnreachable(f"Redis at {host}:{port} answered {reply!r} to PING; check --broker-url's password")


def log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def worker_ready(log_path: Path, since: int = 0) -> bool:
    """Whether the worker logging to `log_path` has said Celery's `ready.` after byte `since` (its launch)."""
    try:
        with log_path.open("rb") as log:
            log.seek(since)
            return b" ready." in log.read()
    except OSError:
        return False
