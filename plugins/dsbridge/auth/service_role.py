"""The service policy as an auth-manager mixin, shared by the simple and the FAB auth manager.

For users the concrete manager calls the service (`_is_service`), every DAG decision must pass both
the parent manager and `policy.decide` for the request being served; every other kind of resource
is refused. Other users get the parent manager's answers unchanged.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

from dsbridge.auth import policy
from dsbridge.auth.guard import RequestGuard, current_request
from dsbridge.auth.lookup import JobDags, load_run


class ServiceRoleMixin(BaseAuthManager[Any]):
    """Put before the auth manager it restricts: `class M(ServiceRoleMixin, SomeAuthManager)`."""

    job_dags = JobDags()

    @abstractmethod
    def _is_service(self, user: Any) -> bool:
        """Whether `user` is the optimization service (held to the policy)."""

    @property
    def _parent(self) -> Any:
        """The restricted auth manager (the next class in the MRO)."""
        return super()

    def get_fastapi_middlewares(self) -> list[tuple[Any, dict[str, Any]]]:
        return [*self._parent.get_fastapi_middlewares(), (RequestGuard, {})]

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        allowed = self._parent.is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
        if not allowed or not self._is_service(user):
            return bool(allowed)
        return self._service_may(str(method), access_entity, details, user)

    def _service_may(self, method: str, access_entity: Any, details: Any, user: Any) -> bool:
        dag_id = details.id if details else None
        decision = policy.decide(
            method=method,
            entity=access_entity.name if access_entity else None,
            dag_id=dag_id,
            request=current_request(),
            job_dags=self.job_dags(dag_id),
        )
        if dag_id is None or decision.cancel_run is None:
            return decision.allowed
        run = load_run(dag_id, decision.cancel_run)
        return run is not None and policy.may_cancel(
            triggered_by=run.triggered_by, state=run.state, user_name=str(user.get_name())
        )

    def get_authorized_dag_ids(self, *, user: Any, method: Any = "GET", **kwargs: Any) -> set[str]:
        # FAB answers this from its permissions alone; the service's answer goes through the policy.
        dag_ids: set[str] = self._parent.get_authorized_dag_ids(user=user, method=method, **kwargs)
        if not self._is_service(user):
            return dag_ids
        return self.filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method=method)

    def filter_authorized_menu_items(self, menu_items: list[Any], user: Any) -> list[Any]:
        return [] if self._is_service(user) else list(self._parent.filter_authorized_menu_items(menu_items, user=user))

    # Everything but DAGs is closed to the service.

    def is_authorized_configuration(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_configuration(
            method=method, user=user, details=details
        )

    def is_authorized_connection(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_connection(
            method=method, user=user, details=details
        )

    def is_authorized_asset(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_asset(
            method=method, user=user, details=details
        )

    def is_authorized_asset_alias(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_asset_alias(
            method=method, user=user, details=details
        )

    def is_authorized_pool(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_pool(method=method, user=user, details=details)

    def is_authorized_variable(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_variable(
            method=method, user=user, details=details
        )

    def is_authorized_team(self, *, method: Any, user: Any, details: Any = None) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_team(method=method, user=user, details=details)

    def is_authorized_view(self, *, access_view: Any, user: Any, **kwargs: Any) -> bool:
        # FAB takes a `team_name` too.
        return not self._is_service(user) and self._parent.is_authorized_view(
            access_view=access_view, user=user, **kwargs
        )

    def is_authorized_custom_view(self, *, method: Any, resource_name: str, user: Any) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_custom_view(
            method=method, resource_name=resource_name, user=user
        )

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        return not self._is_service(user) and self._parent.is_authorized_hitl_task(
            assigned_users=assigned_users, user=user
        )
