"""The Airflow plugin of dsbridge (registered as an `airflow.plugins` entry point)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dsbridge.listeners import outcomes, preload


class DsbridgePlugin(AirflowPlugin):
    name = "dsbridge"
    listeners = [outcomes, preload]
