"""The Celery stack: each stack its own queue and results, N workers as components, and a Redis
that does not answer stops `up` with what to do."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsbridge_local.cli.main import main
from dsbridge_local.stack import celery
from dsbridge_local.stack.stack import StackConfig, StackError, components, load_secrets, stack_description, up
from dsbridge_local.stack.startup import needs


def stack_components(cfg: StackConfig) -> dict:
    creds = load_secrets(cfg)
    return components(cfg, creds, stack_description(cfg, creds))


def test_celery_workers_are_components_on_the_stacks_own_queue(tmp_path: Path):
    cfg = StackConfig(state_dir=tmp_path / "s", base_port=41080, executor="celery", workers=3)
    found = stack_components(cfg)
    workers = [name for name in found if name.startswith("airflow-worker-")]
    assert workers == ["airflow-worker-1", "airflow-worker-2", "airflow-worker-3"]
    argv = found["airflow-worker-2"].argv
    assert argv[1:3] == ["celery", "worker"] and argv[argv.index("--queues") + 1] == "dsbridge-41080"
    assert argv[argv.index("--celery-hostname") + 1] == "dsbridge-41080-w2@%h"  # distinct Celery nodes
    assert "--skip-serve-logs" in argv  # two log servers on one machine would fight over a port
    env = found["airflow-scheduler"].env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "dsbridge-41080"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{cfg.postgres.url}"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "2"  # 8 slots over 3 workers
    assert found["airflow-worker-1"].env is env  # workers run tasks in the scheduler's configuration
    assert needs(cfg)["airflow-worker-3"] == ["postgres"]


def test_the_local_executor_has_no_workers(tmp_path: Path):
    cfg = StackConfig(state_dir=tmp_path / "s", base_port=41080)
    found = stack_components(cfg)
    assert not [name for name in found if name.startswith("airflow-worker")]
    assert found["airflow-scheduler"].env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"executor": "threads"}, "--executor"), ({"workers": 0}, "--workers"), ({"workers": 9}, "1..8")],
)
def test_bad_executor_settings_are_refused_naming_the_option(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(StackError, match=message):
        StackConfig(state_dir=tmp_path, **{"executor": "celery", **kwargs})


@pytest.fixture
def fake_redis() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback server that answers every command with the next canned reply."""
    replies: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            for reply in replies:
                if not conn.recv(256):
                    return
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], replies
    finally:
        server.close()
        thread.join(timeout=5)


def test_a_redis_that_answers_pong_is_accepted(fake_redis):
    port, replies = fake_redis
    replies.append(b"+PONG\r\n")
    celery.check_broker(f"redis://127.0.0.1:{port}/0")


def test_a_redis_that_wants_a_password_is_named(fake_redis):
    port, replies = fake_redis
    replies.append(b"-NOAUTH Authentication required.\r\n")
    with pytest.raises(celery.BrokerUnreachable, match=r"NOAUTH.*password"):
        celery.check_broker(f"redis://127.0.0.1:{port}/0")


def test_no_redis_stops_up_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    state = tmp_path / "state"
    code = main(
        ["up", "--state-dir", str(state), "--executor", "celery", "--broker-url", f"redis://127.0.0.1:{closed}/0"]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert f"Redis is not reachable at 127.0.0.1:{closed}" in err and "--broker-url" in err
    assert not (state / "pids.json").exists()


def test_a_broker_url_that_is_not_redis_is_refused(tmp_path: Path):
    cfg = StackConfig(state_dir=tmp_path / "s", executor="celery", broker_url="amqp://127.0.0.1:5672//")
    with pytest.raises(StackError, match="not a redis://"):
        up(cfg, progress=lambda _m: None)


def test_a_worker_is_ready_only_once_this_launch_says_so(tmp_path: Path):
    log = tmp_path / "w.log"
    log.write_text("celery@old ready.\n")  # a previous launch's line
    since = celery.log_size(log)
    assert not celery.worker_ready(log, since)
    with log.open("a") as out:
        out.write("[tasks]\n celery@dsbridge-1-w1 ready.\n")
    assert celery.worker_ready(log, since)
    assert not celery.worker_ready(tmp_path / "missing.log")
