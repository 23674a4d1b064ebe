"""What the telemetry sink keeps per run and step attempt, and how it records errors.

Kept apart from :mod:`._sink` (the observer itself) so each reads in one sitting.
"""

from __future__ import annotations

import traceback
from contextvars import Token
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, StatusCode, TraceFlags
from opentelemetry.trace import Status as SpanStatus

from stepstream._instrument import RunInfo
from stepstream._text import error_text, safe_text, type_name
from stepstream.telemetry import _settings
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry._payload import Encoder, encode_payload, redacting_encoder
from stepstream.telemetry._switch import LogTarget

__all__ = ["RunState", "StepState", "record_error", "remote_span", "run_encoder", "truncate"]


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with a visible marker (span attributes only)."""
    if len(text) > limit:
        return text[:limit] + attrs.TRUNCATED_MARKER.format(n=len(text) - limit)
    return text


class RunState:
    """The sink's record of one run (names made safe once, the payload encoder)."""

    __slots__ = (
        "bind",
        "counts",
        "encode",
        "fields",
        "log",
        "log_limit",
        "parent",
        "run_id",
        "span",
        "span_id",
        "trace_id",
        "traced",
        "workflow",
    )

    def __init__(  # noqa: PLR0917 - built in one place, run_started
        self,
        span: Span,
        log: LogTarget | None,
        fields: dict[str, Any],
        encode: Encoder,
        workflow: str,
        run_id: str,
    ) -> None:
        self.span = span
        self.parent = trace.set_span_in_context(span)
        self.log = log
        ctx = span.get_span_context()
        # With no SDK the run span is the invalid no-op span: skip step spans entirely.
        self.traced = ctx.is_valid
        self.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        self.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        self.fields = fields
        # Chosen once per run: the plain encoder, or one applying the redact hooks.
        self.encode = encode
        # None: log lines carry the whole payload (the default).
        self.log_limit = _settings.log_payload_limit
        # The run's names as recorded (made safe once).
        self.workflow = workflow
        self.run_id = run_id
        # Bind the correlation keys for the application's structlog lines only when the
        # application uses structlog.
        self.bind = log is not None and structlog.is_configured()
        # Streamed events per type, added to the counter once when the run ends.
        self.counts: dict[str, int] = {}


class StepState:
    """The sink's record of one step attempt: its span, its log fields, its name."""

    __slots__ = ("fields", "name", "span", "token")

    def __init__(
        self,
        span: Span,
        token: Token[otel_context.Context] | None,
        fields: dict[str, Any],
        name: str,
    ) -> None:
        self.span = span
        self.token = token
        self.fields = fields
        self.name = name  # the step's name as recorded (made safe once)


def run_encoder(run: RunInfo) -> Encoder:
    """The run's payload encoder: the plain one unless a redact hook is configured."""
    hooks = [hook for hook in (run.redact, _settings.redact) if hook is not None]
    return redacting_encoder(hooks) if hooks else encode_payload


def record_error(span: Span, error: BaseException) -> None:
    """Record ``error`` on ``span`` as the SDK's ``record_exception`` does, but safely.

    The SDK calls ``str(error)`` (which may raise) and keeps its text as it is (which
    may hold lone surrogates that no exporter can encode).
    """
    cls = type(error)
    text = error_text(error)
    try:
        stacktrace = safe_text("".join(traceback.format_exception(error)))
    except Exception:  # noqa: BLE001 - a traceback that cannot be formatted is left out
        stacktrace = ""
    qualname = safe_text(cls.__qualname__)
    module = cls.__module__
    full = f"{safe_text(module)}.{qualname}" if module and module != "builtins" else qualname
    span.set_attribute(attrs.ERROR_TYPE, qualname)
    span.add_event(
        _EXCEPTION_EVENT,
        {
            _EXCEPTION_TYPE: full,
            _EXCEPTION_MESSAGE: text,
            _EXCEPTION_STACKTRACE: stacktrace,
            _EXCEPTION_ESCAPED: "False",
        },
    )
    span.set_status(SpanStatus(StatusCode.ERROR, f"{type_name(error)}: {text}"))


# The OpenTelemetry semantic conventions' exception event (as record_exception writes it).
_EXCEPTION_EVENT = "exception"
_EXCEPTION_TYPE = "exception.type"
_EXCEPTION_MESSAGE = "exception.message"
_EXCEPTION_STACKTRACE = "exception.stacktrace"
_EXCEPTION_ESCAPED = "exception.escaped"


def remote_span(trace_id: str, span_id: str) -> SpanContext | None:
    """The saved run span, as a remote span context (None if the ids are malformed)."""
    try:
        ctx = SpanContext(
            int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1)
        )
    except (TypeError, ValueError):
        return None
    return ctx if ctx.is_valid else None
