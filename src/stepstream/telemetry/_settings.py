"""Process-wide telemetry settings that configure_telemetry() may change."""

from __future__ import annotations

from stepstream._instrument import Redactor
from stepstream.errors import WorkflowValidationError
from stepstream.telemetry.attributes import DEFAULT_PAYLOAD_LIMIT

__all__ = ["apply", "check", "log_payload_limit", "payload_limit", "redact"]

#: Maximum characters of an event's JSON in span attributes.
payload_limit: int = DEFAULT_PAYLOAD_LIMIT
#: Maximum characters of an event's JSON in log lines (None: complete, the default).
log_payload_limit: int | None = None
#: The process-wide ``redact`` hook (``configure_telemetry(redact=...)``), or None.
redact: Redactor | None = None


def check(*, payload_limit: object, log_payload_limit: object, redact: object) -> None:
    """Raise WorkflowValidationError naming the first configure_telemetry() option that is wrong."""
    for name, limit in (("payload_limit", payload_limit), ("log_payload_limit", log_payload_limit)):
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            msg = (
                f"configure_telemetry({name}=...) must be a whole number of characters, "
                f"0 or more, or None; got {limit!r}"
            )
            raise WorkflowValidationError(msg)
    if redact is not None and not callable(redact):
        msg = (
            "configure_telemetry(redact=...) must be a function (event, payload) -> payload "
            f"or None, got {type(redact).__name__}"
        )
        raise WorkflowValidationError(msg)


def apply(*, span_limit: int | None, log_limit: int | None, hook: Redactor | None) -> None:
    """Set what configure_telemetry() was given (checked by :func:`check` first)."""
    global payload_limit, log_payload_limit, redact  # noqa: PLW0603 - the process-wide settings
    if span_limit is not None:
        payload_limit = span_limit
    log_payload_limit = log_limit
    redact = hook
