"""S3 clients for tasks: no stack walk for the user agent, and botocore's models parsed once."""

from __future__ import annotations

import inspect
from unittest import mock

import boto3
import botocore.loaders
import botocore.session
import pytest

from dsbridge.s3 import DsbridgeS3Hook, share_botocore_models, warm_s3_models


def new_s3_client() -> object:
    session = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1")
    return session.client("s3", endpoint_url="http://127.0.0.1:9")


CONN = "aws://key:secret@/?endpoint_url=http%3A%2F%2F127.0.0.1%3A9&region_name=us-east-1"


@pytest.fixture
def own_loader_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test shares models from scratch; botocore's factory is restored afterwards."""
    monkeypatch.setattr(botocore.session, "create_loader", botocore.loaders.create_loader)


def test_the_hook_names_its_caller_without_walking_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", CONN)
    with mock.patch.object(inspect, "stack", side_effect=AssertionError("inspect.stack() called")):
        client = DsbridgeS3Hook(aws_conn_id="aws_default", caller="CollectNotebookOutputOperator").get_conn()
    assert "Caller/CollectNotebookOutputOperator" in client.meta.config.user_agent_extra
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_sessions_share_parsed_models_once_shared(own_loader_factory: None) -> None:
    share_botocore_models()
    share_botocore_models()  # a second call changes nothing
    warm_s3_models()
    with mock.patch.object(botocore.loaders.JSONFileLoader, "load_file", side_effect=AssertionError("parsed again")):
        client = new_s3_client()
    assert client.meta.service_model.service_name == "s3"  # type: ignore[attr-defined]


def test_without_sharing_each_session_parses_the_models_again(own_loader_factory: None) -> None:
    """The cost the sharing removes (and proof that the test above can fail)."""
    new_s3_client()
    parse = botocore.loaders.JSONFileLoader().load_file
    with mock.patch.object(botocore.loaders.JSONFileLoader, "load_file", wraps=parse) as load:
        new_s3_client()
    assert load.call_count > 0


def test_sessions_keep_their_own_search_paths(own_loader_factory: None) -> None:
    share_botocore_models()
    first = boto3.session.Session()._loader
    second = boto3.session.Session()._loader
    assert first is not second and first._cache is second._cache
    assert first.search_paths == second.search_paths
