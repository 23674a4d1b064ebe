"""stepstream: event-driven workflows you can watch live, as a stream, a trace and logs."""

from stepstream.context import Context
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
from stepstream.retry import ConstantDelayRetryPolicy, RetryPolicy
from stepstream.step import step
from stepstream.telemetry import TelemetryHandle, configure_telemetry
from stepstream.workflow import Workflow

__all__ = [
    "ConstantDelayRetryPolicy",
    "Context",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
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
    "configure_telemetry",
    "draw_all_possible_flows",
    "step",
]
