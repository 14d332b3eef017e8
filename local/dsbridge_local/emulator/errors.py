"""Errors in the Jobs API's own shape: `{"error_code": ..., "message": ...}` with the matching status.

Clients branch on these: the provider's DatabricksHook retries 5xx and 429 (and 400 only for
COULD_NOT_ACQUIRE_LOCK), the databricks-sdk maps error_code/status onto exception classes
(ResourceDoesNotExist, InvalidParameterValue, ...). Using the same codes keeps both honest.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer of the emulated REST API."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def malformed(message: str) -> ApiError:
    return ApiError(400, "MALFORMED_REQUEST", message)


def not_found(run_id: int) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Run {run_id} does not exist.")
