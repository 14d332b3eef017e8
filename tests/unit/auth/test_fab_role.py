"""The FAB role of the service: its exact permissions, the sync, the import JSON and the docs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dsbridge.auth.fab_role import SERVICE_PERMISSIONS, SERVICE_ROLE, role_import_entries, sync_service_role
from dsbridge_local.cli.main import main

REPO = Path(__file__).resolve().parents[3]


class FakeSecurityManager:
    """The part of FAB's security manager the sync uses, over an in-memory role."""

    def __init__(self, held: set[tuple[str, str]]) -> None:
        self.role = SimpleNamespace(name=SERVICE_ROLE, permissions=[self.create_permission(*p) for p in held])

    def add_role(self, name: str) -> Any:
        assert name == SERVICE_ROLE
        return self.role

    def create_permission(self, action: str, resource: str) -> Any:
        return SimpleNamespace(action=SimpleNamespace(name=action), resource=SimpleNamespace(name=resource))

    def add_permission_to_role(self, role: Any, permission: Any) -> None:
        role.permissions.append(permission)

    def remove_permission_from_role(self, role: Any, permission: Any) -> None:
        role.permissions.remove(permission)

    def held(self) -> set[tuple[str, str]]:
        return {(p.action.name, p.resource.name) for p in self.role.permissions}


def test_the_role_is_what_the_allowed_calls_need_and_nothing_more():
    assert {
        ("can_read", "DAGs"),
        ("can_edit", "DAGs"),
        ("can_read", "DAG Runs"),
        ("can_create", "DAG Runs"),
        ("can_edit", "DAG Runs"),
        ("can_read", "Task Instances"),
    } == SERVICE_PERMISSIONS


def test_sync_creates_the_role_and_resets_extra_permissions():
    fresh = FakeSecurityManager(set())
    assert len(sync_service_role(fresh)) == len(SERVICE_PERMISSIONS)
    assert fresh.held() == SERVICE_PERMISSIONS
    assert sync_service_role(fresh) == []

    widened = FakeSecurityManager(set(SERVICE_PERMISSIONS) | {("can_read", "XComs"), ("can_delete", "DAGs")})
    assert sync_service_role(widened) == ["removed can_delete on DAGs", "removed can_read on XComs"]
    assert widened.held() == SERVICE_PERMISSIONS


def test_import_entries_hold_exactly_the_permissions():
    pairs = {(a, e["resource"]) for e in role_import_entries() for a in e["action"].split(",")}
    assert pairs == SERVICE_PERMISSIONS
    assert {e["name"] for e in role_import_entries()} == {SERVICE_ROLE}


def test_cli_prints_the_import_json(capsys):
    assert main(["auth", "fab-role", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == role_import_entries()


def test_docs_show_the_same_json():
    text = (REPO / "docs" / "security.md").read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block, "docs/security.md has no role JSON block"
    assert json.loads(block.group(1)) == role_import_entries()
