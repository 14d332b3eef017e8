"""Job parameters given on a command line (`--param k=v`), typed as the contract declares them.

Kept apart from the Airflow `Param` code so that the CLI starts without importing Airflow.
"""

from __future__ import annotations

import json
from typing import Any

from dsbridge.contract.model import JobContract


def parse_param_args(contract: JobContract, items: list[str]) -> dict[str, Any]:
    """`--param k=v` values as the contract types them (v is text on a command line)."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {item!r} is not NAME=VALUE; write e.g. --param merchant_id=m_1042")
        if name not in contract.params:
            raise ValueError(
                f"--param {name}: job {contract.name} has no such parameter; it has {sorted(contract.params)}"
            )
        values[name] = _typed(name, text, contract.params[name].get("type", "string"))
    return values


def _typed(name: str, text: str, json_type: Any) -> Any:
    types = json_type if isinstance(json_type, list) else [json_type]
    if "string" in types:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"--param {name}={text!r} is not a valid {'/'.join(map(str, types))}") from None
    return value
