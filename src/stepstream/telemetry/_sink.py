"""The telemetry sink on the instrumentation seam: spans, span events, log lines, metrics.

One sink does all three so that the per-event work shared by them (the payload JSON,
the trace and span ids) is done once. Only the OpenTelemetry API is used; with no SDK
configured, spans are non-recording and nothing is encoded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import Token
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode, TraceFlags, Tracer
from opentelemetry.trace import Status as SpanStatus
from structlog.contextvars import bind_contextvars

from stepstream._instrument import Key, Observer, RunInfo, Status, StepInfo
from stepstream.events import _FLAT_CONTEXT, Event, StopEvent
from stepstream.telemetry import _settings
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry._logging import CORRELATION_KEYS
from stepstream.telemetry._metrics import Instruments
from stepstream.telemetry._switch import LogTarget, current_target

__all__ = ["TelemetrySink", "encode_payload", "truncate"]

_ERROR_STATUSES = (attrs.STATUS_ERROR, attrs.STATUS_TIMEOUT)


def encode_payload(event: Event) -> str:
    """Return ``event`` as JSON; values pydantic cannot serialise are rendered by ``repr``.

    Dynamic fields appear beside the declared ones (``{"msg": "hi"}``), not under the
    ``"_data"`` key of ``model_dump()``.
    """
    return event.model_dump_json(fallback=repr, warnings=False, context=_FLAT_CONTEXT)


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with a visible marker (span attributes only)."""
    if len(text) > limit:
        return text[:limit] + attrs.TRUNCATED_MARKER.format(n=len(text) - limit)
    return text


class _RunState:
    __slots__ = (
        "bind",
        "counts",
        "fields",
        "log",
        "parent",
        "span",
        "span_id",
        "trace_id",
        "traced",
    )

    def __init__(self, span: Span, log: LogTarget | None, fields: dict[str, Any]) -> None:
        self.span = span
        self.parent = trace.set_span_in_context(span)
        self.log = log
        ctx = span.get_span_context()
        # With no SDK the run span is the invalid no-op span: skip step spans entirely.
        self.traced = ctx.is_valid
        self.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        self.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        self.fields = fields
        # Bind the correlation keys for the application's structlog lines only when the
        # application uses structlog.
        self.bind = log is not None and structlog.is_configured()
        # Streamed events per type, added to the counter once when the run ends.
        self.counts: dict[str, int] = {}


class _StepState:
    __slots__ = ("fields", "span", "token")

    def __init__(
        self, span: Span, token: Token[otel_context.Context] | None, fields: dict[str, Any]
    ) -> None:
        self.span = span
        self.token = token
        self.fields = fields


