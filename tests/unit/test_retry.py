"""Retries: transient failures are retried until their horizon, per-request jitter, the rest a few times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.sdk.definitions.retry_policy import RetryAction
from airflow.sdk.exceptions import AirflowException
from botocore.exceptions import ClientError, EndpointConnectionError
from requests.exceptions import ConnectionError as RequestsConnectionError
from tenacity import RetryError

from dsbridge.retry import (
    FIRST_RETRY_DELAY,
    MAX_RETRY_DELAY,
    HorizonRetryPolicy,
    Transient,
    backoff,
    is_transient,
    retries_to_cover,
)
from tests.unit.conftest import FakeTaskStateStore


def context(run_id: str = "req-1", clear_number: int = 0) -> dict:
    return {
        "ti": SimpleNamespace(dag_id="job", run_id=run_id, task_id="notify_success"),
        "dag_run": SimpleNamespace(clear_number=clear_number),
        "task_state_store": FakeTaskStateStore(),
    }


def hook_gave_up() -> AirflowException:
    try:
        raise AirflowException("API requests to Databricks failed 3 times. Giving up.") from RetryError(None)
    except AirflowException as exc:
        return exc


def s3_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (Transient("receiver answered 503"), True),
        (ConnectionError("refused"), True),
        (TimeoutError(), True),
        (RequestsConnectionError("refused"), True),
        (hook_gave_up(), True),
        (DatabricksApiError("busy", http_status_code=429), True),
        (DatabricksApiError("down", http_status_code=503), True),
        (DatabricksApiError("bad payload", http_status_code=400), False),
        (DatabricksApiError("no such run", http_status_code=404), False),
        (EndpointConnectionError(endpoint_url="http://s3"), True),
        (s3_error("SlowDown", 503), True),
        (s3_error("InternalError", 500), True),
        (s3_error("AccessDenied", 403), False),
        (s3_error("NoSuchKey", 404), False),
        (ValueError("a bug"), False),
        (KeyError("threshold"), False),
    ],
)
def test_what_counts_as_transient(exc, transient):
    assert is_transient(exc) is transient


def test_a_transient_cause_makes_the_wrapper_transient():
    try:
        try:
            raise ConnectionError("refused")
        except ConnectionError as inner:
            raise RuntimeError("could not read the output") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_jitter_is_per_request_and_stable():
    delays = {backoff(1, ("job", f"req-{i}", "notify", 0), FIRST_RETRY_DELAY, MAX_RETRY_DELAY) for i in range(50)}
    assert len(delays) > 40  # requests that failed together do not retry together
    assert all(timedelta(seconds=2.5) <= d < timedelta(seconds=7.5) for d in delays)
    key = ("job", "req-1", "notify", 0)
    assert backoff(3, key, FIRST_RETRY_DELAY, MAX_RETRY_DELAY) == backoff(3, key, FIRST_RETRY_DELAY, MAX_RETRY_DELAY)


def test_backoff_doubles_up_to_the_cap():
    key = ("job", "req-1", "t", 0)
    bases = [backoff(n, key, timedelta(seconds=5), timedelta(minutes=30)) for n in (1, 2, 3, 20)]
    assert bases[0] < bases[2]
    assert bases[3] < timedelta(minutes=45)


def test_transient_failures_are_retried_until_the_horizon(monkeypatch):
    monkeypatch.setenv("DSBRIDGE_CALLBACK_HORIZON_MINUTES", "60")
    policy, ctx = HorizonRetryPolicy("callback"), context()
    first = policy.evaluate(Transient("503"), try_number=1, max_tries=100, context=ctx)
    assert first.action is RetryAction.RETRY
    assert timedelta(seconds=2.5) <= first.retry_delay < timedelta(seconds=7.5)

    # 59 minutes later: one last try, exactly at the horizon.
    started = datetime.fromisoformat(ctx["task_state_store"].values["first_failure_at:0"])
    ctx["task_state_store"].values["first_failure_at:0"] = (started - timedelta(minutes=59)).isoformat()
    last = policy.evaluate(Transient("503"), try_number=9, max_tries=100, context=ctx)
    assert last.action is RetryAction.RETRY
    assert timedelta(seconds=59) <= last.retry_delay <= timedelta(minutes=1)

    ctx["task_state_store"].values["first_failure_at:0"] = (started - timedelta(minutes=61)).isoformat()
    done = policy.evaluate(Transient("503"), try_number=10, max_tries=100, context=ctx)
    assert done.action is RetryAction.FAIL
    assert "gave up after" in ctx["task_state_store"].values["gave_up:0"]


def test_a_new_attempt_gets_a_fresh_horizon(monkeypatch):
    monkeypatch.setenv("DSBRIDGE_CALLBACK_HORIZON_MINUTES", "1")
    policy, ctx = HorizonRetryPolicy("callback"), context()
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ctx["task_state_store"].values["first_failure_at:0"] = long_ago
    assert policy.evaluate(Transient("x"), 5, 100, ctx).action is RetryAction.FAIL
    ctx["dag_run"].clear_number = 1
    assert policy.evaluate(Transient("x"), 6, 100, ctx).action is RetryAction.RETRY


def test_other_failures_get_only_their_few_retries():
    policy = HorizonRetryPolicy("databricks", other_retries=2)
    assert policy.evaluate(KeyError("x"), 1, 100, context()).action is RetryAction.RETRY
    assert policy.evaluate(KeyError("x"), 2, 100, context()).action is RetryAction.RETRY
    assert policy.evaluate(KeyError("x"), 3, 100, context()).action is RetryAction.FAIL


@pytest.mark.parametrize("horizon", [timedelta(minutes=1), timedelta(minutes=30), timedelta(hours=6)])
def test_retries_cover_the_horizon_even_with_the_shortest_delays(horizon):
    retries = retries_to_cover(horizon)
    shortest = sum((min(MAX_RETRY_DELAY, FIRST_RETRY_DELAY * 2**n) * 0.5 for n in range(retries - 1)), timedelta(0))
    assert shortest >= horizon


def test_the_policy_round_trips_through_serialization():
    policy = HorizonRetryPolicy("collect", other_retries=3)
    again = HorizonRetryPolicy.deserialize(policy.serialize())
    assert (again.horizon, again.other_retries) == ("collect", 3)


def test_short_delays_and_long_horizons_and_huge_try_numbers_do_not_overflow(monkeypatch):
    monkeypatch.setenv("DSBRIDGE_RETRY_MAX_DELAY_MINUTES", "0.25")
    assert retries_to_cover(timedelta(hours=6)) > 100
    assert backoff(5000, ("j", "r", "t", 0), FIRST_RETRY_DELAY, MAX_RETRY_DELAY) < timedelta(minutes=45)
