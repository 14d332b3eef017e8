"""The job contract: what a data scientist declares in `notebooks/<job>/job.yaml`.

The contract is plain YAML so that nobody has to learn Airflow to change a job. This module turns
the file into a validated, immutable `JobContract`; every mistake becomes a `ContractError` that
names the file, the field and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

CONTRACT_FILE_NAME = "job.yaml"
JOB_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Base parameters that dsbridge itself hands every notebook; contracts cannot declare them.
RESERVED_PARAMS = ("request_id", "output_path", "params_json", "job")
# A request id becomes one S3 key segment and part of an idempotency token: keep it boring.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DEFAULT_TIMEOUT_MINUTES = 60
DEFAULT_MAX_CONCURRENT_REQUESTS = 16
DEFAULT_RETRIES = 2
DEFAULT_INLINE_MAX_BYTES = 64 * 1024
DEFAULT_RESULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_CALLBACK_PATH = "/callbacks/dsbridge"
# Every task process parses the contracts again: libyaml's safe loader is several times faster.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ContractError(ValueError):
    """A contract that cannot be served, with the file, the field and the fix."""

    def __init__(self, path: Path | str, field: str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: field '{field}': {problem}. Fix: {fix}.")


@dataclass(frozen=True)
class OutputContract:
    """What a successful run must produce: an exit value, a result file, or both."""

    exit_value_schema: dict[str, Any] | None = None
    result_file: str | None = None
    result_file_schema: dict[str, Any] | None = None
    result_max_bytes: int = DEFAULT_RESULT_MAX_BYTES
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES


@dataclass(frozen=True)
class Example:
    """One example of a job: parameters, and what must come out of the notebook for them."""

    name: str
    params: dict[str, Any]
    # exit_value / result_file: fields that must be equal; *_matches: JSON Schemas that must hold;
    # failure: a text the notebook's error must contain (the run must fail).
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobContract:
    """One notebook job, validated. `name` is the folder name and the DAG id."""

    name: str
    path: Path
    description: str
    notebook_file: Path
    owner: str
    compute: dict[str, Any]
    params: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    output: OutputContract
    tags: tuple[str, ...] = ()
    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES
    # How long the notebook usually runs: `wait` polls Databricks sparsely until then.
    expected_minutes: float | None = None
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    retries: int = DEFAULT_RETRIES
    success_path: str = DEFAULT_CALLBACK_PATH
    failure_path: str = DEFAULT_CALLBACK_PATH
    examples: tuple[Example, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def language(self) -> str:
        return "r" if self.notebook_file.suffix.lower() == ".r" else "python"

    @property
    def timeout_seconds(self) -> int:
        return self.timeout_minutes * 60

    @property
    def expected_seconds(self) -> float | None:
        return None if self.expected_minutes is None else self.expected_minutes * 60

    def notebook_path(self, workspace_root: str = "") -> str:
        """The notebook's workspace path as Databricks names it (no extension)."""
        root = workspace_root.rstrip("/")
        return f"{root}/{self.name}/{self.notebook_file.stem}"


