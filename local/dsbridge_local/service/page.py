"""The service's HTML page: per request the event that counts, and below it what it replaced.

Why a page at all: a person watching a demo (or debugging a request) wants to see at a glance how
each request ended, and that a cleared run's newer event did replace the older one. Every value is
HTML-escaped: payload fields come from the network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from string import Template
from typing import Any

from dsbridge.client import RequestState, StoredEvent


def _text(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(stored: StoredEvent) -> str:
    """One line about the outcome."""
    event = stored.event
    if event.error is not None:
        return f"error [{event.error.code}]: {_text(event.error.message)}"
    parts = []
    if event.result is not None:
        parts.append("result: " + _text(event.result))
    if event.result_location:
        parts.append("at " + _text(event.result_location))
    return "; ".join(parts) or "-"


def _mark(state: RequestState, stored: StoredEvent) -> str:
    role = state.role(stored)
    if role == "refusal":
        return "refused: another run reused this request id with other parameters"
    if role == "superseded" and state.latest is not None:
        return f"superseded by {state.latest.event_id}"
    return "latest"


def _row(state: RequestState, stored: StoredEvent) -> str:
    event = stored.event
    role = state.role(stored)
    cells = [
        stored.last_received_at.replace("T", " ").removesuffix("+00:00"),
        event.type,
        event.job,
        event.request_id,
        f"{event.attempt} / {event.sequence}",
        summarize(stored),
        str(stored.deliveries),
        _mark(state, stored),
    ]
    css = f"{event.type.replace('.', '-')} {role}"
    tds = "".join(
        f'<td class="summary">{html.escape(c)}</td>' if i == 5 else f"<td>{html.escape(c)}</td>"
        for i, c in enumerate(cells)
    )
    return f'      <tr class="{html.escape(css, quote=True)}">{tds}</tr>'


def render_page(states: Sequence[RequestState]) -> str:
    """Requests most recently active first; in each, the latest event, then the others newest first."""
    template = Template(resources.files("dsbridge_local.service").joinpath("page.html").read_text("utf-8"))
    rows = []
    for state in states:
        others = [e for e in reversed(state.history) if state.latest is None or e.event_id != state.latest.event_id]
        rows += [_row(state, e) for e in ([state.latest] if state.latest else []) + others]
    return template.substitute(
        requests=len(states),
        events=sum(len(s.history) for s in states),
        rows="\n".join(rows) or '      <tr><td colspan="8">none yet</td></tr>',
    )
