"""The ten-line receiver in docs/service.md works as printed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dsbridge.callback.event import encode
from tests.unit.client.events import SECRET, event, refusal, signed

DOC = Path(__file__).resolve().parents[3] / "docs" / "service.md"


def receiver_block() -> str:
    section = DOC.read_text().split("## A receiver in ten lines", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "docs/service.md lost its receiver example"
    return found.group(1)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("CALLBACK_SECRETS", SECRET)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(receiver_block(), str(DOC), "exec"), namespace)
    return TestClient(namespace["app"])


def post(client: TestClient, payload: dict[str, Any] | bytes, **kw: Any) -> Any:
    body, headers = signed(payload, **kw)
    return client.post("/callbacks/dsbridge", content=body, headers=headers)


def test_documented_receiver_answers_every_status(client: TestClient) -> None:
    newer, older = event(attempt=1), event()
    assert post(client, newer).json() == {"status": "stored"}
    assert post(client, newer).json() == {"status": "duplicate"}
    assert post(client, older).json() == {"status": "superseded"}
    assert post(client, refusal()).json() == {"status": "refusal"}


def test_documented_receiver_refuses_forgeries_and_broken_events(client: TestClient) -> None:
    body, headers = signed(event())
    assert client.post("/callbacks/dsbridge", content=body + b" ", headers=headers).status_code == 401
    broken = event()
    del broken["sequence"]
    r = post(client, encode(broken), webhook_id=broken["event_id"])
    assert r.status_code == 400 and "field 'sequence'" in r.json()["error"]
