"""Callback events in SQLite, stored once per event id.

Why: Airflow delivers each event at least once (a retried notify task sends the same event id
again), so the receiver must be idempotent. The first delivery is kept exactly as received -- its
headers and its raw body bytes -- so anyone can re-verify the signature later; repeats only bump a
counter. SQLite keeps it to one file and no server.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    path             TEXT NOT NULL,
    headers          TEXT NOT NULL,   -- JSON object, names lower-case as received
    body             BLOB NOT NULL,   -- raw bytes exactly as received
    received_at      TEXT NOT NULL,   -- first delivery, ISO 8601 UTC
    last_received_at TEXT NOT NULL,
    deliveries       INTEGER NOT NULL DEFAULT 1
)
"""


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: str
    last_received_at: str
    deliveries: int

    @property
    def body_text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def payload(self) -> Any:
        """The parsed body, or None if it no longer parses (it did when it was stored)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "path": self.path,
            "headers": self.headers,
            "body": self.body_text,
            "payload": self.payload,
            "deliveries": self.deliveries,
            "received_at": self.received_at,
            "last_received_at": self.last_received_at,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class EventStore:
    """A tiny thread-safe event table; one connection guarded by a lock is plenty here."""

    def __init__(self, db_path: str | Path) -> None:
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)

    def record(self, event_id: str, path: str, headers: dict[str, str], body: bytes) -> int:
        """Store the first delivery of ``event_id``; count later ones. Returns the delivery count."""
        now = _now()
        with self._lock:
            row = self._db.execute(
                """
                INSERT INTO events (event_id, path, headers, body, received_at, last_received_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (event_id) DO UPDATE
                    SET deliveries = deliveries + 1, last_received_at = excluded.last_received_at
                RETURNING deliveries
                """,
                (event_id, path, json.dumps(headers), body, now, now),
            ).fetchone()
        return int(row[0])

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._select("WHERE event_id = ?", (event_id,))
        return rows[0] if rows else None

    def all(self) -> list[StoredEvent]:
        """Every event, oldest first."""
        return self._select("ORDER BY seq", ())

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _select(self, where: str, args: tuple[Any, ...]) -> list[StoredEvent]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT event_id, path, headers, body, received_at, last_received_at, deliveries FROM events {where}",
                args,
            ).fetchall()
        return [StoredEvent(r[0], r[1], json.loads(r[2]), bytes(r[3]), r[4], r[5], int(r[6])) for r in rows]
