"""stepstream: event-driven workflows you can watch live, as a stream, a trace and logs."""

import typing as _typing

from stepstream import telemetry
from stepstream.context import Context, JsonSerializer
from stepstream.context.serializers import JsonPickleSerializer
from stepstream.decorators import catch_error, step
from stepstream.drawing import draw_all_possible_flows
from stepstream.errors import (
    WorkflowCancelledError,
    WorkflowError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from stepstream.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from stepstream.handler import WorkflowHandler
from stepstream.retry_policy import ConstantDelayRetryPolicy, RetryPolicy
from stepstream.workflow import Workflow

if _typing.TYPE_CHECKING:
    from stepstream.telemetry import TelemetryHandle, configure_telemetry

__all__ = [
    "ConstantDelayRetryPolicy",
    "Context",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "JsonPickleSerializer",
    "JsonSerializer",
    "RetryPolicy",
    "StartEvent",
    "StopEvent",
    "TelemetryHandle",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowCancelledEvent",
    "WorkflowError",
    "WorkflowFailedEvent",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowTimedOutEvent",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "catch_error",
    "configure_telemetry",
    "draw_all_possible_flows",
    "step",
]


def __getattr__(name: str) -> _typing.Any:
    # configure_telemetry and TelemetryHandle load the OpenTelemetry SDK: on first use.
    if name in {"TelemetryHandle", "configure_telemetry"}:
        value = getattr(telemetry, name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
