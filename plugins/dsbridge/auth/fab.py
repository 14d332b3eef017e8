"""The FAB auth manager for production, with the optimization service held to its policy.

A FAB role alone cannot express the policy: triggering needs `can_edit` on DAGs, which also allows
pausing, clearing and every other DAG-run change. So users holding the `dsbridge_service` role
(`dsbridge.auth.fab_role`) get the FAB answer AND `dsbridge.auth.policy`. Set
`AIRFLOW__CORE__AUTH_MANAGER=dsbridge.auth.fab.DsbridgeFabAuthManager`.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

from dsbridge.auth.fab_role import SERVICE_ROLE
from dsbridge.auth.service_role import ServiceRoleMixin


class DsbridgeFabAuthManager(ServiceRoleMixin, FabAuthManager):
    """FabAuthManager where holders of `dsbridge_service` are the service."""

    def _is_service(self, user: Any) -> bool:
        return any(role.name == SERVICE_ROLE for role in getattr(user, "roles", None) or ())