@cache
def _meta_validator() -> Draft202012Validator:
    text = resources.files("dsbridge.contract").joinpath("job.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def _field_of(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        parts.append(missing.group(1) if missing else "?")
    elif error.validator == "additionalProperties":
        unexpected = re.findall(r"'([^']+)'", error.message)
        parts.append(unexpected[0] if unexpected else "?")
    return ".".join(parts) or "(top level)"


def _fix_of(error: ValidationError) -> str:
    """The nearest `x-fix` hint on the way from the failing subschema up to the root."""
    node: dict[str, Any] = _meta_validator().schema
    hints = [node.get("x-fix")]
    for part in error.absolute_schema_path:
        if not isinstance(node, dict) or part not in node:
            break
        node = node[part]
        if isinstance(node, dict):
            hints.append(node.get("x-fix"))
    if error.validator == "required":
        # "required" fails on the parent; the missing field's own hint is the useful one.
        missing = _field_of(error).rsplit(".", 1)[-1]
        parent = _meta_validator().schema
        for part in list(error.absolute_schema_path)[:-1]:
            parent = parent.get(part, {}) if isinstance(parent, dict) else {}
        hints.append(parent.get("properties", {}).get(missing, {}).get("x-fix"))
    return next((hint for hint in reversed(hints) if hint), "see docs/contract.md")


def _check_schema(path: Path, field_name: str, schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ContractError(
            path,
            field_name,
            f"is not a valid JSON Schema ({exc.message})",
            "use JSON Schema keywords such as type, minimum, maximum, pattern, enum, items, properties",
        ) from None


def _check_params(path: Path, params: dict[str, dict[str, Any]], required: list[str]) -> None:
    for name, schema in params.items():
        _check_schema(path, f"params.{name}", schema)
        if "type" not in schema and "enum" not in schema and "const" not in schema:
            raise ContractError(
                path,
                f"params.{name}.type",
                "is missing, so any value would be accepted",
                "give a type (string, number, integer, boolean, array or object)",
            )
        if "default" in schema:
            errors = list(Draft202012Validator(schema).iter_errors(schema["default"]))
            if errors:
                raise ContractError(
                    path,
                    f"params.{name}.default",
                    f"does not satisfy the parameter's own schema ({errors[0].message})",
                    "change the default or the schema so that the default is a valid value",
                )
    for name in required:
        if name not in params:
            raise ContractError(
                path,
                "required",
                f"names '{name}', which is not declared under params",
                f"declare params.{name} or remove it from required",
            )


def _output_of(path: Path, raw: dict[str, Any]) -> OutputContract:
    exit_schema = (raw.get("exit_value") or {}).get("schema")
    result_file = raw.get("result_file") or {}
    if exit_schema is not None:
        _check_schema(path, "output.exit_value.schema", exit_schema)
    if "schema" in result_file:
        _check_schema(path, "output.result_file.schema", result_file["schema"])
    return OutputContract(
        exit_value_schema=exit_schema,
        result_file=result_file.get("name"),
        result_file_schema=result_file.get("schema"),
        result_max_bytes=result_file.get("max_bytes", DEFAULT_RESULT_MAX_BYTES),
        inline_max_bytes=raw.get("inline_max_bytes", DEFAULT_INLINE_MAX_BYTES),
    )


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ContractError(path, "(file)", "is not UTF-8 text", "save the file as UTF-8") from None
    if len(text) > 256 * 1024:
        raise ContractError(path, "(file)", "is larger than 256 KiB", "keep the contract short") from None
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ContractError(
            path,
            "(file)",
            f"is not valid YAML at {where} ({getattr(exc, 'problem', exc)})",
            "fix the indentation or quoting there; a YAML linter shows the spot",
        ) from None


def load_contract(path: Path | str) -> JobContract:
    """Read and validate one contract file; raise `ContractError` on the first problem."""
    path = Path(path)
    job = path.parent.name
    if not JOB_NAME_PATTERN.match(job):
        raise ContractError(
            path,
            "(folder name)",
            f"job folder '{job}' is not a valid job name",
            "rename the folder in lower_snake_case (letters, digits, _), starting with a letter",
        )
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ContractError(path, "(top level)", "must be a mapping of fields", "start from docs/contract.md")
    errors = sorted(_meta_validator().iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ContractError(path, _field_of(error), error.message, _fix_of(error))

    notebook_file = path.parent / raw["notebook"]
    if not notebook_file.is_file():
        raise ContractError(
            path,
            "notebook",
            f"'{raw['notebook']}' does not exist next to the contract",
            "put the notebook in the same folder or correct the file name",
        )
    params: dict[str, dict[str, Any]] = raw["params"]
    required = list(raw.get("required", []))
    _check_params(path, params, required)
    timeout_minutes = raw.get("timeout_minutes", DEFAULT_TIMEOUT_MINUTES)
    expected_minutes = raw.get("expected_minutes")
    if expected_minutes is not None and expected_minutes > timeout_minutes:
        raise ContractError(
            path,
            "expected_minutes",
            f"{expected_minutes} is longer than the timeout ({timeout_minutes} min), so every run would time out",
            "lower expected_minutes or raise timeout_minutes",
        )
    callback = raw.get("callback") or {}
    return JobContract(
        name=job,
        path=path,
        description=raw["description"].strip(),
        notebook_file=notebook_file,
        owner=raw["owner"],
        compute=raw["compute"],
        params=params,
        required=tuple(required),
        output=_output_of(path, raw["output"]),
        tags=tuple(raw.get("tags", ())),
        timeout_minutes=timeout_minutes,
        expected_minutes=expected_minutes,
        max_concurrent_requests=raw.get("max_concurrent_requests", DEFAULT_MAX_CONCURRENT_REQUESTS),
        retries=raw.get("retries", DEFAULT_RETRIES),
        success_path=callback.get("success_path", DEFAULT_CALLBACK_PATH),
        failure_path=callback.get("failure_path", DEFAULT_CALLBACK_PATH),
        examples=_examples_of(path, raw.get("examples") or [], params, required),
        raw=raw,
    )


def _examples_of(
    path: Path, raw: list[dict[str, Any]], params: dict[str, dict[str, Any]], required: list[str]
) -> tuple[Example, ...]:
    """The job's examples; one whose parameters break the job's own input schema is a contract error."""
    request = {"type": "object", "properties": params, "required": required, "additionalProperties": False}
    validator = Draft202012Validator(request)
    names: set[str] = set()
    examples = []
    for index, item in enumerate(raw):
        where = f"examples[{index}]"
        if item["name"] in names:
            raise ContractError(
                path, f"{where}.name", f"'{item['name']}' is used twice", "give each example its own name"
            )
        names.add(item["name"])
        given = item.get("params") or {}
        problems = sorted(validator.iter_errors(given), key=lambda e: list(map(str, e.absolute_path)))
        if problems:
            problem = problems[0]
            field = ".".join([f"{where}.params", *map(str, problem.absolute_path)])
            raise ContractError(
                path, field, problem.message, "give the example parameters a request could send (see params)"
            )
        examples.append(Example(name=item["name"], params=given, expect=item.get("expect") or {}))
    return tuple(examples)


def discover_contracts(notebooks_dir: Path | str) -> tuple[list[JobContract], list[ContractError]]:
    """Every `<job>/job.yaml` below `notebooks_dir`: the valid ones and the errors of the others."""
    contracts: list[JobContract] = []
    errors: list[ContractError] = []
    for path in sorted(Path(notebooks_dir).glob(f"*/{CONTRACT_FILE_NAME}")):
        try:
            contracts.append(load_contract(path))
        except ContractError as exc:
            errors.append(exc)
    return contracts, errors


class InvalidContracts(Exception):
    """Raised at DAG parse time so Airflow lists every broken contract as an import error."""

    def __init__(self, errors: list[ContractError]) -> None:
        self.errors = errors
        lines = [f"{len(errors)} job contract(s) are invalid; their jobs are not served:", *map(str, errors)]
        super().__init__("\n".join(lines))
