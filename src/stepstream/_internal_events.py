"""Builders of the runtime's internal events (streamed with ``expose_internal=True``).

The texts follow LlamaIndex Workflows, so code that reads them ports unchanged:
``input_event_name`` is the class name when a step starts and ``str(type(event))``
when it ends.
"""

from __future__ import annotations

from stepstream.events import (
    Event,
    InputRequiredEvent,
    StepState,
    StepStateChanged,
    UnhandledEvent,
    WorkflowIdleEvent,
)

__all__ = ["ended", "idle", "queued", "started", "unhandled"]


def queued(step: str, event: Event) -> StepStateChanged:
    """``step`` got ``event`` in its backlog: every worker is busy."""
    return StepStateChanged(
        name=step,
        step_state=StepState.PREPARING,
        worker_id="<enqueued>",
        input_event_name=type(event).__name__,
    )


def started(step: str, worker: int, event: Event) -> StepStateChanged:
    """A worker of ``step`` started an invocation on ``event``."""
    return StepStateChanged(
        name=step,
        step_state=StepState.RUNNING,
        worker_id=str(worker),
        input_event_name=type(event).__name__,
    )


def ended(step: str, worker: int, event: Event, result: object) -> StepStateChanged:
    """A worker of ``step`` finished its invocation on ``event`` with ``result``."""
    return StepStateChanged(
        name=step,
        step_state=StepState.NOT_RUNNING,
        worker_id=str(worker),
        input_event_name=str(type(event)),
        output_event_name=str(type(result)),
    )


def idle() -> WorkflowIdleEvent:
    """Nothing is queued or running, and a step waits for an event."""
    return WorkflowIdleEvent()


def unhandled(event: Event, *, idle: bool) -> UnhandledEvent | None:
    """``event`` matched no waiter and no step (held for a later waiter)."""
    if isinstance(event, InputRequiredEvent):
        return None
    cls = type(event)
    return UnhandledEvent(
        event_type=cls.__name__, qualified_name=f"{cls.__module__}.{cls.__qualname__}", idle=idle
    )
