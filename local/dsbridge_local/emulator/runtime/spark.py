"""A local SparkSession for emulated notebooks (`pip install -e './local[spark]'`), on loopback only.

Spark's own S3 connector (hadoop-aws, S3A) is published on Maven only, not on PyPI, so `s3://` and
`s3a://` paths go through the runtime's S3 client (`fs.py`, the stack's SeaweedFS or any endpoint
the standard AWS variables name) instead: a read first copies the object, or every object under the
prefix, into a local folder; a write goes to a local folder that is then uploaded under the prefix.
`%sql` cells run through `spark.sql`, with `${name}`, `$name` and `getArgument('name')` replaced by
the notebook's widget values, as Databricks does; the result is displayed and kept as `_sqldf`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsbridge_local.emulator.runtime import fs

READ_METHODS = ("csv", "json", "parquet", "text", "orc", "load")
WRITE_METHODS = ("csv", "json", "parquet", "text", "orc", "save")
WIDGET_REFERENCE = re.compile(r"\$\{(\w[\w ]*)\}|\$(\w+)|getArgument\(\s*['\"]([^'\"]+)['\"]\s*\)")
_staging = Path(tempfile.mkdtemp(prefix="dsbridge-spark-"))


def session() -> Any:
    """The notebook's SparkSession: one core, no UI, bound to loopback; S3 paths staged."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    built = (
        SparkSession.builder.master("local[1]")
        .appName("dsbridge-emulator")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .getOrCreate()
    )
    _stage_writes()
    return built


def _download(path: str) -> str:
    """A local copy of the S3 object at `path`, or of every object under it (a folder)."""
    bucket, key = fs._split_s3(path)
    client = fs.s3_client()
    target = Path(tempfile.mkdtemp(dir=_staging))
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    exact = [item for item in listed if item["Key"] == key]
    chosen = exact or [item for item in listed if item["Key"].startswith(key.rstrip("/") + "/")]
    if not chosen:
        raise fs.FsError(f"Path does not exist: {path}")
    for item in chosen:
        local = target / (Path(item["Key"]).name if exact else item["Key"][len(key.rstrip("/")) + 1 :])
        local.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, item["Key"], str(local))
    return str(target / Path(key).name) if exact else str(target)


def _local_paths(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    def stage(value: Any) -> Any:
        if isinstance(value, str) and fs.is_s3(value):
            return _download(value)
        if isinstance(value, list | tuple):
            return [stage(item) for item in value]
        return value

    return tuple(stage(a) for a in args), {k: (stage(v) if k == "path" else v) for k, v in kwargs.items()}


class StagingReader:
    """`spark.read`, whose loads fetch `s3://` paths to a local folder first."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._reader, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in READ_METHODS:
                args, kwargs = _local_paths(args, kwargs)
            result = attribute(*args, **kwargs)
            return StagingReader(result) if type(result).__name__ == "DataFrameReader" else result

        return call


def _upload(local: Path, path: str) -> None:
    bucket, key = fs._split_s3(path)
    client = fs.s3_client()
    for file in sorted(p for p in local.rglob("*") if p.is_file() and not p.name.endswith(".crc")):
        client.upload_file(str(file), bucket, f"{key.rstrip('/')}/{file.relative_to(local).as_posix()}")


def _stage_writes() -> None:
    """DataFrame writes to `s3://` go to a local folder first, then are uploaded under the prefix."""
    from pyspark.sql.readwriter import DataFrameWriter

    for name in WRITE_METHODS:
        original = getattr(DataFrameWriter, name)
        if getattr(original, "_dsbridge_staged", False):
            continue
        setattr(DataFrameWriter, name, _staged_write(original))


def _staged_write(original: Callable[..., Any]) -> Callable[..., Any]:
    def write(self: Any, path: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if not (isinstance(path, str) and fs.is_s3(path)):
            return original(self, path, *args, **kwargs)
        local = Path(tempfile.mkdtemp(dir=_staging)) / "out"
        result = original(self, str(local), *args, **kwargs)
        _upload(local, path)
        shutil.rmtree(local.parent, ignore_errors=True)
        return result

    write._dsbridge_staged = True  # type: ignore[attr-defined]
    return write


def substitute(query: str, widget: Callable[[str], str]) -> str:
    """`${name}`, `$name` and `getArgument('name')` replaced by the widget values, as in a %sql cell."""
    return WIDGET_REFERENCE.sub(lambda m: widget(next(g for g in m.groups() if g is not None)), query)
