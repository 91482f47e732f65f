"""Errors a drover client raises."""

from __future__ import annotations


class DroverError(Exception):
    """A call the node refused or that could not reach a node.

    `code` is the gRPC status in snake_case (``invalid_argument``,
    ``unavailable``...); `retry_safe` says nothing was done, so the call may
    be sent again; `retry_after_ms` is the node's hint of when."""

    def __init__(self, code: str, message: str, retry_safe: bool = False, retry_after_ms: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_safe = retry_safe
        self.retry_after_ms = retry_after_ms


class JobError(Exception):
    """Raise it from a handler to fail the job with an error class, which
    selects the retry policy (``[retry.TYPE] retry_on / no_retry``)."""

    def __init__(self, error_class: str, message: str = "", cost_usd: float = 0.0) -> None:
        super().__init__(f"{error_class}: {message}" if message else error_class)
        self.error_class = error_class
        self.message = message
        self.cost_usd = cost_usd
