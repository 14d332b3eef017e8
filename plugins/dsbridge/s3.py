"""S3 clients for dsbridge's tasks, without the Amazon provider's per-client costs.

Under load, making an S3 client was most of a task's CPU (docs/performance.md, profiled with
py-spy): the provider's hook names its caller in the user agent by walking `inspect.stack()`,
which reads the source file of every frame, and every new boto3 session parses botocore's endpoint
and S3 model JSON again. `DsbridgeS3Hook` names its caller directly; `share_botocore_models`
lets every botocore session of a process share the parsed files, and `warm_s3_models` parses them
once in a long-lived Airflow process so the task processes it forks inherit them.
"""

from __future__ import annotations

from typing import Any

import botocore.loaders
import botocore.session
from airflow.providers.amazon.aws.hooks.s3 import S3Hook


class DsbridgeS3Hook(S3Hook):
    """The provider's S3 hook, naming `caller` in the user agent instead of searching the stack."""

    def __init__(self, *args: Any, caller: str = "dsbridge", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.caller = caller

    def _get_caller(self, target_function_name: str = "execute") -> str:
        return self.caller


def share_botocore_models() -> None:
    """Make botocore's loaders in this process share one cache of parsed data files.

    A session's loader caches the JSON it parses (endpoints, partitions, service models); sharing
    that cache is what reusing one session would give, while each session keeps its own search
    paths (boto3 appends its own to each). Loaded data is only read, never changed.
    """
    if getattr(botocore.session.create_loader, "shares_models", False):
        return
    caches: dict[str | None, dict[Any, Any]] = {}
    create_loader = botocore.loaders.create_loader

    def create_sharing_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        loader = create_loader(search_path_string)
        loader._cache = caches.setdefault(search_path_string, {})
        return loader

    create_sharing_loader.shares_models = True  # type: ignore[attr-defined]
    botocore.session.create_loader = create_sharing_loader


def warm_s3_models() -> None:
    """Parse what an S3 client needs, once; no connection is opened."""
    import boto3

    share_botocore_models()
    boto3.session.Session(aws_access_key_id="warm", aws_secret_access_key="warm", region_name="us-east-1").client(
        "s3", endpoint_url="http://127.0.0.1:9"
    )
