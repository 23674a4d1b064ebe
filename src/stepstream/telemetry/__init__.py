"""Telemetry: configure_telemetry(), observers, and the names of every span, key and metric.

The runtime records runs through the OpenTelemetry API (spans, span events, metrics)
and structlog-shaped log lines; see :mod:`stepstream.telemetry.attributes`.

``configure_telemetry`` and friends are imported on first use: the OpenTelemetry SDK,
structlog and orjson stay out of a process that never records anything.

An :class:`Observer` sees a run's lifecycle (run and step starts and ends, every
streamed event); ``with observe(my_observer): wf.run(...)`` adds one to the runs
started in the block. ``stepstream.testing.capture_telemetry()`` is built on it.
Observers that print or record text from user code use :func:`error_text` and
:func:`safe_text`: they never raise and escape lone surrogates.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stepstream._instrument import Key, Observer, Redactor, RunInfo, Status, StepInfo
from stepstream._text import error_text, safe_text
from stepstream.telemetry import attributes
from stepstream.telemetry._observers import observe

if TYPE_CHECKING:
    from stepstream.telemetry._logging import add_correlation
    from stepstream.telemetry.setup import (
        TelemetryFileError,
        TelemetryHandle,
        TelemetryWarning,
        configure_telemetry,
    )

__all__ = [
    "Key",
    "Observer",
    "Redactor",
    "RunInfo",
    "Status",
    "StepInfo",
    "TelemetryFileError",
    "TelemetryHandle",
    "TelemetryWarning",
    "add_correlation",
    "attributes",
    "configure_telemetry",
    "error_text",
    "observe",
    "safe_text",
]

_LAZY = {
    "TelemetryFileError": "stepstream.telemetry.setup",
    "TelemetryHandle": "stepstream.telemetry.setup",
    "TelemetryWarning": "stepstream.telemetry.setup",
    "configure_telemetry": "stepstream.telemetry.setup",
    "add_correlation": "stepstream.telemetry._logging",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
