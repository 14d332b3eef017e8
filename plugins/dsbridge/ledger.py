"""The request's own record in S3, next to its output: who owns the request id, and its events.

Why S3 and not Airflow's database: a request id must be claimed atomically by the first DAG run
that uses it, from a worker that has no database access, and the claim must outlive Airflow's run
history. S3 gives an atomic create (`If-None-Match: *`, supported by AWS, MinIO and SeaweedFS), and
the request's folder is already its home. Layout under the request's output path:

    _dsbridge/request.json                          the claim: parameters digest, owning DAG run
    _dsbridge/events/<sequence>-<event_id>.json     each final event built, byte for byte

Notebooks must not write under `_dsbridge/` (docs/contract.md says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from dsbridge.request import Request
from dsbridge.settings import parse_s3_uri

LEDGER_DIR = "_dsbridge/"
CLAIM_FILE = "request.json"
EVENTS_DIR = "events/"
# S3 answers 412 when the object exists, and (AWS) 409 while another conditional write is in flight.
PRECONDITION_FAILED = ("PreconditionFailed", "412")
CONDITIONAL_CONFLICT = ("ConditionalRequestConflict", "409")
MAX_LISTED_EVENTS = 1000


class Ownership(Enum):
    OWNER = "owner"  # this DAG run owns the request (first claim, or a retry/clear of it)
    DUPLICATE = "duplicate"  # another DAG run owns it with the same parameters: the same request
    CONFLICT = "conflict"  # another DAG run owns it with other parameters: refuse this one


@dataclass(frozen=True)
class Claim:
    ownership: Ownership
    holder: dict[str, Any]

    @property
    def holder_run_id(self) -> str:
        return str(self.holder.get("airflow", {}).get("dag_run_id", "?"))


class LedgerError(RuntimeError):
    """S3 answered something the ledger cannot work with; the message says what."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def claim_document(request: Request) -> dict[str, Any]:
    return {
        "job": request.job,
        "request_id": request.request_id,
        "params_sha256": request.params_digest,
        "airflow": {"dag_id": request.job, "dag_run_id": request.dag_run_id},
        "claimed_at": datetime.now(UTC).isoformat(),
    }


def ownership_of(request: Request, holder: dict[str, Any]) -> Ownership:
    """How `request` relates to the claim `holder` already in S3."""
    if holder.get("airflow", {}).get("dag_run_id") == request.dag_run_id:
        return Ownership.OWNER
    if holder.get("params_sha256") == request.params_digest:
        return Ownership.DUPLICATE
    return Ownership.CONFLICT


def event_key_name(sequence: int, event_id: str) -> str:
    """Zero-padded so that the listing order is the story's order."""
    return f"{sequence:06d}-{event_id}.json"


def parse_event_key(name: str) -> tuple[int, str] | None:
    stem = name.removesuffix(".json")
    sequence, _, event_id = stem.partition("-")
    if not sequence.isdigit() or not event_id.startswith("evt_"):
        return None
    return int(sequence), event_id


class RequestLedger:
    """The `_dsbridge/` folder of one request, through a boto3 S3 client."""

    def __init__(self, s3_client: Any, output_path: str) -> None:
        self.s3 = s3_client
        self.bucket, prefix = parse_s3_uri(output_path)
        self.prefix = prefix + LEDGER_DIR

    @property
    def claim_key(self) -> str:
        return self.prefix + CLAIM_FILE

    def claim(self, request: Request) -> Claim:
        """Claim the request id for this DAG run, or say who holds it (atomic: first writer wins)."""
        document = claim_document(request)
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.claim_key,
                Body=json.dumps(document, sort_keys=True).encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
            return Claim(Ownership.OWNER, document)
        except ClientError as exc:
            if _error_code(exc) not in PRECONDITION_FAILED + CONDITIONAL_CONFLICT:
                raise
            if _error_code(exc) in CONDITIONAL_CONFLICT:
                raise LedgerError(f"another claim of {self.claim_key} is being written; retry") from exc
        holder = self._read_json(self.claim_key)
        return Claim(ownership_of(request, holder), holder)

    def record_event(self, event: dict[str, Any], body: bytes) -> None:
        """Keep the event's exact bytes; a second write of the same event is a no-op."""
        key = self.prefix + EVENTS_DIR + event_key_name(int(event["sequence"]), str(event["event_id"]))
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")
        except ClientError as exc:
            if _error_code(exc) not in PRECONDITION_FAILED:
                raise

    def events(self) -> list[tuple[int, str, str]]:
        """(sequence, event id, key) of every recorded event, oldest first."""
        found: list[tuple[int, str, str]] = []
        token: str | None = None
        for _ in range(MAX_LISTED_EVENTS // 100):
            page = self.s3.list_objects_v2(
                Bucket=self.bucket,
                Prefix=self.prefix + EVENTS_DIR,
                MaxKeys=100,
                **({"ContinuationToken": token} if token else {}),
            )
            for item in page.get("Contents", []):
                parsed = parse_event_key(item["Key"].rsplit("/", 1)[-1])
                if parsed is not None:
                    found.append((*parsed, item["Key"]))
            token = page.get("NextContinuationToken")
            if not token:
                break
        return sorted(found)

    def latest_before(self, sequence: int) -> str | None:
        """The id of the newest recorded event that comes before `sequence` in the story."""
        earlier = [event_id for seq, event_id, _ in self.events() if seq < sequence]
        return earlier[-1] if earlier else None

    def event_at(self, sequence: int) -> bytes | None:
        """The exact bytes of the event recorded for `sequence`, if any."""
        for seq, _, key in self.events():
            if seq == sequence:
                return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return None

    def _read_json(self, key: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise LedgerError(f"s3://{self.bucket}/{key} is not JSON; it must be written only by dsbridge") from exc
        if not isinstance(value, dict):
            raise LedgerError(f"s3://{self.bucket}/{key} is not a JSON object")
        return value
