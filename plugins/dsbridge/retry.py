"""How dsbridge tasks retry: exponential backoff with per-request jitter, for a horizon of time.

Airflow's own exponential backoff jitters by (DAG, task, logical date, try). Requests are manual
runs without a logical date, so every request of a job would retry in lock-step after a shared
outage. `HorizonRetryPolicy` (Airflow's `retry_policy`, set in the DAG's `default_args`) jitters by
the DAG run instead, keeps retrying a *transient* failure (a dependency that is down or busy) until
its horizon has passed -- with one last try at the horizon -- and gives other failures the
contract's few retries. Failures that cannot get better raise `AirflowFailException`, which Airflow
never retries.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

from dsbridge.settings import load_settings

# Airflow's own fallback delays (a task whose worker died is retried without asking the policy).
FIRST_RETRY_DELAY = timedelta(seconds=5)
MAX_RETRY_DELAY = timedelta(minutes=30)
# Jitter spreads each delay over [0.5, 1.5) of its base.
JITTER_LOW, JITTER_SPAN = 0.5, 1.0
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException"}
)
FIRST_FAILURE_KEY = "first_failure_at"
GAVE_UP_KEY = "gave_up"
Horizon = Literal["databricks", "collect", "callback"]


class Transient(RuntimeError):
    """A dependency was down, busy or slow; a later try may succeed."""


def is_transient(exc: BaseException) -> bool:
    """Whether a later try may not fail the same way: connection trouble, timeouts, 408/429/5xx."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_itself(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, Transient | TimeoutError | ConnectionError):
        return True
    name = type(exc).__name__
    # tenacity's RetryError: the Databricks hook gave up after its own retries of transient errors.
    if name in ("RetryError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError"):
        return True
    status = getattr(exc, "http_status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and status in TRANSIENT_HTTP:
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in TRANSIENT_S3_CODES or (isinstance(http, int) and http in TRANSIENT_HTTP)
    module = type(exc).__module__
    return "Timeout" in name or (module.startswith(("requests.", "urllib3.", "aiohttp.")) and "Connect" in name)


def jitter(*parts: object) -> float:
    """A number in [0, 1) that is stable for the same parts and differs between requests."""
    digest = hashlib.sha256("\n".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def backoff(try_number: int, key: tuple[object, ...], first: timedelta, cap: timedelta) -> timedelta:
    """Delay after try `try_number` (1-based): doubling from `first` up to `cap`, jittered by `key`."""
    doublings = min(max(try_number - 1, 0), 60)  # try numbers grow without bound across clears
    base = min(cap.total_seconds(), first.total_seconds() * 2**doublings)
    return timedelta(seconds=base * (JITTER_LOW + JITTER_SPAN * jitter(*key, try_number)))


def retries_to_cover(horizon: timedelta, first: timedelta | None = None, cap: timedelta | None = None) -> int:
    """Enough retries that even the shortest jittered delays keep trying for the whole `horizon`."""
    settings = load_settings()
    first = first or settings.retry_first_delay
    cap = cap or settings.retry_max_delay
    retries, covered, delay = 0, timedelta(0), first
    while covered < horizon and retries < 1000:
        retries += 1
        covered += delay * JITTER_LOW
        delay = min(cap, delay * 2)
    return retries + 1  # the last try at the horizon itself


def horizon_of(kind: Horizon) -> timedelta:
    settings = load_settings()
    return {
        "databricks": settings.databricks_horizon,
        "collect": settings.collect_horizon,
        "callback": settings.callback_horizon,
    }[kind]


class HorizonRetryPolicy(RetryPolicy):
    """Retry transient failures until the horizon has passed; other failures `other_retries` times.

    The horizon is read from the settings when a try fails, and counted from the first failure of
    the DAG run's current attempt (kept in the task state store, so it survives the retries).
    """

    def __init__(self, horizon: Horizon, other_retries: int = 2) -> None:
        self.horizon = horizon
        self.other_retries = other_retries

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        settings = load_settings()
        delay = backoff(try_number, _jitter_key(context), settings.retry_first_delay, settings.retry_max_delay)
        if not is_transient(exception):
            if try_number > self.other_retries:
                return RetryDecision.fail(f"not a transient failure and {self.other_retries} retries are used up")
            return RetryDecision.retry(delay, f"retry {try_number} of {self.other_retries} in {delay}")
        horizon = horizon_of(self.horizon)
        elapsed = _since_first_failure(context)
        left = horizon - elapsed
        if left <= timedelta(0):
            _remember(context, GAVE_UP_KEY, f"gave up after {elapsed} of transient failures: {exception}")
            return RetryDecision.fail(f"transient failures for {elapsed}, past the {self.horizon} horizon {horizon}")
        delay = min(delay, left)
        return RetryDecision.retry(delay, f"transient failure; retrying in {delay} ({left} left of {horizon})")

    def serialize(self) -> dict[str, Any]:
        return {"__type": type(self).__name__, "horizon": self.horizon, "other_retries": self.other_retries}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> HorizonRetryPolicy:
        return cls(horizon=data["horizon"], other_retries=int(data.get("other_retries", 2)))


def _attempt(context: Any) -> int:
    return int(getattr((context or {}).get("dag_run"), "clear_number", 0) or 0)


def _jitter_key(context: Any) -> tuple[object, ...]:
    ti = (context or {}).get("ti")
    return (getattr(ti, "dag_id", ""), getattr(ti, "run_id", ""), getattr(ti, "task_id", ""), _attempt(context))


def _store(context: Any) -> Any:
    return (context or {}).get("task_state_store")


def _remember(context: Any, name: str, value: str) -> None:
    store = _store(context)
    if store is not None:
        store.set(f"{name}:{_attempt(context)}", value)


def _since_first_failure(context: Any) -> timedelta:
    """Time since this attempt's first failure; the first failure is recorded now."""
    now = datetime.now(UTC)
    store = _store(context)
    if store is None:
        return timedelta(0)
    key = f"{FIRST_FAILURE_KEY}:{_attempt(context)}"
    first = store.get(key)
    if not first:
        store.set(key, now.isoformat())
        return timedelta(0)
    return now - datetime.fromisoformat(str(first))
