"""The `dbutils`, `spark` and `display` names a Python notebook finds in its globals on Databricks.

Only the subset dsbridge notebooks use is provided, with Databricks' semantics: a widget's value is
the job's base parameter when one is given, else the default the notebook declared; asking for an
undeclared widget fails as on Databricks; `dbutils.notebook.exit(value)` ends the notebook at once as
SUCCESS with `value` as the run's result. `spark` is lazy: a local PySpark session is started only
when a notebook touches it (and a clear error says so when pyspark is not installed).
"""

from __future__ import annotations

import builtins
import sys
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
        print("dbutils.widgets (emulator): get, getArgument, getAll, text, dropdown, combobox, multiselect")


class _Notebook:
    def exit(self, value: Any) -> None:
        raise NotebookExit("" if value is None else str(value))


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


class LazySpark:
    """Stands in for `spark`; builds a local SparkSession on first attribute access."""

    def __init__(self) -> None:
        self._session: Any = None

    def _get(self) -> Any:
        if self._session is None:
            try:
                from pyspark.sql import SparkSession
            except ImportError as exc:
                raise RuntimeError(
                    "This notebook uses `spark`, but pyspark is not installed in the emulator's Python "
                    "environment. Install pyspark (and a Java runtime) there, or run the notebook on "
                    "Databricks."
                ) from exc
            self._session = SparkSession.builder.master("local[*]").appName("dsbridge-emulator").getOrCreate()
        return self._session

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
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
    return {
        "__name__": "__main__",
        "__file__": notebook_file,
        "__builtins__": builtins,
        "dbutils": dbutils,
        "getArgument": dbutils.widgets.getArgument,
        "spark": LazySpark(),
        "display": display,
        "displayHTML": display_html,
    }
