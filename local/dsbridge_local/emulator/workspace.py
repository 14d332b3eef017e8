"""The Workspace API calls a deployment makes: `mkdirs`, `import`, `get-status`, `export` (API 2.0).

`dsbridge deploy` imports each job's notebook with the official databricks-sdk, and `submit` (in
`workspace` mode) exports it again to check its deployment mark. Imported objects live in the
emulator's state folder (`<state>/workspace/`), never in the `--workspace` folder (a checkout's
notebooks/); reads look at the imported objects first, then at that folder. Errors use the API's
codes: a missing object or parent is RESOURCE_DOES_NOT_EXIST, an existing one without `overwrite`
RESOURCE_ALREADY_EXISTS, bad fields INVALID_PARAMETER_VALUE naming them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.errors import ApiError, invalid
from dsbridge_local.emulator.runtime.source import (
    NotebookNotFound,
    NotebookPathError,
    NotebookSourceError,
    _check_workspace_path,
    resolve_in,
)

# Databricks refuses imports over 10 MB.
MAX_IMPORT_BYTES = 10 * 1024 * 1024
SUFFIX_BY_LANGUAGE = {"PYTHON": ".py", "R": ".r"}
LANGUAGE_NAMES = {"python": "PYTHON", "r": "R"}


def missing(path: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")


class Workspace:
    """Imported notebooks over the read-only `--workspace` folder."""

    def __init__(self, imported: Path, folder: Path) -> None:
        self.imported = imported
        self.folder = folder.resolve()
        self.imported.mkdir(parents=True, exist_ok=True)

    def _parts(self, path: Any) -> list[str]:
        if not isinstance(path, str):
            raise invalid("path must be a string")
        try:
            return _check_workspace_path(path)
        except NotebookPathError as exc:
            raise invalid(str(exc)) from None

    def _notebook(self, roots: list[Path], parts: list[str]) -> tuple[Path, str] | None:
        """The notebook at `parts` in the first of `roots` that has one (file, LANGUAGE), or None."""
        try:
            file, language = resolve_in(roots, "/" + "/".join(parts))
        except (NotebookNotFound, NotebookPathError, NotebookSourceError):
            return None
        return file, LANGUAGE_NAMES[language]

    def mkdirs(self, body: dict[str, Any]) -> dict[str, Any]:
        parts = self._parts(body.get("path"))
        target = self.imported.joinpath(*parts)
        if self._notebook([self.imported], parts) is not None:
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Path ({body['path']}) already exists as a notebook.")
        target.mkdir(parents=True, exist_ok=True)
        return {}

    def import_(self, body: dict[str, Any]) -> dict[str, Any]:
        path = body.get("path")
        parts = self._parts(path)
        fmt = str(body.get("format") or "SOURCE").upper()
        if fmt not in ("SOURCE", "AUTO"):
            raise invalid(f"format {fmt!r}: the emulator imports SOURCE notebooks only")
        language = str(body.get("language") or "").upper()
        if language not in SUFFIX_BY_LANGUAGE:
            raise invalid(f"language {language or '(none)'!r}: the emulator imports PYTHON and R notebooks")
        try:
            content = base64.b64decode(str(body.get("content") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise invalid("content must be base64") from None
        if len(content) > MAX_IMPORT_BYTES:
            raise invalid(f"content is {len(content)} bytes; the limit is {MAX_IMPORT_BYTES}")
        parent = self.imported.joinpath(*parts[:-1])
        if not parent.is_dir():
            if not self.folder.joinpath(*parts[:-1]).is_dir():
                raise missing("/" + "/".join(parts[:-1]))
            parent.mkdir(parents=True)  # a folder of the --workspace folder exists in the workspace too
        existing = self._notebook([self.imported], parts)
        if existing is not None and not body.get("overwrite"):
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"Path ({path}) already exists.")
        if existing is not None:
            existing[0].unlink()
        target = parent / (parts[-1] + SUFFIX_BY_LANGUAGE[language])
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(content)
        partial.replace(target)
        return {}

    def get_status(self, query: dict[str, Any]) -> dict[str, Any]:
        path = query.get("path")
        parts = self._parts(path)
        found = self._notebook([self.imported, self.folder], parts)
        if found is not None:
            return {"object_type": "NOTEBOOK", "path": path, "language": found[1], "object_id": _object_id(path)}
        if any(root.joinpath(*parts).is_dir() for root in (self.imported, self.folder)):
            return {"object_type": "DIRECTORY", "path": path, "object_id": _object_id(path)}
        raise missing(str(path))

    def export(self, query: dict[str, Any]) -> dict[str, Any]:
        path = query.get("path")
        fmt = str(query.get("format") or "SOURCE").upper()
        if fmt != "SOURCE":
            raise invalid(f"format {fmt!r}: the emulator exports SOURCE only")
        found = self._notebook([self.imported, self.folder], self._parts(path))
        if found is None:
            raise missing(str(path))
        file, _language = found
        return {"content": base64.b64encode(file.read_bytes()).decode(), "file_type": file.suffix.lstrip(".")}


def _object_id(path: Any) -> int:
    return int.from_bytes(hashlib.sha256(str(path).encode()).digest()[:6], "big")
