"""Retry policies for steps: ``@step(retry_policy=ConstantDelayRetryPolicy(...))``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from stepstream.errors import WorkflowValidationError

__all__ = ["ConstantDelayRetryPolicy", "RetryPolicy"]


@runtime_checkable
class RetryPolicy(Protocol):
    """Decides whether a failed step attempt is retried, and after what delay."""

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """Return the delay in seconds before the next attempt, or None to give up.

        ``elapsed_time`` counts seconds since the first attempt started, ``attempts``
        how many attempts have run so far (1 after the first failure).
        """
        ...


class ConstantDelayRetryPolicy:
    """Retry after a constant ``delay`` until ``maximum_attempts`` attempts have run."""

    def __init__(self, delay: float = 5.0, maximum_attempts: int = 3) -> None:
        if delay < 0:
            msg = f"ConstantDelayRetryPolicy delay must be >= 0, got {delay}"
            raise WorkflowValidationError(msg)
        if maximum_attempts < 1:
            msg = f"ConstantDelayRetryPolicy maximum_attempts must be >= 1, got {maximum_attempts}"
            raise WorkflowValidationError(msg)
        self.delay = delay
        self.maximum_attempts = maximum_attempts

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """Return ``delay`` while fewer than ``maximum_attempts`` attempts have run."""
        del elapsed_time, error
        return self.delay if attempts < self.maximum_attempts else None

    def __repr__(self) -> str:
        return (
            f"ConstantDelayRetryPolicy(delay={self.delay}, "
            f"maximum_attempts={self.maximum_attempts})"
        )
