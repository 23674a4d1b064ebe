"""Events: the typed pydantic messages that flow between steps and to the stream."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "InternalDispatchEvent",
    "StartEvent",
    "StepState",
    "StepStateChanged",
    "StopEvent",
    "UnhandledEvent",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
    "WorkflowIdleEvent",
    "WorkflowTimedOutEvent",
]


class Event(BaseModel):
    """Base of every event.

    Subclasses declare typed fields. For compatibility with LlamaIndex Workflows the
    base accepts extra keyword fields too (``Event(msg="hi").msg``), readable as
    attributes, by ``ev["msg"]`` and testable with ``"msg" in ev``.
    """

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    def __getitem__(self, key: str) -> Any:
        """Return the field ``key``; raise KeyError naming the event type if absent."""
        if key in type(self).model_fields:
            return getattr(self, key)
        extra = self.__pydantic_extra__
        if extra is not None and key in extra:
            return extra[key]
        msg = f"{type(self).__name__} has no field {key!r}"
        raise KeyError(msg)

    def __contains__(self, key: object) -> bool:
        """Tell whether the event has a declared or extra field named ``key``."""
        if not isinstance(key, str):
            return False
        extra = self.__pydantic_extra__
        return key in type(self).model_fields or (extra is not None and key in extra)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the field ``key``, or ``default`` when the event has no such field."""
        try:
            return self[key]
        except KeyError:
            return default


class StartEvent(Event):
    """Starts a run; ``wf.run(**kwargs)`` puts the keyword arguments on it as fields."""


class StopEvent(Event):
    """Ends a run; ``await handler`` returns ``result`` (or the event, for subclasses)."""

    result: Any = None


class InputRequiredEvent(Event):
    """Asks the caller for input; it always appears in the stream."""


class HumanResponseEvent(Event):
    """The caller's answer, sent with ``handler.ctx.send_event(...)``."""


class WorkflowFailedEvent(StopEvent):
    """Terminal stream event of a run that failed: which step raised what."""

    step: str
    exception_type: str
    message: str


class WorkflowTimedOutEvent(StopEvent):
    """Terminal stream event of a run that timed out."""

    timeout: float | None
    active_steps: list[str]
    message: str


class WorkflowCancelledEvent(StopEvent):
    """Terminal stream event of a run that was cancelled."""

    message: str


class InternalDispatchEvent(Event):
    """Base of the runtime's internal events, streamed only with ``expose_internal=True``."""


class StepState(enum.StrEnum):
    """Where a step invocation is, in ``StepStateChanged``."""

    PREPARING = "preparing"
    RUNNING = "running"
    NOT_RUNNING = "not_running"


class StepStateChanged(InternalDispatchEvent):
    """A step invocation was queued (PREPARING), started (RUNNING) or ended (NOT_RUNNING)."""

    name: str
    step_state: StepState
    worker_id: str
    input_event_name: str
    output_event_name: str | None = None


class WorkflowIdleEvent(InternalDispatchEvent):
    """The run has no queued or running work and at least one step waits for an event."""


class UnhandledEvent(InternalDispatchEvent):
    """An event matched no waiter and no step (stepstream holds a caller's for a waiter)."""

    event_type: str
    qualified_name: str
    step_name: str | None = None
    idle: bool
