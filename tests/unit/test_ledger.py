"""The request ledger against a real S3 server (SeaweedFS): atomic claims, byte-exact events."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dsbridge.ledger import LedgerError, Ownership, RequestLedger
from dsbridge.request import Request
from dsbridge_local.stack.s3 import SeaweedS3, client

BUCKET = "ledger-test"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with SeaweedS3(Path(tmp_path_factory.mktemp("ledger")), "ledgerkey", "ledgersecret0123456789") as server:
        server.ensure_bucket(BUCKET)
        yield client(server.endpoint, "ledgerkey", "ledgersecret0123456789")


def request(request_id: str, dag_run_id: str, merchant: str = "m1", attempt: int = 0) -> Request:
    return Request(
        job="job",
        request_id=request_id,
        dag_run_id=dag_run_id,
        attempt=attempt,
        conf={"merchant_id": merchant, "request_id": request_id},
        output_path=f"s3://{BUCKET}/runs/job/{request_id}/",
    )


def ledger(s3: Any, req: Request) -> RequestLedger:
    return RequestLedger(s3, req.output_path)


def test_first_claim_owns_and_the_same_run_keeps_owning(s3):
    first = request("req-own", "run-a")
    assert ledger(s3, first).claim(first).ownership is Ownership.OWNER
    retried = request("req-own", "run-a", attempt=3)  # a retry or a clear of the same DAG run
    assert ledger(s3, retried).claim(retried).ownership is Ownership.OWNER


def test_another_run_is_a_duplicate_with_the_same_parameters_and_a_conflict_with_others(s3):
    owner = request("req-x", "run-a", "m1")
    ledger(s3, owner).claim(owner)
    same = request("req-x", "run-b", "m1")
    other = request("req-x", "run-c", "m2")
    assert ledger(s3, same).claim(same).ownership is Ownership.DUPLICATE
    claim = ledger(s3, other).claim(other)
    assert claim.ownership is Ownership.CONFLICT and claim.holder_run_id == "run-a"


def test_the_request_id_in_the_conf_does_not_change_the_parameters():
    a = Request("job", "req-1", "r", 0, {"m": 1, "request_id": "req-1"}, "s3://b/p/")
    b = Request("job", "req-1", "r", 0, {"m": 1}, "s3://b/p/")
    c = Request("job", "req-1", "r", 0, {"m": 2}, "s3://b/p/")
    assert a.params_digest == b.params_digest != c.params_digest


def test_concurrent_claims_have_exactly_one_owner(s3):
    """Twenty DAG runs race for one request id: S3's conditional create picks one."""
    results: list[Ownership] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        req = request("req-race", f"run-{i}", merchant=f"m{i % 2}")
        outcome = ledger(s3, req).claim(req).ownership
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results.count(Ownership.OWNER) == 1
    assert len(results) == 20


def test_events_are_kept_byte_for_byte_in_story_order(s3):
    req = request("req-events", "run-a")
    book = ledger(s3, req)
    first = {"event_id": "evt_" + "a" * 32, "sequence": 1}
    second = {"event_id": "evt_" + "b" * 32, "sequence": 3}
    book.record_event(second, b'{"second": true}')
    book.record_event(first, b'{"first": true}')
    book.record_event(first, b'{"first": "rewritten"}')  # a re-record never changes the bytes

    assert [(seq, eid) for seq, eid, _ in book.events()] == [(1, first["event_id"]), (3, second["event_id"])]
    assert book.latest_before(3) == first["event_id"]
    assert book.latest_before(4) == second["event_id"]
    assert book.latest_before(1) is None
    assert book.event_at(1) == b'{"first": true}'
    assert book.event_at(2) is None


def test_a_claim_that_is_not_dsbridges_is_a_clear_error(s3):
    req = request("req-garbage", "run-a")
    s3.put_object(Bucket=BUCKET, Key="runs/job/req-garbage/_dsbridge/request.json", Body=b"not json")
    with pytest.raises(LedgerError, match="must be written only by dsbridge"):
        ledger(s3, req).claim(req)


def test_the_claim_records_who_and_what(s3):
    req = request("req-doc", "run-z")
    ledger(s3, req).claim(req)
    body = s3.get_object(Bucket=BUCKET, Key="runs/job/req-doc/_dsbridge/request.json")["Body"].read()
    claim = json.loads(body)
    assert claim["airflow"] == {"dag_id": "job", "dag_run_id": "run-z"}
    assert claim["params_sha256"] == req.params_digest and claim["request_id"] == "req-doc"
