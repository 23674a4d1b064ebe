"""Whether anything would record a run, and where its log lines go.

This is all the runtime imports of telemetry when a workflow is defined or started:
the OpenTelemetry API and nothing else. The SDK, structlog and orjson are imported
only by code that records (the sink) or sets recording up (``configure_telemetry``),
so an application that observes nothing does not carry them.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from opentelemetry import metrics, trace

__all__ = ["LogTarget", "current_target", "install_target", "telemetry_active"]

_DARK_TRACERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _dark_meter_provider(provider: object) -> bool:
    # The API package itself defines only the no-op provider and the (private) proxy
    # that stands in until an SDK provider is set: any provider of its own records
    # nothing. Checked by module, not by importing the private proxy class.
    return type(provider).__module__.startswith("opentelemetry.metrics")


class LogTarget(Protocol):
    """Receives one structured line: its message and flat fields."""

    def emit(self, level: str, message: str, fields: dict[str, Any], span: Any) -> None:
        """Write one line; ``span`` is the OTel span it belongs to (for OTLP records).

        ``fields`` is shared with later lines of the same step: a target must not change it.
        """
        ...


_installed: LogTarget | None = None


def install_target(target: LogTarget | None) -> None:
    """Make ``target`` receive stepstream's lines (``configure_telemetry`` does this)."""
    global _installed  # noqa: PLW0603 - the one switch configure_telemetry() flips
    _installed = target


def current_target() -> LogTarget | None:
    """Return the target for a run starting now, or None when logging is off.

    That is the installed target, else the application's structlog when it configured
    structlog (which it cannot have done without importing it), else none.
    """
    if _installed is not None:
        return _installed
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        from stepstream.telemetry._logging import STRUCTLOG_TARGET  # noqa: PLC0415

        return STRUCTLOG_TARGET
    return None


def telemetry_active() -> bool:
    """Whether a run starting now would record anything: an SDK provider or logging.

    With neither (the unconfigured default) every span is the no-op span, every
    instrument the no-op instrument and no line is written, so a run skips the sink.
    """
    return (
        not isinstance(trace.get_tracer_provider(), _DARK_TRACERS)
        or not _dark_meter_provider(metrics.get_meter_provider())
        or current_target() is not None
    )
