"""The `dbutils`, `spark` and `display` names a Python notebook finds in its globals on Databricks.

Only the subset dsbridge notebooks use is provided, with Databricks' semantics: a widget's value is
the job's base parameter when one is given, else the default the notebook declared; asking for an
undeclared widget fails as on Databricks; `dbutils.notebook.exit(value)` ends the notebook at once as
SUCCESS with `value` as the run's result. `spark` is lazy: a local PySpark session is started only
when a notebook touches it (and a clear error says so when pyspark is not installed).
"""

from __future__ import annotations

import builtins
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEAD_DEFAULT_BYTES = 65536


class NotebookExit(BaseException):
    """Raised by dbutils.notebook.exit; a BaseException so `except Exception` in a notebook can't eat it."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class InputWidgetNotDefined(Exception):
    """Raised for a widget that was neither passed as a parameter nor declared by the notebook."""


class _Widgets:
    def __init__(self, params: dict[str, str]) -> None:
        self._params = dict(params)
        self._defaults: dict[str, str] = {}

    def get(self, name: str) -> str:
        if name in self._params:
            return self._params[name]
        if name in self._defaults:
            return self._defaults[name]
        raise InputWidgetNotDefined(f"No input widget named {name} is defined")

    def getArgument(self, name: str, optional: str | None = None) -> str | None:
        try:
            return self.get(name)
        except InputWidgetNotDefined:
            return optional

    def getAll(self) -> dict[str, str]:
        return {**self._defaults, **self._params}

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:
        self._defaults[name] = str(defaultValue)

    def dropdown(
        self,
        name: str,
        defaultValue: str,
        choices: list[str],
        label: str | None = None,
    ) -> None:
        if str(defaultValue) not in [str(c) for c in choices]:
            raise ValueError(f"Default value {defaultValue!r} is not one of the choices {choices!r}")
        self._defaults[name] = str(defaultValue)

    def combobox(
        self,
        name: str,
        defaultValue: str,
        choices: list[str],
        label: str | None = None,
    ) -> None:
        self._defaults[name] = str(defaultValue)

    def multiselect(
        self,
        name: str,
        defaultValue: str,
        choices: list[str],
        label: str | None = None,
    ) -> None:
        self._defaults[name] = str(defaultValue)

    def remove(self, name: str) -> None:
        self._defaults.pop(name, None)

    def removeAll(self) -> None:
        self._defaults.clear()

    def help(self) -> None:
        print(WIDGETS_HELP)


WIDGETS_HELP = """dbutils.widgets provides utilities for working with notebook widgets.
combobox(name: String, defaultValue: String, choices: Seq, label: String): void -> Creates a combobox input widget
dropdown(name: String, defaultValue: String, choices: Seq, label: String): void -> Creates a dropdown input widget
get(name: String): String -> Retrieves current value of an input widget
getAll: map -> Retrieves a map of all widget names and their values
getArgument(name: String, optional: String): String -> (DEPRECATED) Equivalent to get
multiselect(name: String, defaultValue: String, choices: Seq, label: String): void -> Creates a multiselect widget
remove(name: String): void -> Removes an input widget from the notebook
removeAll: void -> Removes all widgets in the notebook
text(name: String, defaultValue: String, label: String): void -> Creates a text input widget"""


class _Notebook:
    def exit(self, value: Any) -> None:
        raise NotebookExit("" if value is None else str(value))

    def run(self, path: str, timeout_seconds: int = 0, arguments: dict[str, Any] | None = None) -> str:
        """Run another notebook as a run of its own; its exit value, or `WorkflowException` (children.py)."""
        from dsbridge_local.emulator.runtime import children

        return children.run(path, timeout_seconds, arguments)


class IllegalArgumentException(Exception):
    """What Databricks raises for a secret scope or key that does not exist."""


@dataclass(frozen=True)
class SecretScope:
    name: str


@dataclass(frozen=True)
class SecretMetadata:
    key: str


class _Secrets:
    """`dbutils.secrets` over the emulator's secrets file; values are redacted from logs and outputs."""

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, str]] | None = None

    def _all(self) -> dict[str, dict[str, str]]:
        if self._scopes is None:
            from dsbridge_local.emulator.runtime import secrets

            self._scopes = secrets.from_env()
        return self._scopes

    def get(self, scope: str, key: str) -> str:
        value = self._all().get(scope, {}).get(key)
        if value is None:
            raise IllegalArgumentException(f"Secret does not exist with scope: {scope} and key: {key}")
        return value

    def getBytes(self, scope: str, key: str) -> bytes:
        return self.get(scope, key).encode("utf-8")

    def list(self, scope: str) -> builtins.list[SecretMetadata]:
        if scope not in self._all():
            raise IllegalArgumentException(f"Scope {scope} does not exist")
        return [SecretMetadata(key) for key in sorted(self._all()[scope])]

    def listScopes(self) -> builtins.list[SecretScope]:
        return [SecretScope(name) for name in sorted(self._all())]

    def help(self) -> None:
        print("dbutils.secrets provides utilities for leveraging secrets within notebooks.")
        print("get(scope: String, key: String): String, getBytes, list(scope: String), listScopes")


