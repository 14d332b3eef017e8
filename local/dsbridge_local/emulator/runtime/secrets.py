"""Secret scopes for emulated notebooks (`dbutils.secrets`), from a local JSON file, never shown.

The file (`dsbridge emulator --secrets FILE`, `dsbridge notebook run --secrets FILE`) maps scopes
to keys to values: `{"payments": {"api_key": "..."}}`. Notebooks read it through the path in
`DSBRIDGE_SECRETS_FILE`. As on Databricks, a value never appears in a run's log or output: every
occurrence is replaced by `[REDACTED]` when the run's log, result and error are collected, whatever
the notebook printed or returned, in Python and R alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "DSBRIDGE_SECRETS_FILE"
REDACTED = "[REDACTED]"
MAX_FILE_BYTES = 1024 * 1024


class SecretsFileError(ValueError):
    """The secrets file cannot be used; the message says why and how to fix it."""


def load(path: str | Path | None) -> dict[str, dict[str, str]]:
    """The scopes of the secrets file at `path` ({} without one); `SecretsFileError` if it is malformed."""
    if not path:
        return {}
    file = Path(path)
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise SecretsFileError(f"secrets file {file} is larger than {MAX_FILE_BYTES} bytes")
        data: Any = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SecretsFileError(f"cannot read the secrets file {file}: {exc.strerror}") from None
    except ValueError as exc:
        raise SecretsFileError(f"secrets file {file} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(keys, dict) and all(isinstance(v, str) for v in keys.values()) for keys in data.values()
    ):
        raise SecretsFileError(
            f'secrets file {file} must map scopes to keys to strings: {{"scope": {{"key": "value"}}}}'
        )
    return {str(scope): {str(k): v for k, v in keys.items()} for scope, keys in data.items()}


def from_env() -> dict[str, dict[str, str]]:
    return load(os.environ.get(ENV))


def values(scopes: dict[str, dict[str, str]]) -> list[str]:
    """Every secret value worth hiding, longest first (so a value containing another goes whole)."""
    return sorted({v for keys in scopes.values() for v in keys.values() if v}, key=len, reverse=True)


def redact(text: str | None, hidden: list[str]) -> str | None:
    if text is None:
        return None
    for value in hidden:
        text = text.replace(value, REDACTED)
    return text


def redact_file(path: Path, hidden: list[str]) -> None:
    """Rewrite a log file with every secret value replaced (atomically)."""
    if not hidden or not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    clean = redact(text, hidden)
    if clean != text:
        partial = path.with_name(path.name + ".redacting")
        partial.write_text(clean or "", encoding="utf-8")
        partial.replace(path)
