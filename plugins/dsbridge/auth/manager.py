"""Airflow's simple auth manager for the local stack, with the optimization service held to its policy.

The service logs in as a `user`-role account. For that role every decision goes through
`dsbridge.auth.policy` (trigger, read and cancel its own runs of job DAGs; nothing else). Pools and
configuration also need the OP role even for reading, which the stock manager grants to every
viewer. Admins and ops keep the stock manager's answers. Production uses the FAB auth manager with
the same policy (`dsbridge.auth.fab`).
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager, SimpleAuthManagerRole

from dsbridge.auth.service_role import ServiceRoleMixin


class DsbridgeAuthManager(ServiceRoleMixin, SimpleAuthManager):
    """SimpleAuthManager where the `user` role is the service and pools/configuration need OP."""

    def _is_service(self, user: Any) -> bool:
        return str(getattr(user, "role", None) or "").upper() == SimpleAuthManagerRole.USER.name

    def is_authorized_pool(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return self._is_authorized(
            method=method,
            allow_role=SimpleAuthManagerRole.OP,
            user=user,
            team_name=details.team_name if details else None,
        )

    def is_authorized_configuration(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return self._is_authorized(method=method, allow_role=SimpleAuthManagerRole.OP, user=user)
