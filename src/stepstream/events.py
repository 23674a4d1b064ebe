"""Events: the typed pydantic messages that flow between steps and to the stream."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "StartEvent",
    "StopEvent",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
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

