"""The emulator's stand-in for a Databricks cluster's `dbruntime` module, on emulated notebooks' path only.

`databricks.sdk.runtime` (what `from databricks.sdk.runtime import dbutils` imports) asks
`dbruntime.UserNamespaceInitializer` for the notebook's globals when it runs on a cluster, and falls
back to the SDK's remote dbutils otherwise. Answering that question with the notebook's own globals
hands modern notebooks and libraries the notebook's `dbutils`, `spark`, `display`, `displayHTML`
and `getArgument`, as a cluster does.
"""

from __future__ import annotations

from typing import Any

_namespace: dict[str, Any] = {}


def set_namespace(namespace: dict[str, Any]) -> None:
    """Called by the emulator's runner with the notebook's globals, before the first cell runs."""
    global _namespace
    _namespace = namespace


class UserNamespaceInitializer:
    _instance: UserNamespaceInitializer | None = None

    @classmethod
    def getOrCreate(cls) -> UserNamespaceInitializer:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def get_namespace_globals(self) -> dict[str, Any]:
        return _namespace
