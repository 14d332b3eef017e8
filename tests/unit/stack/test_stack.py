"""`up` refuses busy ports, twins and SQLite; `down` stops the supervisor, then exactly what was
recorded, and only that."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dsbridge_local.cli.main import main
from dsbridge_local.stack import control
from dsbridge_local.stack.processes import alive, spawn, stop_group
from dsbridge_local.stack.stack import (
    StackConfig,
    StackError,
    check_ports_free,
    down,
    load_config,
    load_secrets,
    save_config,
    stack_description,
    up,
)


@pytest.fixture
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(state_dir=tmp_path / "state", base_port=_free_base())


def _free_base() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1]) % 20000 + 20000


def test_busy_port_is_named_with_its_component(cfg: StackConfig):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", cfg.ports["service"]))
        busy.listen()
        with pytest.raises(StackError, match=rf"{cfg.ports['service']} \(service\).*--base-port"):
            check_ports_free(cfg)
        with pytest.raises(StackError, match="already in use"):
            up(cfg, progress=lambda _msg: None)
    assert not cfg.pids_file.exists()


def test_down_without_a_stack_says_so(cfg: StackConfig):
    said: list[str] = []
    assert down(cfg, progress=said.append) == []
    assert said == ["no stack is running"]


def test_down_stops_recorded_process_groups_only(cfg: StackConfig, tmp_path: Path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    recorded = spawn(sleeper, env={}, log_path=tmp_path / "recorded.log")
    stranger = spawn(sleeper, env={}, log_path=tmp_path / "stranger.log")
    try:
        cfg.state_dir.mkdir(parents=True)
        cfg.pids_file.write_text(json.dumps({"service": recorded}))
        assert down(cfg, progress=lambda _msg: None) == ["service"]
        assert not alive(recorded)
        assert alive(stranger)
        assert not cfg.pids_file.exists()
        assert down(cfg, progress=lambda _msg: None) == []  # a second down is harmless
    finally:
        stop_group(stranger, grace=2)
        stop_group(recorded, grace=2)


def test_a_pid_that_leads_no_group_is_not_signalled():
    """A recorded pid reused by some other process (not a group leader) is left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # our own group
    try:
        stop_group(other.pid, grace=0.2, kill_timeout=0.2)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=10)


@pytest.mark.parametrize("url", ["sqlite:////tmp/airflow.db", "sqlite+pysqlite:///x.db", "SQLite:///x.db"])
def test_sqlite_is_refused_naming_database_url(tmp_path: Path, url: str):
    with pytest.raises(StackError, match=r"SQLite.*database is locked.*--database-url.*embedded PostgreSQL"):
        StackConfig(state_dir=tmp_path, database_url=url)


def test_the_cli_refuses_sqlite_before_starting_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    state = tmp_path / "state"
    argv = ["up", "--state-dir", str(state), "--base-port", "37900", "--database-url", "sqlite:///airflow.db"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "dsbridge up: error: --database-url 'sqlite:///airflow.db' is SQLite" in err
    assert "Leave out --database-url" in err
    assert not state.exists()


def test_the_embedded_postgres_takes_base_plus_12_and_a_busy_one_is_named(cfg: StackConfig):
    assert cfg.ports["postgres"] == cfg.base_port + 12
    assert cfg.all_ports()["postgres"] == cfg.base_port + 12
    assert len(set(cfg.all_ports().values())) == len(cfg.all_ports())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", cfg.ports["postgres"]))
        busy.listen()
        span = rf"{cfg.base_port}\.\.{cfg.base_port + 12}"
        with pytest.raises(StackError, match=rf"{cfg.ports['postgres']} \(postgres\).*{span}"):
            check_ports_free(cfg)


def test_the_base_port_range_leaves_room_for_every_port(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert main(["status", "--state-dir", str(tmp_path), "--base-port", str(65535 - 10011 + 1)]) == 1
    assert "--base-port 55525 is out of range; use 1024..55524" in capsys.readouterr().err


def test_stack_json_names_the_embedded_database_and_its_url(cfg: StackConfig):
    desc = stack_description(cfg, load_secrets(cfg))
    port = cfg.base_port + 12
    assert desc["airflow"]["database"] == "embedded-postgresql"
    assert desc["postgres"]["url"] == f"postgresql://postgres@127.0.0.1:{port}/airflow"
    assert desc["postgres"]["sqlalchemy_url"] == f"postgresql+psycopg2://postgres@127.0.0.1:{port}/airflow"
    assert desc["status_file"] == str(cfg.state_dir / "status.json")
    external = StackConfig(state_dir=cfg.state_dir, database_url="postgresql+psycopg2://postgres@127.0.0.1/x")
    desc = stack_description(external, load_secrets(external))
    assert desc["airflow"]["database"] == "postgresql" and "postgres" not in desc


def test_the_supervisor_gets_the_same_config(cfg: StackConfig, tmp_path: Path):
    wanted = StackConfig(
        state_dir=cfg.state_dir,
        base_port=cfg.base_port,
        database_url="postgresql+psycopg2://postgres@127.0.0.1:5432/x",
        notebooks=tmp_path,
        settings_env={"DSBRIDGE_RECONCILE_SECONDS": "10"},
        executor="celery",
        workers=3,
        broker_url="redis://127.0.0.1:6379/5",
    )
    cfg.state_dir.mkdir(parents=True)
    save_config(wanted)
    assert load_config(cfg.state_dir) == wanted
    assert (cfg.state_dir / "config.json").stat().st_mode & 0o777 == 0o600


def test_down_stops_the_supervisor_first_then_the_components(cfg: StackConfig, tmp_path: Path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    supervisor = spawn(sleeper, env={}, log_path=tmp_path / "supervisor.log")
    service = spawn(sleeper, env={}, log_path=tmp_path / "service.log")
    try:
        cfg.state_dir.mkdir(parents=True)
        control.record_supervisor(cfg.state_dir, supervisor)
        control.record_pid(cfg.state_dir, "service", service)
        control.hold(cfg.state_dir, "service")
        said: list[str] = []
        assert down(cfg, progress=said.append) == ["supervisor", "service"]
        assert said == [f"  stopped supervisor (pid {supervisor})", f"  stopped service (pid {service})"]
        assert not alive(supervisor) and not alive(service)
        assert not control.held(cfg.state_dir, "service")  # a new stack starts with no holds
        assert not (cfg.state_dir / "supervisor.pid").exists()
    finally:
        stop_group(supervisor, grace=2)
        stop_group(service, grace=2)
