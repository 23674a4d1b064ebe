"""Process-wide telemetry settings that configure_telemetry() may change."""

from __future__ import annotations

from stepstream.telemetry.attributes import DEFAULT_PAYLOAD_LIMIT

#: Maximum characters of an event's JSON in span attributes and log lines.
payload_limit: int = DEFAULT_PAYLOAD_LIMIT