class _TaskValues:
    """`dbutils.jobs.taskValues`: values one task of a run leaves for the tasks after it."""

    @staticmethod
    def _folder() -> Path | None:
        folder = os.environ.get("DSBRIDGE_TASK_VALUES_DIR")
        return Path(folder) if folder else None

    def set(self, key: str, value: Any) -> None:
        text = json.dumps(value)  # a value must be JSON, as on Databricks
        folder, task = self._folder(), os.environ.get("DSBRIDGE_TASK_KEY")
        if folder is None or not task:
            return  # outside a job run there is nobody to read it
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{task}.json"
        values = json.loads(path.read_text()) if path.is_file() else {}
        values[key] = json.loads(text)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(values))
        partial.replace(path)

    def get(self, taskKey: str, key: str, default: Any = None, debugValue: Any = None) -> Any:
        folder = self._folder()
        if folder is None:
            if debugValue is None:
                raise TypeError(
                    "Must pass debugValue when calling get outside of a job context. debugValue cannot be None."
                )
            return debugValue
        path = folder / f"{taskKey}.json"
        values = json.loads(path.read_text()) if path.is_file() else {}
        if key in values:
            return values[key]
        if default is not None:
            return default
        raise ValueError(f"No value found for key {key!r} of task {taskKey!r}, and no default was given")


class _Jobs:
    def __init__(self) -> None:
        self.taskValues = _TaskValues()


class _Fs:
    # The fs module (and boto3) are imported on first use: most notebooks never touch dbutils.fs, and
    # keeping them out of start-up saves tens of milliseconds per run.
    def put(self, file: str, contents: str, overwrite: bool = False) -> bool:
        from dsbridge_local.emulator.runtime import fs

        return fs.put(file, contents, overwrite)

    def head(self, file: str, maxBytes: int = HEAD_DEFAULT_BYTES) -> str:
        from dsbridge_local.emulator.runtime import fs

        return fs.head(file, maxBytes)

    def ls(self, dir: str) -> list[Any]:
        from dsbridge_local.emulator.runtime import fs

        return fs.ls(dir)

    def rm(self, dir: str, recurse: bool = False) -> bool:
        from dsbridge_local.emulator.runtime import fs

        return fs.rm(dir, recurse)

    def mkdirs(self, dir: str) -> bool:
        from dsbridge_local.emulator.runtime import fs

        return fs.mkdirs(dir)

    def cp(self, source: str, destination: str, recurse: bool = False) -> bool:
        from dsbridge_local.emulator.runtime import fs

        return fs.cp(source, destination, recurse)


class DBUtils:
    """The notebook's `dbutils` object."""

    def __init__(self, params: dict[str, str]) -> None:
        self.widgets = _Widgets(params)
        self.notebook = _Notebook()
        self.fs = _Fs()
        self.secrets = _Secrets()
        self.jobs = _Jobs()


class LazySpark:
    """Stands in for `spark`; starts a local SparkSession on first use (`runtime/spark.py`)."""

    def __init__(self) -> None:
        self._session: Any = None

    def _get(self) -> Any:
        if self._session is None:
            try:
                import pyspark  # ruff: ignore[unused-import]
            except ImportError as exc:
                raise RuntimeError(
                    "This notebook uses `spark`, but pyspark is not installed in the emulator's Python "
                    "environment. Install the spark extra (pip install -e './local[spark]', and Java 17+), "
                    "or run the notebook on Databricks."
                ) from exc
            from dsbridge_local.emulator.runtime import spark

            self._session = spark.session()
        return self._session

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "read":
            from dsbridge_local.emulator.runtime.spark import StagingReader

            return StagingReader(self._get().read)
        return getattr(self._get(), name)

    def __repr__(self) -> str:
        return "<lazy SparkSession (dsbridge emulator)>" if self._session is None else repr(self._session)


def display(*objects: Any, **_: Any) -> None:
    """Print what Databricks would render: DataFrames as tables, anything else as its repr/str."""
    for obj in objects:
        show = getattr(obj, "show", None)
        to_string = getattr(obj, "to_string", None)
        if callable(to_string):
            print(to_string())
        elif callable(show) and type(obj).__module__.startswith("pyspark"):
            show()
        else:
            print(obj)
    sys.stdout.flush()


def display_html(html: str) -> None:
    print(html)


def notebook_globals(params: dict[str, str], notebook_file: str) -> dict[str, Any]:
    """The globals a notebook's cells run in."""
    dbutils = DBUtils(params)
    spark = LazySpark()

    def run_sql(query: str) -> Any:
        """A %sql cell: the query with its widget references filled in, run, displayed, returned."""
        from dsbridge_local.emulator.runtime.spark import substitute

        frame = spark.sql(substitute(query, dbutils.widgets.get))
        display(frame)
        return frame

    return {
        "__name__": "__main__",
        "__file__": notebook_file,
        "__builtins__": builtins,
        "dbutils": dbutils,
        "getArgument": dbutils.widgets.getArgument,
        "spark": spark,
        "_dsbridge_sql": run_sql,
        "display": display,
        "displayHTML": display_html,
    }
