"""Verified callback events in SQLite: each event once, and per request the one that counts.

Why: Airflow delivers every event at least once (a retried notify task resends the same event id),
and one request can end more than once (ops clear the DAG run: a new attempt, a higher `sequence`).
Deliveries may also arrive out of order. So a receiver must deduplicate on the event id *and* keep,
per (job, request_id), the event with the highest `sequence` -- never letting a late, older event or
a sequence-0 refusal of a conflicting run overwrite it. `RequestStore.record` does both in one
transaction and says what it did; the first delivery's headers and raw body are kept so anyone can
re-verify the signature later.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from dsbridge.callback.event import CONFLICT_SEQUENCE
from dsbridge.client.receiver import CallbackEvent, parse_event

Status = Literal["stored", "duplicate", "superseded", "refusal"]
Role = Literal["latest", "superseded", "refusal"]

# New table names: a database of the schema_version 1 service (table `events`) is left untouched.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS callback_events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order
    event_id         TEXT NOT NULL UNIQUE,
    job              TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    sequence         INTEGER NOT NULL,
    path             TEXT NOT NULL,
    headers          TEXT NOT NULL,   -- JSON object, as received
    body             BLOB NOT NULL,   -- raw bytes exactly as received
    received_at      TEXT NOT NULL,   -- first delivery, ISO 8601 UTC
    last_received_at TEXT NOT NULL,
    deliveries       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS callback_events_request ON callback_events (job, request_id);
CREATE TABLE IF NOT EXISTS callback_requests (
    job        TEXT NOT NULL,
    request_id TEXT NOT NULL,
    event_id   TEXT NOT NULL,          -- the latest event: highest sequence, first to arrive
    sequence   INTEGER NOT NULL,
    PRIMARY KEY (job, request_id)
);
"""
_COLUMNS = "event_id, job, request_id, sequence, path, headers, body, received_at, last_received_at, deliveries"


@dataclass(frozen=True)
class Recorded:
    """What `record` did.

    `status`: "stored" (new, and now the request's latest), "duplicate" (this event id was stored
    before; only `deliveries` grew), "superseded" (new, kept in the history, but an event with the
    same or a higher sequence is the latest), "refusal" (new, a sequence-0 refusal of a conflicting
    run; never the latest). `latest_event_id` is the request's latest event after this call.
    """

    status: Status
    event_id: str
    deliveries: int
    is_latest: bool
    latest_event_id: str | None


@dataclass(frozen=True)
class StoredEvent:
    """One stored event: its first delivery as received, and how often it was delivered."""

    event_id: str
    job: str
    request_id: str
    sequence: int
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: str
    last_received_at: str
    deliveries: int

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @cached_property
    def event(self) -> CallbackEvent:
        """The typed event (it was verified and validated before it was stored)."""
        return parse_event(self.payload)

    @property
    def is_refusal(self) -> bool:
        return self.sequence == CONFLICT_SEQUENCE

    def as_json(self) -> dict[str, Any]:
        """The shape of the service's `/events` (docs/service.md)."""
        return {
            "event_id": self.event_id,
            "path": self.path,
            "headers": self.headers,
            "body": self.body.decode("utf-8"),
            "payload": self.payload,
            "deliveries": self.deliveries,
            "received_at": self.received_at,
            "last_received_at": self.last_received_at,
        }


