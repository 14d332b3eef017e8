"""Airflow's simple auth manager, with pools and configuration closed to the API user.

The optimization service logs in as a `user`-role account: it may trigger and follow DAG runs, and
the simple auth manager already keeps it away from connections and variables. This subclass also
denies it reading pools and configuration (OP role and above only), which the stock manager grants
to every viewer. Deployments with per-DAG access control use the FAB auth manager instead.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager, SimpleAuthManagerRole


class DsbridgeAuthManager(SimpleAuthManager):
    """SimpleAuthManager where pools and configuration need the OP role even for GET."""

    def is_authorized_pool(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return self._is_authorized(
            method=method,
            allow_role=SimpleAuthManagerRole.OP,
            user=user,
            team_name=details.team_name if details else None,
        )

    def is_authorized_configuration(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return self._is_authorized(method=method, allow_role=SimpleAuthManagerRole.OP, user=user)
