"""Telemetry: configure_telemetry() and the names of every span, attribute, log key, metric.

The runtime records runs through the OpenTelemetry API (spans, span events, metrics)
and structlog-shaped log lines; see :mod:`stepstream.telemetry.attributes`.
"""

from stepstream.telemetry import attributes
from stepstream.telemetry._logging import add_correlation
from stepstream.telemetry.setup import TelemetryHandle, TelemetryWarning, configure_telemetry

__all__ = [
    "TelemetryHandle",
    "TelemetryWarning",
    "add_correlation",
    "attributes",
    "configure_telemetry",
]
