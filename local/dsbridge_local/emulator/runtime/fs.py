"""`dbutils.fs` for the emulator: S3 through boto3, `file:` paths and a local stand-in for DBFS.

S3 is reached exactly as the rest of the project reaches it: boto3 with the standard variables
(`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_DEFAULT_REGION`), so a notebook writes to the local S3 server in development and to AWS in
production without a change. `dbfs:/x` and bare `/x` map onto a folder (`DSBRIDGE_DBFS_ROOT`), as
DBFS is the default file system of `dbutils.fs` on Databricks.

Run as `python -m dsbridge_local.emulator.runtime.fs OP PATH [...]`, it serves the R runtime, which has no
S3 client of its own: contents travel on stdin/stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEAD_DEFAULT_BYTES = 65536


@dataclass(frozen=True)
class FileInfo:
    """What `dbutils.fs.ls` returns per entry (same field names as Databricks' FileInfo)."""

    path: str
    name: str
    size: int
    modificationTime: int

    def isDir(self) -> bool:
        return self.name.endswith("/")

    def isFile(self) -> bool:
        return not self.isDir()


class FsError(Exception):
    """A dbutils.fs operation failed (missing file, existing file without overwrite, ...)."""


def _split_s3(path: str) -> tuple[str, str]:
    rest = path.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise FsError(f"Invalid S3 path {path!r}: no bucket")
    return bucket, key


def is_s3(path: str) -> bool:
    return path.startswith(("s3://", "s3a://", "s3n://"))


def local_path(path: str) -> Path:
    """Map a `file:` / `dbfs:` / bare path onto the local file system."""
    if path.startswith("file:"):
        rest = path[len("file:") :]
        return Path("/" + rest.lstrip("/"))
    if path.startswith("dbfs:"):
        path = path[len("dbfs:") :]
    root = Path(os.environ.get("DSBRIDGE_DBFS_ROOT") or Path.cwd() / ".dbfs").resolve()
    target = (root / path.lstrip("/")).resolve()
    if not target.is_relative_to(root):
        raise FsError(f"Path {path!r} leaves the DBFS root")
    return target


_S3_CLIENT: Any = None


def s3_client() -> Any:
    """One boto3 client per process, built lazily (boto3 costs ~0.3 s to import)."""
    global _S3_CLIENT
    if _S3_CLIENT is None:
        import boto3
        from botocore.config import Config

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(s3={"addressing_style": "path"}) if endpoint else None
        _S3_CLIENT = boto3.client("s3", endpoint_url=endpoint or None, config=config)
    return _S3_CLIENT


def _s3_exists(bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def put(path: str, contents: str, overwrite: bool = False) -> bool:
    data = contents.encode("utf-8")
    if is_s3(path):
        bucket, key = _split_s3(path)
        if not overwrite and _s3_exists(bucket, key):
            raise FsError(f"File already exists: {path}")
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return True
    target = local_path(path)
    if target.exists() and not overwrite:
        raise FsError(f"File already exists: {path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return True


def head(path: str, max_bytes: int = HEAD_DEFAULT_BYTES) -> str:
    if is_s3(path):
        bucket, key = _split_s3(path)
        from botocore.exceptions import ClientError

        try:
            obj = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max(0, max_bytes - 1)}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FsError(f"No such file: {path}") from exc
            raise
        data: bytes = obj["Body"].read(max_bytes)
    else:
        target = local_path(path)
        if not target.is_file():
            raise FsError(f"No such file: {path}")
        with target.open("rb") as handle:
            data = handle.read(max_bytes)
    return data.decode("utf-8", errors="replace")


def ls(path: str) -> list[FileInfo]:
    if is_s3(path):
        bucket, key = _split_s3(path)
        prefix = key if not key or key.endswith("/") else key + "/"
        scheme = path.split("://", 1)[0]
        infos: list[FileInfo] = []
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(prefix) :]
                infos.append(FileInfo(f"{scheme}://{bucket}/{common['Prefix']}", name, 0, 0))
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix) :]
                if not name:
                    continue
                stamp = int(obj["LastModified"].timestamp() * 1000)
                infos.append(FileInfo(f"{scheme}://{bucket}/{obj['Key']}", name, int(obj["Size"]), stamp))
        if not infos and key and not key.endswith("/") and _s3_exists(bucket, key):
            return [FileInfo(path, key.rsplit("/", 1)[-1], 0, 0)]
        if not infos and key:
            raise FsError(f"No such file or directory: {path}")
        return infos
    target = local_path(path)
    if not target.exists():
        raise FsError(f"No such file or directory: {path}")
    entries = sorted(target.iterdir()) if target.is_dir() else [target]
    base = path.rstrip("/")
    result = []
    for entry in entries:
        stat = entry.stat()
        name = entry.name + ("/" if entry.is_dir() else "")
        full = base + "/" + name if target.is_dir() else path
        result.append(FileInfo(full, name, 0 if entry.is_dir() else stat.st_size, int(stat.st_mtime * 1000)))
    return result


def rm(path: str, recurse: bool = False) -> bool:
    if is_s3(path):
        bucket, key = _split_s3(path)
        client = s3_client()
        if recurse:
            prefix = key if key.endswith("/") or not key else key + "/"
            deleted = False
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
                    deleted = True
            if key and _s3_exists(bucket, key):
                client.delete_object(Bucket=bucket, Key=key)
                deleted = True
            return deleted
        if not _s3_exists(bucket, key):
            return False
        client.delete_object(Bucket=bucket, Key=key)
        return True
    target = local_path(path)
    if not target.exists():
        return False
    if target.is_dir():
        if not recurse:
            raise FsError(f"{path} is a directory; pass recurse=True")
        shutil.rmtree(target)
    else:
        target.unlink()
    return True


def mkdirs(path: str) -> bool:
    if is_s3(path):
        return True  # S3 has no directories
    local_path(path).mkdir(parents=True, exist_ok=True)
    return True


def cp(source: str, destination: str, recurse: bool = False) -> bool:
    if recurse:
        raise FsError("dbutils.fs.cp(recurse=True) is not supported by the emulator")
    if is_s3(source):
        bucket, key = _split_s3(source)
        data = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    else:
        data = local_path(source).read_bytes()
    if is_s3(destination):
        bucket, key = _split_s3(destination)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    else:
        target = local_path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return True


def _main(argv: list[str]) -> int:
    """Tiny CLI for the R runtime: put/head/ls/rm/mkdirs; errors on stderr, exit code 1."""
    if len(argv) < 2:
        print("usage: fs OP PATH [ARG]", file=sys.stderr)
        return 2
    op, path = argv[0], argv[1]
    try:
        if op == "put":
            put(path, sys.stdin.read(), overwrite=len(argv) > 2 and argv[2].lower() in ("true", "1"))
            sys.stdout.write("true")
        elif op == "head":
            sys.stdout.write(head(path, int(argv[2]) if len(argv) > 2 else HEAD_DEFAULT_BYTES))
        elif op == "ls":
            sys.stdout.write(json.dumps([info.__dict__ for info in ls(path)]))
        elif op == "rm":
            removed = rm(path, recurse=len(argv) > 2 and argv[2].lower() in ("true", "1"))
            sys.stdout.write("true" if removed else "false")
        elif op == "mkdirs":
            sys.stdout.write("true" if mkdirs(path) else "false")
        else:
            print(f"unknown operation {op}", file=sys.stderr)
            return 2
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
