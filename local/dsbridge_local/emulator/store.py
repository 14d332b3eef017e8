"""SQLite persistence of runs, task runs and their outputs, so a restarted emulator still answers.

One table holds both parent runs (`parent_id IS NULL`) and task runs, since the Jobs API gives both
their own `run_id` and lets `runs/get` and `runs/get-output` address either. Idempotency tokens are
a unique column, so "same token, same run" survives restarts. Every access goes through one lock
and one connection (WAL, synchronous=NORMAL): the server's event loop and the supervisor threads
share it, and each statement takes well under a millisecond.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ACTIVE_STATES = ("QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY")
FIRST_RUN_ID = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    parent_id INTEGER,
    job_id INTEGER NOT NULL,
    run_name TEXT NOT NULL,
    task_key TEXT,
    spec TEXT NOT NULL,
    life_cycle TEXT NOT NULL,
    result_state TEXT,
    state_message TEXT NOT NULL DEFAULT '',
    queue_reason TEXT,
    user_cancelled INTEGER NOT NULL DEFAULT 0,
    term_code TEXT,
    term_type TEXT,
    created_ms INTEGER NOT NULL,
    exec_start_ms INTEGER,
    running_ms INTEGER,
    exec_end_ms INTEGER,
    end_ms INTEGER,
    result TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_trace TEXT,
    log_file TEXT,
    pid INTEGER,
    idempotency_token TEXT UNIQUE,
    request_id TEXT,
    legacy INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent_id);
CREATE INDEX IF NOT EXISTS runs_life_cycle ON runs(life_cycle);
"""

COLUMNS = [
    "run_id",
    "parent_id",
    "job_id",
    "run_name",
    "task_key",
    "spec",
    "life_cycle",
    "result_state",
    "state_message",
    "queue_reason",
    "user_cancelled",
    "term_code",
    "term_type",
    "created_ms",
    "exec_start_ms",
    "running_ms",
    "exec_end_ms",
    "end_ms",
    "result",
    "truncated",
    "error",
    "error_trace",
    "log_file",
    "pid",
    "idempotency_token",
    "request_id",
    "legacy",
]


class Store:
    """Thread-safe access to the runs database."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _next_id(self) -> int:
        row = self._db.execute("SELECT MAX(run_id) FROM runs").fetchone()
        return max(int(row[0] or 0), FIRST_RUN_ID) + 1

    def create(self, parent: dict[str, Any], tasks: list[dict[str, Any]]) -> tuple[int, bool]:
        """Insert a run and its task runs; with a known idempotency token return (existing id, False)."""
        with self._lock:
            token = parent.get("idempotency_token")
            if token:
                row = self._db.execute("SELECT run_id FROM runs WHERE idempotency_token = ?", (token,)).fetchone()
                if row is not None:
                    return int(row[0]), False
            run_id = self._next_id()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert({**parent, "run_id": run_id, "job_id": run_id})
                for offset, task in enumerate(tasks, start=1):
                    self._insert({**task, "run_id": run_id + offset, "parent_id": run_id, "job_id": run_id})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return run_id, True

    def _insert(self, row: dict[str, Any]) -> None:
        names = [name for name in COLUMNS if name in row]
        marks = ",".join("?" for _ in names)
        self._db.execute(f"INSERT INTO runs ({','.join(names)}) VALUES ({marks})", [row[name] for name in names])

    def update(self, run_id: int, **fields: Any) -> None:
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown columns {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*fields.values(), run_id])

    def update_where_active(self, run_id: int, **fields: Any) -> bool:
        """Update only if the run is not finished yet; return whether it was."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        marks = ",".join("?" for _ in ACTIVE_STATES)
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ? AND life_cycle IN ({marks})",
                [*fields.values(), run_id, *ACTIVE_STATES],
            )
            return cursor.rowcount > 0

    def update_if(self, run_id: int, states: tuple[str, ...], **fields: Any) -> bool:
        """Update only while the run is in one of `states`; return whether it was."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        marks = ",".join("?" for _ in states)
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE runs SET {assignments} WHERE run_id = ? AND life_cycle IN ({marks})",
                [*fields.values(), run_id, *states],
            )
            return cursor.rowcount > 0

    def get(self, run_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row) if row is not None else None

    def tasks(self, parent_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs WHERE parent_id = ? ORDER BY run_id", (parent_id,)).fetchall()
        return [dict(row) for row in rows]

    def list_runs(
        self,
        *,
        active_only: bool,
        completed_only: bool,
        offset: int,
        limit: int,
        start_time_from: int | None,
        start_time_to: int | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        clauses = ["parent_id IS NULL"]
        args: list[Any] = []
        marks = ",".join("?" for _ in ACTIVE_STATES)
        if active_only:
            clauses.append(f"life_cycle IN ({marks})")
            args.extend(ACTIVE_STATES)
        if completed_only:
            clauses.append(f"life_cycle NOT IN ({marks})")
            args.extend(ACTIVE_STATES)
        if start_time_from is not None:
            clauses.append("created_ms >= ?")
            args.append(start_time_from)
        if start_time_to is not None:
            clauses.append("created_ms <= ?")
            args.append(start_time_to)
        sql = f"SELECT * FROM runs WHERE {' AND '.join(clauses)} ORDER BY run_id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, limit + 1, offset]).fetchall()
        return [dict(row) for row in rows[:limit]], len(rows) > limit

    def active(self) -> list[dict[str, Any]]:
        marks = ",".join("?" for _ in ACTIVE_STATES)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM runs WHERE life_cycle IN ({marks}) ORDER BY run_id", ACTIVE_STATES
            ).fetchall()
        return [dict(row) for row in rows]

    def delete(self, run_ids: Iterable[int]) -> None:
        ids = list(run_ids)
        with self._lock:
            self._db.executemany("DELETE FROM runs WHERE run_id = ?", [(run_id,) for run_id in ids])