class TelemetrySink(Observer):
    """Records a run as spans, span events, structured log lines and metrics."""

    def __init__(self, tracer: Tracer, meter: Meter, log: LogTarget | None = None) -> None:
        self._tracer = tracer
        # Where lines go: ``log`` when given, else the target current when a run starts.
        self._log = log
        # This sink's own state on each run and step attempt.
        self._run_key: Key[_RunState] = Key("telemetry run")
        self._step_key: Key[_StepState] = Key("telemetry step")
        self._metrics = Instruments(meter)
        # Metric attribute dicts are few and reused: built once per combination.
        self._labels: dict[tuple[str, ...], dict[str, str]] = {}

    def _label(self, *pairs: str) -> dict[str, str]:
        """The attribute dict for alternating key, value ``pairs`` (cached)."""
        try:
            return self._labels[pairs]
        except KeyError:
            labels = self._labels[pairs] = dict(zip(pairs[::2], pairs[1::2], strict=True))
            return labels

    # -- runs -----------------------------------------------------------------------

    def run_started(self, run: RunInfo) -> None:
        """Open the run span (child of the caller's current span) and log run_started.

        A run continued from a saved context goes on in the trace it was saved from: its
        span is a child of, and links to, the run span it was saved from.
        """
        attributes: dict[str, Any] = {
            attrs.GEN_AI_OPERATION_NAME: attrs.GEN_AI_OPERATION_INVOKE_WORKFLOW,
            attrs.GEN_AI_WORKFLOW_NAME: run.workflow,
            attrs.WORKFLOW: run.workflow,
            attrs.RUN_ID: run.run_id,
        }
        parent = links = None
        if run.resumed is not None:
            saved = _remote_span(*run.resumed)
            if saved is not None:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(saved))
                links = [Link(saved)]
            attributes[attrs.RUN_RESUMED] = True
            attributes[attrs.RUN_ATTEMPT] = run.attempt
        span = self._tracer.start_span(
            f"{attrs.RUN_SPAN_PREFIX} {run.workflow}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=run.start_ns,
        )
        log = self._log if self._log is not None else current_target()
        fields: dict[str, Any] = {attrs.KEY_WORKFLOW: run.workflow, attrs.KEY_RUN_ID: run.run_id}
        if run.resumed is not None:
            fields[attrs.KEY_RESUMED] = True
            fields[attrs.KEY_RUN_ATTEMPT] = run.attempt
        state = _RunState(span, log, fields)
        run.put(self._run_key, state)
        if run.trace_id is None:
            run.trace_id = state.trace_id
            run.span_id = state.span_id
        self._metrics.runs_active.add(1, self._label(attrs.WORKFLOW, run.workflow))
        if log is not None:
            log.emit("info", attrs.LOG_RUN_STARTED, self._run_fields(state), span)

    def run_finished(  # noqa: PLR0917 - matches the seam
        self,
        run: RunInfo,
        status: Status,
        error: BaseException | None,
        terminal: StopEvent,
        seq: int,
        source: StepInfo | None,
    ) -> None:
        """Record the terminal event and status on the run span, end it, log, measure."""
        state = run.get(self._run_key)
        span = state.span
        payload = None
        if span.is_recording():
            payload = encode_payload(terminal)
            cut = truncate(payload, _settings.payload_limit)
            span.add_event(attrs.STREAM_EVENT, self._event_attrs(terminal, seq, cut))
            span.set_attribute(attrs.RUN_STATUS, status)
            if status in _ERROR_STATUSES and error is not None:
                span.set_attribute(attrs.ERROR_TYPE, type(error).__qualname__)
                span.record_exception(error)
                span.set_status(SpanStatus(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        duration = (time.time_ns() - run.start_ns) / 1e9
        workflow = run.workflow
        self._metrics.runs_active.add(-1, self._label(attrs.WORKFLOW, workflow))
        # Recorded in the run span's context, so exemplars point at this trace.
        self._metrics.run_duration.record(
            duration,
            self._label(attrs.WORKFLOW, workflow, attrs.RUN_STATUS, status),
            state.parent,
        )
        counts = state.counts
        terminal_type = type(terminal).__name__
        counts[terminal_type] = counts.get(terminal_type, 0) + 1
        for event_type, n in counts.items():
            self._metrics.events_streamed.add(
                n, self._label(attrs.WORKFLOW, workflow, attrs.EVENT_TYPE, event_type)
            )
        log = state.log
        if log is not None:
            fields = self._run_fields(state)
            if payload is None:
                payload = encode_payload(terminal)
            line = self._event_fields(fields, terminal, seq, payload)
            # The terminal line names the step that ended the run (null when none did).
            line[attrs.KEY_STEP] = source.step if source is not None else None
            line[attrs.KEY_ATTEMPT] = source.attempt if source is not None else None
            log.emit("info", attrs.LOG_STREAM_EVENT, line, span)
            fields[attrs.KEY_STATUS] = status
            fields[attrs.KEY_DURATION_MS] = round(duration * 1000, 3)
            if error is not None:
                fields[attrs.KEY_ERROR_TYPE] = type(error).__qualname__
                fields[attrs.KEY_ERROR] = str(error)
            level = "info" if status == attrs.STATUS_OK else "error"
            log.emit(level, attrs.LOG_RUN_FINISHED, fields, span)

    # -- steps ----------------------------------------------------------------------

    def step_started(self, inv: StepInfo) -> None:
        """Open the step span, linked to the producer of its event, and make it current."""
        run_state = inv.run.get(self._run_key)
        fields = {
            **run_state.fields,
            attrs.KEY_STEP: inv.step,
            attrs.KEY_ATTEMPT: inv.attempt,
        }
        if not run_state.traced:
            inv.put(self._step_key, _StepState(trace.INVALID_SPAN, None, fields))
            if run_state.bind:
                _bind_contextvars(fields)
            if run_state.log is not None:
                run_state.log.emit("info", attrs.LOG_STEP_STARTED, fields, None)
            return
        origin = inv.origin
        links = None
        made = origin.find(self._step_key) if origin is not None else None
        if made is not None:
            links = [Link(made.span.get_span_context())]
        span = self._tracer.start_span(
            f"{attrs.STEP_SPAN_PREFIX} {inv.step}",
            context=run_state.parent,
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={
                attrs.RUN_ID: inv.run.run_id,
                attrs.WORKFLOW: inv.run.workflow,
                attrs.STEP: inv.step,
                attrs.STEP_ATTEMPT: inv.attempt,
                attrs.STEP_WORKER: inv.worker,
                attrs.EVENT_IN: type(inv.event).__name__,
            },
            start_time=inv.start_ns,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        ctx = span.get_span_context()
        if ctx.is_valid:
            fields[attrs.KEY_TRACE_ID] = format(ctx.trace_id, "032x")
            fields[attrs.KEY_SPAN_ID] = format(ctx.span_id, "016x")
        inv.put(self._step_key, _StepState(span, token, fields))
        if run_state.bind:
            _bind_contextvars(fields)
        if run_state.log is not None:
            run_state.log.emit("info", attrs.LOG_STEP_STARTED, fields, span)

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """End the step span with what it returned, and measure it."""
        out = type(result).__name__ if result is not None else "None"
        self._end_step(inv, attrs.STATUS_OK, None, attrs.LOG_STEP_FINISHED, "info", out)

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """End the step span as failed (ERROR for errors and timeouts)."""
        span = inv.get(self._step_key).span
        if status in _ERROR_STATUSES and span.is_recording():
            span.set_attribute(attrs.ERROR_TYPE, type(error).__qualname__)
            span.record_exception(error)
            span.set_status(SpanStatus(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        level = "warning" if will_retry or status == attrs.STATUS_CANCELLED else "error"
        self._end_step(inv, status, error, attrs.LOG_STEP_FAILED, level)

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """Count the retry and log step_retry."""
        self._metrics.step_retries.add(
            1, self._label(attrs.WORKFLOW, inv.run.workflow, attrs.STEP, inv.step)
        )
        log = inv.run.get(self._run_key).log
        if log is not None:
            state = inv.get(self._step_key)
            fields = {**state.fields, attrs.KEY_DELAY_S: delay}
            log.emit("warning", attrs.LOG_STEP_RETRY, fields, state.span)

    def _end_step(  # noqa: PLR0917 - the one place every step ending goes through
        self,
        inv: StepInfo,
        status: Status,
        error: BaseException | None,
        message: str,
        level: str,
        out: str | None = None,
    ) -> None:
        state = inv.get(self._step_key)
        span = state.span
        if span.is_recording():
            ending: dict[str, str | int] = {
                attrs.EVENTS_STREAMED: inv.streamed,
                attrs.STEP_STATUS: status,
            }
            if out is not None:
                ending[attrs.EVENT_OUT] = out
            span.set_attributes(ending)
        span.end()
        if state.token is not None:
            otel_context.detach(state.token)
            # The token refers to the step task's contextvars, which refer to this
            # step (current_step): dropping it breaks the cycle, so a finished step is
            # freed at once rather than by the garbage collector.
            state.token = None
        workflow = inv.run.workflow
        duration = (time.time_ns() - inv.start_ns) / 1e9
        self._metrics.step_duration.record(
            duration,
            self._label(attrs.WORKFLOW, workflow, attrs.STEP, inv.step, attrs.STEP_STATUS, status),
        )
        log = inv.run.get(self._run_key).log
        if log is not None:
            fields = {
                **state.fields,
                attrs.KEY_STATUS: status,
                attrs.KEY_DURATION_MS: round(duration * 1000, 3),
            }
            if error is not None:
                fields[attrs.KEY_ERROR_TYPE] = type(error).__qualname__
                fields[attrs.KEY_ERROR] = str(error)
            log.emit(level, message, fields, span)

    # -- events ---------------------------------------------------------------------

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """Add a span event on the writing step's span, log it, count it (hot path)."""
        state = run.get(self._run_key)
        step = inv.find(self._step_key) if inv is not None else None
        span = step.span if step is not None else state.span
        payload = None
        if span.is_recording():
            payload = encode_payload(event)
            cut = truncate(payload, _settings.payload_limit)
            span.add_event(attrs.STREAM_EVENT, self._event_attrs(event, seq, cut), written_ns)
        counts = state.counts
        name = type(event).__name__
        counts[name] = counts.get(name, 0) + 1
        fields = step.fields if step is not None else self._run_fields(state)
        log = state.log
        if log is not None:
            if payload is None:
                payload = encode_payload(event)
            # Logs are the complete record: the payload is never cut there.
            line = self._event_fields(fields, event, seq, payload)
            log.emit("info", attrs.LOG_STREAM_EVENT, line, span)

    def resources_resolved(self, inv: StepInfo, names: Sequence[str], seconds: float) -> None:
        """Mark on the step span which resources were resolved, and how long it took."""
        span = inv.get(self._step_key).span
        if span.is_recording():
            span.add_event(
                attrs.RESOURCES_EVENT,
                {attrs.RESOURCE_NAMES: list(names), attrs.RESOURCE_SECONDS: seconds},
            )

    def step_waiting(self, run: RunInfo, inv: StepInfo | None, event_type: type[Event]) -> None:
        """Mark the start of a wait_for_event on the step span."""
        if inv is not None:
            span = inv.get(self._step_key).span
            span.add_event(attrs.WAIT_EVENT, {attrs.WAIT_EVENT_TYPE: event_type.__name__})

    def step_resumed(self, run: RunInfo, inv: StepInfo | None, event: Event) -> None:
        """Mark the end of a wait_for_event on the step span."""
        if inv is not None:
            span = inv.get(self._step_key).span
            span.add_event(attrs.RESUME_EVENT, {attrs.EVENT_TYPE: type(event).__name__})

    def events_collected(
        self, run: RunInfo, inv: StepInfo | None, origins: Sequence[StepInfo | None]
    ) -> None:
        """Link the joining step span to the span that produced each collected event."""
        step = inv.find(self._step_key) if inv is not None else None
        if inv is None or step is None or not step.span.is_recording():
            return
        for origin in origins:
            made = origin.find(self._step_key) if origin is not None else None
            if made is not None and origin is not inv.origin:
                step.span.add_link(made.span.get_span_context())

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _event_attrs(event: Event, seq: int, payload: str) -> dict[str, Any]:
        return {
            attrs.EVENT_TYPE: type(event).__name__,
            attrs.EVENT_SEQ: seq,
            attrs.EVENT_PAYLOAD: payload,
        }

    @staticmethod
    def _event_fields(base: dict[str, Any], event: Event, seq: int, payload: str) -> dict[str, Any]:
        return {
            **base,
            attrs.KEY_EVENT_TYPE: type(event).__name__,
            attrs.KEY_SEQ: seq,
            attrs.KEY_PAYLOAD: payload,
        }

    @staticmethod
    def _run_fields(state: _RunState) -> dict[str, Any]:
        fields = dict(state.fields)
        if state.trace_id is not None:
            fields[attrs.KEY_TRACE_ID] = state.trace_id
            fields[attrs.KEY_SPAN_ID] = state.span_id
        return fields


def _bind_contextvars(fields: dict[str, Any]) -> None:
    """Let the application's structlog lines inside the step carry the correlation keys."""
    bind_contextvars(**{k: fields[k] for k in CORRELATION_KEYS if k in fields})


def _remote_span(trace_id: str, span_id: str) -> SpanContext | None:
    """The saved run span, as a remote span context (None if the ids are malformed)."""
    try:
        ctx = SpanContext(
            int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1)
        )
    except (TypeError, ValueError):
        return None
    return ctx if ctx.is_valid else None
