"""Databricks source-format notebooks: find them in a workspace folder and cut them into cells.

A notebook exported from Databricks "as source" is a plain file: a `# Databricks notebook source`
header, cells separated by `# COMMAND ----------`, and magic cells written as `# MAGIC %md ...`
comments. Both the emulator and `dsbridge notebook run` go through this module, so a notebook is
read the same way whichever runs it, and the child process gets ready-made cells (it then needs
nothing but the standard library to start).

Workspace paths follow Databricks: absolute, starting with `/`, without the file extension
(`/merchant_threshold/merchant_threshold` is `<workspace>/merchant_threshold/merchant_threshold.py`).
Nothing outside the workspace folder is ever read: `..`, absolute escapes and symlinks that leave
the folder are refused.
"""

from __future__ import annotations

import functools
import importlib.util
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HEADER = "# Databricks notebook source"
CELL_SEPARATOR = re.compile(r"^# COMMAND -{10,}\s*$")
MAGIC_PREFIX = "# MAGIC"

# Extensions tried, in order, when a workspace path names a notebook without one.
LANGUAGE_BY_SUFFIX = {".py": "python", ".r": "r", ".R": "r"}
UNSUPPORTED_SUFFIXES = {".sql": "SQL", ".scala": "Scala", ".ipynb": "Jupyter (.ipynb)"}
MAX_PATH_LENGTH = 4096
MAX_RUN_DEPTH = 16
MAX_SOURCE_BYTES = 16 * 1024 * 1024

SKIPPED_MAGICS = {"%md", "%md-sandbox"}
IGNORED_MAGICS = {"%pip", "%conda", "%sh", "%fs", "%lsmagic", "%config"}
FOREIGN_LANGUAGE_MAGICS = {"%sql": "SQL", "%scala": "Scala", "%python": "Python", "%r": "R"}


@functools.cache
def spark_installed() -> bool:
    """Whether %sql cells can run: pyspark in the emulator's environment (the kit's spark extra)."""
    return importlib.util.find_spec("pyspark") is not None


class NotebookPathError(ValueError):
    """The workspace path is malformed or points outside the workspace."""


class NotebookNotFound(LookupError):
    """No notebook exists at the workspace path."""


class NotebookSourceError(ValueError):
    """The notebook cannot be turned into runnable cells (bad %run, unsupported magic, ...)."""


@dataclass(frozen=True)
class Cell:
    """One runnable cell: its code and where it came from, for tracebacks and error messages."""

    index: int  # 1-based position among the runnable cells of the flattened notebook
    code: str
    file: str  # absolute file path the cell was read from
    line: int  # 1-based line in `file` of the cell's first code line
    workspace_path: str  # the notebook's workspace path, e.g. /jobs/nb

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "code": self.code,
            "file": self.file,
            "line": self.line,
            "workspace_path": self.workspace_path,
        }


