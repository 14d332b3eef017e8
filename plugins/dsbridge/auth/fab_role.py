"""The FAB role of the optimization service: only the permissions its allowed calls need.

FAB checks `can_create` on DAG Runs plus `can_edit` on DAGs for a trigger, `can_edit` on DAG Runs
plus DAGs for a cancel, and `can_read` on DAGs, DAG Runs and Task Instances for the reads. `can_edit`
on DAGs would also allow pausing and clearing, which is why the role is only safe together with
`DsbridgeFabAuthManager`, which holds its users to `dsbridge.auth.policy`.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.www.security import permissions

SERVICE_ROLE = "dsbridge_service"

# (action, resource)
SERVICE_PERMISSIONS = frozenset(
    {
        (permissions.ACTION_CAN_READ, permissions.RESOURCE_DAG),
        (permissions.ACTION_CAN_EDIT, permissions.RESOURCE_DAG),
        (permissions.ACTION_CAN_READ, permissions.RESOURCE_DAG_RUN),
        (permissions.ACTION_CAN_CREATE, permissions.RESOURCE_DAG_RUN),
        (permissions.ACTION_CAN_EDIT, permissions.RESOURCE_DAG_RUN),
        (permissions.ACTION_CAN_READ, permissions.RESOURCE_TASK_INSTANCE),
    }
)


def role_import_entries() -> list[dict[str, str]]:
    """The role in the format of `airflow roles import` (one entry per resource)."""
    by_resource: dict[str, list[str]] = {}
    for action, resource in sorted(SERVICE_PERMISSIONS):
        by_resource.setdefault(resource, []).append(action)
    return [
        {"name": SERVICE_ROLE, "resource": resource, "action": ",".join(actions)}
        for resource, actions in sorted(by_resource.items())
    ]


def sync_service_role(security_manager: Any) -> list[str]:
    """Create the role or make its permissions exactly `SERVICE_PERMISSIONS`; say what changed."""
    role = security_manager.add_role(SERVICE_ROLE)
    held = {(p.action.name, p.resource.name): p for p in role.permissions}
    changes = []
    for action, resource in sorted(SERVICE_PERMISSIONS - held.keys()):
        security_manager.add_permission_to_role(role, security_manager.create_permission(action, resource))
        changes.append(f"added {action} on {resource}")
    for action, resource in sorted(held.keys() - SERVICE_PERMISSIONS):
        security_manager.remove_permission_from_role(role, held[action, resource])
        changes.append(f"removed {action} on {resource}")
    return changes


def write_service_role() -> list[str]:
    """`sync_service_role` in the Airflow database the AIRFLOW__* environment names."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        return sync_service_role(appbuilder.sm)


def report(changes: list[str]) -> str:
    lines = [f"  {change}" for change in changes]
    lines.append(f"role {SERVICE_ROLE}: {len(changes)} change(s); it now holds exactly the service's permissions")
    return "\n".join(lines)


if __name__ == "__main__":  # `python -m dsbridge.auth.fab_role`: images without the local kit's command
    print(report(write_service_role()))
