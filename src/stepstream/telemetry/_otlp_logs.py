"""OTLP log records through the OpenTelemetry logs SDK, which is still in development.

Everything that touches ``opentelemetry.sdk._logs`` lives here, so an API change there
touches one file.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource

from stepstream.telemetry import attributes as attrs

__all__ = ["OtlpLogTarget", "make_logger_provider"]

_IDS = frozenset({attrs.KEY_TRACE_ID, attrs.KEY_SPAN_ID})

_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
}


def make_logger_provider(
    resource: Resource, exporter: LogRecordExporter, *, queue: int, batch: int, delay_ms: int
) -> LoggerProvider:
    """Return a LoggerProvider exporting in batches (off the event loop)."""
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchLogRecordProcessor(
        exporter,
        schedule_delay_millis=delay_ms,
        max_export_batch_size=batch,
        max_queue_size=queue,
    )
    provider.add_log_record_processor(processor)
    return provider


class OtlpLogTarget:
    """Emits each line as an OTel log record carrying the span's trace context."""

    def __init__(self, provider: LoggerProvider) -> None:
        self._logger = provider.get_logger(attrs.LOGGER_NAME)

    def emit(self, level: str, message: str, fields: dict[str, Any], span: Any) -> None:
        """Emit one log record; the body is the message, fields become attributes."""
        self._logger.emit(
            timestamp=time.time_ns(),
            context=trace.set_span_in_context(span) if span is not None else None,
            severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
            severity_text=level.upper(),
            body=message,
            # trace_id and span_id travel as the record's own trace context.
            attributes={k: v for k, v in fields.items() if v is not None and k not in _IDS},
        )
