"""The API user's role may not read pools or configuration; ops and admins may."""

from __future__ import annotations

import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

from dsbridge.auth.manager import DsbridgeAuthManager


@pytest.mark.parametrize(
    ("role", "method", "allowed"),
    [
        ("user", "GET", False),
        ("viewer", "GET", False),
        ("user", "POST", False),
        ("op", "GET", True),
        ("op", "PUT", True),
        ("admin", "GET", True),
    ],
)
def test_pools_and_configuration_need_op(role, method, allowed):
    manager = DsbridgeAuthManager()
    user = SimpleAuthManagerUser(username="someone", role=role)
    assert manager.is_authorized_pool(method=method, user=user) is allowed
    assert manager.is_authorized_configuration(method=method, user=user) is allowed


def test_dags_stay_open_to_the_api_user():
    user = SimpleAuthManagerUser(username="optimization-service", role="user")
    assert DsbridgeAuthManager().is_authorized_dag(method="POST", user=user) is True
    assert DsbridgeAuthManager().is_authorized_connection(method="GET", user=user) is False