@dataclass
class ParsedNotebook:
    """A notebook flattened into cells (with %run inlined) plus warnings for the run's log."""

    language: str
    cells: list[Cell] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_workspace_path(notebook_path: object) -> list[str]:
    if not isinstance(notebook_path, str):
        raise NotebookPathError("notebook_path must be a string")
    if not notebook_path:
        raise NotebookPathError("notebook_path must not be empty")
    if len(notebook_path) > MAX_PATH_LENGTH or "\x00" in notebook_path or "\\" in notebook_path:
        raise NotebookPathError(f"Invalid notebook_path {notebook_path[:200]!r}")
    if not notebook_path.startswith("/"):
        raise NotebookPathError(
            f"Invalid notebook_path {notebook_path!r}: a workspace notebook path must be absolute "
            "and begin with a slash"
        )
    parts = [p for p in notebook_path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise NotebookPathError(f"Invalid notebook_path {notebook_path!r}: '..' is not allowed")
    if not parts:
        raise NotebookPathError(f"Invalid notebook_path {notebook_path!r}")
    return parts


def resolve_notebook(workspace: Path, notebook_path: object) -> tuple[Path, str]:
    """Map a Databricks workspace path onto a file inside `workspace`; return (file, language)."""
    parts = _check_workspace_path(notebook_path)
    root = workspace.resolve()
    base = root.joinpath(*parts)
    candidates: list[Path] = []
    if base.suffix in LANGUAGE_BY_SUFFIX or base.suffix in UNSUPPORTED_SUFFIXES:
        candidates.append(base)
    candidates.extend(base.with_name(base.name + suffix) for suffix in LANGUAGE_BY_SUFFIX)
    candidates.extend(base.with_name(base.name + suffix) for suffix in UNSUPPORTED_SUFFIXES)
    for candidate in candidates:
        if not candidate.is_file():
            continue
        real = candidate.resolve()
        if not real.is_relative_to(root):
            raise NotebookPathError(f"Invalid notebook_path {notebook_path!r}: it resolves outside the workspace")
        suffix = candidate.suffix
        if suffix in UNSUPPORTED_SUFFIXES:
            raise NotebookSourceError(
                f"{UNSUPPORTED_SUFFIXES[suffix]} notebooks are not supported by the emulator: {notebook_path}"
            )
        return real, LANGUAGE_BY_SUFFIX[suffix]
    raise NotebookNotFound(
        f'Unable to access the notebook "{notebook_path}". Either it does not exist, or the identity '
        "used to run this job lacks the required permissions."
    )


def resolve_in(roots: Sequence[Path], notebook_path: object) -> tuple[Path, str]:
    """`resolve_notebook` over layered workspaces (imported notebooks over the folder): the first root
    that has the notebook answers; `NotebookNotFound` from the last one if none does."""
    for root in roots[:-1]:
        try:
            return resolve_notebook(root, notebook_path)
        except NotebookNotFound:
            continue
    return resolve_notebook(roots[-1], notebook_path)


def split_cells(text: str) -> list[tuple[int, list[str]]]:
    """Split source text into (first line number, lines) per cell; the header line is dropped."""
    lines = text.splitlines()
    start = 1
    if lines and lines[0].strip() == HEADER:
        lines = lines[1:]
        start = 2
    cells: list[tuple[int, list[str]]] = []
    current: list[str] = []
    current_start = start
    for offset, line in enumerate(lines):
        if CELL_SEPARATOR.match(line):
            cells.append((current_start, current))
            current = []
            current_start = start + offset + 1
        else:
            current.append(line)
    cells.append((current_start, current))
    return cells


def _strip_blank_edges(first_line: int, lines: list[str]) -> tuple[int, list[str]]:
    while lines and not lines[0].strip():
        lines = lines[1:]
        first_line += 1
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return first_line, lines


def _unmagic(line: str) -> str:
    rest = line[len(MAGIC_PREFIX) :]
    return rest[1:] if rest.startswith(" ") else rest


def _workspace_path_of(root: Path, file: Path) -> str:
    rel = file.relative_to(root).with_suffix("")
    return "/" + rel.as_posix()


def _run_target(current_workspace_path: str, argument: str) -> str:
    target = argument.split()[0] if argument.split() else ""
    if not target:
        raise NotebookSourceError("%run needs a notebook path")
    if (target.startswith('"') and target.endswith('"')) or (target.startswith("'") and target.endswith("'")):
        target = target[1:-1]
    base = posixpath.dirname(current_workspace_path)
    joined = target if target.startswith("/") else posixpath.join(base, target)
    normal = posixpath.normpath(joined)
    if not normal.startswith("/") or normal.startswith("//") or "/../" in normal + "/":
        raise NotebookPathError(f"%run {target}: the path leaves the workspace")
    return normal


class _Flattener:
    def __init__(self, workspace: Path, language: str) -> None:
        self.root = workspace.resolve()
        self.language = language
        self.parsed = ParsedNotebook(language=language)

    def add_file(self, file: Path, workspace_path: str, stack: tuple[str, ...]) -> None:
        if len(stack) > MAX_RUN_DEPTH:
            raise NotebookSourceError(f"%run nesting deeper than {MAX_RUN_DEPTH}: {' -> '.join(stack)}")
        if file.stat().st_size > MAX_SOURCE_BYTES:
            raise NotebookSourceError(f"{workspace_path}: notebook source larger than {MAX_SOURCE_BYTES} bytes")
        text = file.read_text(encoding="utf-8", errors="replace")
        for first_line, raw_lines in split_cells(text):
            line_no, lines = _strip_blank_edges(first_line, raw_lines)
            if not lines:
                continue
            if lines[0].startswith(MAGIC_PREFIX):
                self._magic_cell(file, workspace_path, line_no, lines, stack)
            else:
                self._code_cell(file, workspace_path, line_no, lines)

    def _code_cell(self, file: Path, workspace_path: str, line_no: int, lines: list[str]) -> None:
        self.parsed.cells.append(
            Cell(
                index=len(self.parsed.cells) + 1,
                code="\n".join(lines) + "\n",
                file=str(file),
                line=line_no,
                workspace_path=workspace_path,
            )
        )

    def _magic_cell(
        self, file: Path, workspace_path: str, line_no: int, lines: list[str], stack: tuple[str, ...]
    ) -> None:
        body = [_unmagic(line) if line.startswith(MAGIC_PREFIX) else line for line in lines]
        first = body[0].strip()
        command, _, argument = first.partition(" ")
        where = f"{workspace_path} line {line_no}"
        if command in SKIPPED_MAGICS:
            return
        if command in IGNORED_MAGICS:
            self.parsed.warnings.append(
                f"WARNING: {command} cell at {where} ignored by the emulator "
                "(install what the notebook needs into the emulator's environment instead)"
            )
            return
        if command == "%run":
            self._inline_run(workspace_path, argument.strip(), stack, where)
            return
        own = "%python" if self.language == "python" else "%r"
        if command == own:
            self._code_cell(file, workspace_path, line_no + 1, body[1:] or [""])
            return
        if command == "%sql" and self.language == "python" and spark_installed():
            query = "\n".join([argument, *body[1:]]).strip()
            self._code_cell(file, workspace_path, line_no, [f"_sqldf = _dsbridge_sql({query!r})"])
            return
        if command in FOREIGN_LANGUAGE_MAGICS:
            if command == "%sql" and self.language == "python":
                raise NotebookSourceError(
                    f"%sql cell at {where}: SQL cells need a local Spark in the emulator; install the spark "
                    "extra (pip install -e './local[spark]', and Java 17+), or run the notebook on Databricks"
                )
            raise NotebookSourceError(
                f"{command} cell at {where}: {FOREIGN_LANGUAGE_MAGICS[command]} cells are not supported by "
                f"the emulator in a {self.language} notebook"
            )
        raise NotebookSourceError(f"Unsupported magic command {command!r} at {where}")

    def _inline_run(self, workspace_path: str, argument: str, stack: tuple[str, ...], where: str) -> None:
        target = _run_target(workspace_path, argument)
        if len(argument.split()) > 1:
            self.parsed.warnings.append(
                f"WARNING: %run arguments at {where} ignored by the emulator (widgets are shared instead)"
            )
        if target in stack:
            raise NotebookSourceError(f"%run cycle: {' -> '.join((*stack, target))}")
        try:
            file, language = resolve_notebook(self.root, target)
        except NotebookNotFound as exc:
            raise NotebookSourceError(f"%run {argument} at {where}: notebook {target} not found") from exc
        if language != self.language:
            raise NotebookSourceError(f"%run {argument} at {where}: cannot include a {language} notebook")
        self.add_file(file, target, (*stack, target))


def parse_notebook(workspace: Path, file: Path, language: str) -> ParsedNotebook:
    """Flatten the notebook at `file` (inside `workspace`) into runnable cells, inlining %run."""
    flattener = _Flattener(workspace, language)
    root = flattener.root
    real = file.resolve()
    workspace_path = _workspace_path_of(root, real) if real.is_relative_to(root) else "/" + real.stem
    flattener.add_file(real, workspace_path, (workspace_path,))
    return flattener.parsed
