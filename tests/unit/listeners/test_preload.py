"""Preloading happens in Airflow's long-lived jobs, before they fork; never again in each task."""

from __future__ import annotations

from unittest import mock

from airflow.jobs.job import Job
from airflow.sdk.execution_time.task_runner import TaskRunnerMarker

from dsbridge.listeners import preload


def test_a_job_preloads_the_task_modules_and_warms_s3() -> None:
    with (
        mock.patch.object(preload, "import_module") as imported,
        mock.patch("dsbridge.s3.warm_s3_models") as warm,
    ):
        preload.on_starting(mock.MagicMock(spec=Job))
    assert [c.args[0] for c in imported.call_args_list] == list(preload.PRELOADED)
    warm.assert_called_once_with()


def test_a_task_process_starting_does_nothing() -> None:
    with (
        mock.patch.object(preload, "import_module") as imported,
        mock.patch("dsbridge.s3.warm_s3_models") as warm,
    ):
        preload.on_starting(TaskRunnerMarker())
    imported.assert_not_called()
    warm.assert_not_called()


def test_a_failing_warm_up_only_logs() -> None:
    with (
        mock.patch.object(preload, "import_module"),
        mock.patch("dsbridge.s3.warm_s3_models", side_effect=OSError("no botocore data")),
        mock.patch.object(preload.log, "warning") as warned,
    ):
        preload.on_starting(mock.MagicMock(spec=Job))
    assert "botocore" in warned.call_args.args[0]