@dataclass(frozen=True)
class RequestState:
    """One request as the receiver knows it: the event that counts, and everything that arrived."""

    job: str
    request_id: str
    latest: StoredEvent | None  # None while only a refusal arrived
    history: tuple[StoredEvent, ...]  # arrival order, refusals included

    def role(self, event: StoredEvent) -> Role:
        if self.latest is not None and event.event_id == self.latest.event_id:
            return "latest"
        return "refusal" if event.is_refusal else "superseded"

    @property
    def last_received_at(self) -> str:
        return max(e.last_received_at for e in self.history)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RequestStore:
    """The event store. Thread-safe (one connection behind a lock); each `record` is one transaction,
    taken with `BEGIN IMMEDIATE`, so processes sharing the file do not interleave either."""

    def __init__(self, db_path: str | Path) -> None:
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Generator[sqlite3.Connection, None, None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record(self, event: CallbackEvent, body: bytes, headers: Mapping[str, str], path: str = "") -> Recorded:
        """Keep `event` (delivered as `body` with `headers`, at `path`) and say what that changed."""
        now = _now()
        with self._transaction() as db:
            (deliveries,) = db.execute(
                f"""
                INSERT INTO callback_events ({_COLUMNS})
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                ON CONFLICT (event_id) DO UPDATE
                    SET deliveries = deliveries + 1, last_received_at = excluded.last_received_at
                RETURNING deliveries
                """,
                (
                    event.event_id,
                    event.job,
                    event.request_id,
                    event.sequence,
                    path,
                    json.dumps(dict(headers)),
                    body,
                    now,
                    now,
                ),
            ).fetchone()
            if deliveries == 1 and not event.is_refusal:
                db.execute(
                    """
                    INSERT INTO callback_requests (job, request_id, event_id, sequence) VALUES (?, ?, ?, ?)
                    ON CONFLICT (job, request_id) DO UPDATE
                        SET event_id = excluded.event_id, sequence = excluded.sequence
                        WHERE excluded.sequence > callback_requests.sequence
                    """,
                    (event.job, event.request_id, event.event_id, event.sequence),
                )
            latest = self._latest_id(db, event.job, event.request_id)
        is_latest = latest == event.event_id
        status: Status
        if deliveries > 1:
            status = "duplicate"
        elif event.is_refusal:
            status = "refusal"
        else:
            status = "stored" if is_latest else "superseded"
        return Recorded(status, event.event_id, int(deliveries), is_latest, latest)

    @staticmethod
    def _latest_id(db: sqlite3.Connection, job: str, request_id: str) -> str | None:
        row = db.execute(
            "SELECT event_id FROM callback_requests WHERE job = ? AND request_id = ?", (job, request_id)
        ).fetchone()
        return str(row[0]) if row else None

    def latest(self, job: str, request_id: str) -> StoredEvent | None:
        """The event that counts for the request: the highest sequence; None if none (or only a refusal)."""
        found = self._select(
            "WHERE event_id = (SELECT event_id FROM callback_requests WHERE job = ? AND request_id = ?)",
            (job, request_id),
        )
        return found[0] if found else None

    def history(self, job: str, request_id: str) -> list[StoredEvent]:
        """Every event stored for the request, in arrival order, refusals included."""
        return self._select("WHERE job = ? AND request_id = ? ORDER BY seq", (job, request_id))

    def get(self, event_id: str) -> StoredEvent | None:
        found = self._select("WHERE event_id = ?", (event_id,))
        return found[0] if found else None

    def all(self) -> list[StoredEvent]:
        """Every stored event, in arrival order."""
        return self._select("ORDER BY seq", ())

    def request(self, job: str, request_id: str) -> RequestState | None:
        history = self.history(job, request_id)
        if not history:
            return None
        return RequestState(job, request_id, self.latest(job, request_id), tuple(history))

    def requests(self) -> list[RequestState]:
        """Every request with at least one event, the most recently active first."""
        with self._lock:
            latest_ids = {
                (job, request_id): event_id
                for job, request_id, event_id in self._db.execute(
                    "SELECT job, request_id, event_id FROM callback_requests"
                )
            }
            events = self._rows("ORDER BY seq", ())
        history: dict[tuple[str, str], list[StoredEvent]] = {}
        for event in events:
            key = (event.job, event.request_id)
            history[key] = history.pop(key, [])  # re-inserted: the dict is ordered by each request's last arrival
            history[key].append(event)
        found = []
        for (job, request_id), arrived in reversed(history.items()):
            latest_id = latest_ids.get((job, request_id))
            latest = next((e for e in arrived if e.event_id == latest_id), None)
            found.append(RequestState(job, request_id, latest, tuple(arrived)))
        return found

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM callback_events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _select(self, where: str, args: tuple[Any, ...]) -> list[StoredEvent]:
        with self._lock:
            return self._rows(where, args)

    def _rows(self, where: str, args: tuple[Any, ...]) -> list[StoredEvent]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM callback_events {where}", args).fetchall()
        return [
            StoredEvent(r[0], r[1], r[2], int(r[3]), r[4], json.loads(r[5]), bytes(r[6]), r[7], r[8], int(r[9]))
            for r in rows
        ]
