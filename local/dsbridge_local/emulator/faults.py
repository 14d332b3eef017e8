"""Fault injection, so tests can show that dsbridge survives a misbehaving workspace.

Faults mimic what a real workspace does under stress: 429 REQUEST_LIMIT_EXCEEDED and 503
TEMPORARILY_UNAVAILABLE answers (both with `Retry-After`, which the SDK honours), added latency,
and a forced terminal state for new runs. They are set by CLI flags at start and changed at run
time through `POST /emulator/faults`. Every value is bounded, and draws come from a seedable RNG so
a failing scenario can be replayed.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

FORCEABLE_STATES = ("SUCCESS", "FAILED", "CANCELED", "TIMEDOUT", "INTERNAL_ERROR")
MAX_LATENCY_MS = 60_000
MAX_RETRY_AFTER_S = 60


@dataclass
class FaultSettings:
    """The current fault configuration (all off by default)."""

    rate_429: float = 0.0
    rate_503: float = 0.0
    latency_ms: int = 0
    submit_answer_delay_ms: int = 0
    retry_after_s: int = 1
    force_state: str | None = None
    seed: int | None = None


class FaultError(ValueError):
    """A fault setting out of bounds or of the wrong type."""


def _rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultError(f"{name} must be a number between 0 and 1")
    if not 0.0 <= float(value) <= 1.0:
        raise FaultError(f"{name} must be between 0 and 1")
    return float(value)


def _bounded_int(value: Any, name: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{name} must be an integer between 0 and {upper}")
    if not 0 <= value <= upper:
        raise FaultError(f"{name} must be between 0 and {upper}")
    return value


class Faults:
    """Thread-safe holder of the settings and the RNG they draw from."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        self._rng = random.Random()
        self.update(asdict(settings or FaultSettings()))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._settings)

    def update(self, changes: Any) -> dict[str, Any]:
        """Apply a partial update (validated as a whole first); return the new settings."""
        if not isinstance(changes, dict):
            raise FaultError("the body must be a JSON object of fault settings")
        unknown = set(changes) - set(asdict(FaultSettings()))
        if unknown:
            raise FaultError(f"unknown fault settings: {sorted(unknown)}")
        with self._lock:
            merged = asdict(self._settings)
            merged.update(changes)
            new = FaultSettings(
                rate_429=_rate(merged["rate_429"], "rate_429"),
                rate_503=_rate(merged["rate_503"], "rate_503"),
                latency_ms=_bounded_int(merged["latency_ms"], "latency_ms", MAX_LATENCY_MS),
                submit_answer_delay_ms=_bounded_int(
                    merged["submit_answer_delay_ms"], "submit_answer_delay_ms", MAX_LATENCY_MS
                ),
                retry_after_s=_bounded_int(merged["retry_after_s"], "retry_after_s", MAX_RETRY_AFTER_S),
                force_state=merged["force_state"] or None,
                seed=merged["seed"],
            )
            if new.force_state is not None and new.force_state not in FORCEABLE_STATES:
                raise FaultError(f"force_state must be one of {FORCEABLE_STATES} or null")
            if new.seed is not None and (isinstance(new.seed, bool) or not isinstance(new.seed, int)):
                raise FaultError("seed must be an integer or null")
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            self._settings = new
            return asdict(new)

    def draw(self) -> tuple[int, int | None]:
        """Decide the fate of one API request: (latency ms, injected status or None)."""
        with self._lock:
            settings = self._settings
            status: int | None = None
            if settings.rate_429 and self._rng.random() < settings.rate_429:
                status = 429
            elif settings.rate_503 and self._rng.random() < settings.rate_503:
                status = 503
            return settings.latency_ms, status

    def retry_after(self) -> int:
        with self._lock:
            return self._settings.retry_after_s

    def submit_answer_delay(self) -> float:
        """Seconds to hold a `runs/submit` answer back after the run was created."""
        with self._lock:
            return self._settings.submit_answer_delay_ms / 1000

    def forced_state(self) -> str | None:
        with self._lock:
            return self._settings.force_state
