"""How a run ended: an :class:`Outcome` and the builders for each way of ending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepstream._instrument import Status, StepInfo
from stepstream.errors import WorkflowCancelledError, WorkflowTimeoutError
from stepstream.events import (
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

__all__ = ["Outcome", "cancelled", "failed", "succeeded", "timed_out"]


@dataclass(slots=True)
class Outcome:
    """How a run ended: its status, the terminal stream event and the error if any."""

    status: Status
    terminal: StopEvent
    error: BaseException | None = None
    # The step attempt that ended the run (returned the StopEvent, failed, timed out).
    source: StepInfo | None = None

    def value(self) -> Any:
        """Return the run's result, or raise what ended it."""
        if self.error is not None:
            raise self.error
        if type(self.terminal) is StopEvent:
            return self.terminal.result
        return self.terminal


def succeeded(stop: StopEvent, source: StepInfo | None) -> Outcome:
    """The run ended with ``stop``, returned by ``source``."""
    return Outcome("ok", stop, None, source)


def failed(
    step: str,
    error: BaseException,
    source: StepInfo | None,
    attempts: int | None = None,
    elapsed_seconds: float | None = None,
) -> Outcome:
    """Step ``step`` raised ``error`` (after ``attempts`` attempts over ``elapsed_seconds``)."""
    terminal = WorkflowFailedEvent(
        step_name=step, exception=error, attempts=attempts, elapsed_seconds=elapsed_seconds
    )
    return Outcome("error", terminal, error, source)


def timed_out(
    message: str, timeout: float | None, active: list[str], source: StepInfo | None = None
) -> Outcome:
    """The run (or the step attempt ``source``) ran out of time."""
    terminal = WorkflowTimedOutEvent(timeout=timeout, active_steps=active, message=message)
    error = WorkflowTimeoutError(message, timeout=timeout, active_steps=active)
    return Outcome("timeout", terminal, error, source)


def cancelled(message: str) -> Outcome:
    """The run was cancelled."""
    return Outcome(
        "cancelled", WorkflowCancelledEvent(message=message), WorkflowCancelledError(message)
    )
