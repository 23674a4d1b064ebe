"""Telemetry: configure_telemetry() and the names of every span, attribute, log key, metric.

The runtime records runs through the OpenTelemetry API (spans, span events, metrics)
and structlog-shaped log lines; see :mod:`stepstream.telemetry.attributes`.

``configure_telemetry`` and friends are imported on first use: the OpenTelemetry SDK,
structlog and orjson stay out of a process that never records anything.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stepstream.telemetry import attributes

if TYPE_CHECKING:
    from stepstream.telemetry._logging import add_correlation
    from stepstream.telemetry.setup import TelemetryHandle, TelemetryWarning, configure_telemetry

__all__ = [
    "TelemetryHandle",
    "TelemetryWarning",
    "add_correlation",
    "attributes",
    "configure_telemetry",
]

_LAZY = {
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
