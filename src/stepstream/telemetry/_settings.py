"""Process-wide telemetry settings that configure_telemetry() may change."""

from __future__ import annotations

from stepstream._instrument import Redactor
from stepstream.telemetry.attributes import DEFAULT_PAYLOAD_LIMIT

#: Maximum characters of an event's JSON in span attributes.
payload_limit: int = DEFAULT_PAYLOAD_LIMIT
#: Maximum characters of an event's JSON in log lines (None: complete, the default).
log_payload_limit: int | None = None
#: The process-wide ``redact`` hook (``configure_telemetry(redact=...)``), or None.
redact: Redactor | None = None
