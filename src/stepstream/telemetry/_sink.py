"""The telemetry sink on the instrumentation seam: spans, span events, log lines, metrics.

One sink does all three so that the per-event work shared by them (the payload JSON,
the trace and span ids) is done once. Only the OpenTelemetry API is used; with no SDK
configured, spans are non-recording and nothing is encoded.

Whatever a run hands it, the sink records it: names are made safe once (lone
surrogates escaped) where it builds a run's or a step's record, error texts when an
error is recorded, payloads by :mod:`._payload`; and every span it starts is ended
(and the active-runs gauge put back) even if recording the rest fails.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import Link, SpanKind, Tracer
from structlog.contextvars import bind_contextvars

from stepstream._instrument import Key, Observer, RunInfo, Status, StepInfo
from stepstream._text import error_text, safe_text, type_name
from stepstream.events import Event, StopEvent
from stepstream.telemetry import _settings
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry._logging import CORRELATION_KEYS
from stepstream.telemetry._metrics import Instruments
from stepstream.telemetry._records import (
    RunState,
    StepState,
    record_error,
    remote_span,
    run_encoder,
    truncate,
)
from stepstream.telemetry._switch import LogTarget, current_target

__all__ = ["TelemetrySink"]

_ERROR_STATUSES = (attrs.STATUS_ERROR, attrs.STATUS_TIMEOUT)


class TelemetrySink(Observer):
    """Records a run as spans, span events, structured log lines and metrics."""

    def __init__(self, tracer: Tracer, meter: Meter, log: LogTarget | None = None) -> None:
        self._tracer = tracer
        # Where lines go: ``log`` when given, else the target current when a run starts.
        self._log = log
        # This sink's own state on each run and step attempt.
        self._run_key: Key[RunState] = Key("telemetry run")
        self._step_key: Key[StepState] = Key("telemetry step")
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
        workflow, run_id = safe_text(run.workflow), safe_text(run.run_id)
        attributes: dict[str, Any] = {
            attrs.GEN_AI_OPERATION_NAME: attrs.GEN_AI_OPERATION_INVOKE_WORKFLOW,
            attrs.GEN_AI_WORKFLOW_NAME: workflow,
            attrs.WORKFLOW: workflow,
            attrs.RUN_ID: run_id,
        }
        parent = links = None
        resumed = run.resumed is not None or run.attempt > 1
        if run.resumed is not None:
            saved = remote_span(*run.resumed)
            if saved is not None:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(saved))
                links = [Link(saved)]
        if resumed:
            attributes[attrs.RUN_RESUMED] = True
            attributes[attrs.RUN_ATTEMPT] = run.attempt
            if run.last_checkpoint_ns is not None:  # a durable run resumed after a crash
                attributes[attrs.RUN_LAST_CHECKPOINT_NS] = run.last_checkpoint_ns
        span = self._tracer.start_span(
            f"{attrs.RUN_SPAN_PREFIX} {workflow}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=run.start_ns,
        )
        log = self._log if self._log is not None else current_target()
        fields: dict[str, Any] = {attrs.KEY_WORKFLOW: workflow, attrs.KEY_RUN_ID: run_id}
        if resumed:
            fields[attrs.KEY_RESUMED] = True
            fields[attrs.KEY_RUN_ATTEMPT] = run.attempt
        state = RunState(span, log, fields, run_encoder(run), workflow, run_id)
        run.put(self._run_key, state)
        if run.trace_id is None:
            run.trace_id = state.trace_id
            run.span_id = state.span_id
        self._count_start(run, workflow, resumed)
        if log is not None:
            started = self._run_fields(state)
            if run.last_checkpoint_ns is not None:
                started[attrs.KEY_LAST_CHECKPOINT_NS] = run.last_checkpoint_ns
            log.emit("info", attrs.LOG_RUN_STARTED, started, span)

    def checkpoint_committed(self, run: RunInfo, seconds: float) -> None:
        """Measure one commit of a durable run's journal."""
        state = run.find(self._run_key)
        workflow = state.workflow if state is not None else safe_text(run.workflow)
        self._metrics.checkpoint_duration.record(seconds, self._label(attrs.WORKFLOW, workflow))

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
        workflow = state.workflow
        try:
            payload = self._record_run_end(state, status, error, terminal, seq)
        finally:
            # Whatever failed above, the span ends and the gauge goes back down.
            span.end()
            self._metrics.runs_active.add(-1, self._label(attrs.WORKFLOW, workflow))
        duration = (time.time_ns() - run.start_ns) / 1e9
        # Recorded in the run span's context, so exemplars point at this trace.
        self._metrics.run_duration.record(
            duration,
            self._label(attrs.WORKFLOW, workflow, attrs.RUN_STATUS, status),
            state.parent,
        )
        counts = state.counts
        terminal_type = type_name(terminal)
        counts[terminal_type] = counts.get(terminal_type, 0) + 1
        for event_type, n in counts.items():
            self._metrics.events_streamed.add(
                n, self._label(attrs.WORKFLOW, workflow, attrs.EVENT_TYPE, event_type)
            )
        log = state.log
        if log is not None:
            fields = self._run_fields(state)
            line = self._event_fields(fields, terminal_type, seq, payload, state.log_limit)
            # The terminal line names the step that ended the run (null when none did).
            line[attrs.KEY_STEP] = _step_name(source)
            line[attrs.KEY_ATTEMPT] = source.attempt if source is not None else None
            log.emit("info", attrs.LOG_STREAM_EVENT, line, span)
            fields[attrs.KEY_STATUS] = status
            fields[attrs.KEY_DURATION_MS] = round(duration * 1000, 3)
            if error is not None:
                fields[attrs.KEY_ERROR_TYPE] = safe_text(type(error).__qualname__)
                fields[attrs.KEY_ERROR] = error_text(error)
            level = "info" if status == attrs.STATUS_OK else "error"
            log.emit(level, attrs.LOG_RUN_FINISHED, fields, span)

    def _count_start(self, run: RunInfo, workflow: str, resumed: bool) -> None:
        label = self._label(attrs.WORKFLOW, workflow)
        self._metrics.runs_active.add(1, label)
        if resumed:
            self._metrics.runs_resumed.add(1, label)
        if run.unparked:
            self._metrics.runs_parked.add(-1, label)

    def run_parked(self, run: RunInfo) -> None:
        """End the run span as parked (no status: the run goes on), count it, log run_parked."""
        state = run.get(self._run_key)
        span = state.span
        workflow = state.workflow
        try:
            if span.is_recording():
                span.set_attribute(attrs.RUN_PARKED, True)
        finally:
            span.end()
            self._metrics.runs_active.add(-1, self._label(attrs.WORKFLOW, workflow))
            self._metrics.runs_parked.add(1, self._label(attrs.WORKFLOW, workflow))
        for event_type, n in state.counts.items():
            self._metrics.events_streamed.add(
                n, self._label(attrs.WORKFLOW, workflow, attrs.EVENT_TYPE, event_type)
            )
        if state.log is not None:
            state.log.emit("info", attrs.LOG_RUN_PARKED, self._run_fields(state), span)

    def _record_run_end(
        self,
        state: RunState,
        status: Status,
        error: BaseException | None,
        terminal: StopEvent,
        seq: int,
    ) -> str | None:
        """Put the terminal event and the status on the run span; return the payload."""
        span = state.span
        recording = span.is_recording()
        payload = state.encode(terminal) if recording or state.log is not None else None
        if recording:
            event_attrs = self._event_attrs(type_name(terminal), seq, payload)
            span.add_event(attrs.STREAM_EVENT, event_attrs)
            span.set_attribute(attrs.RUN_STATUS, status)
            if status in _ERROR_STATUSES and error is not None:
                record_error(span, error)
        return payload

    # -- steps ----------------------------------------------------------------------

    def step_started(self, inv: StepInfo) -> None:
        """Open the step span, linked to the producer of its event, and make it current."""
        run_state = inv.run.get(self._run_key)
        name = safe_text(inv.step)
        fields = {
            **run_state.fields,
            attrs.KEY_STEP: name,
            attrs.KEY_ATTEMPT: inv.attempt,
        }
        if inv.replayed:
            self._replayed(inv, run_state.workflow, name, fields)
        if not run_state.traced:
            inv.put(self._step_key, StepState(trace.INVALID_SPAN, None, fields, name))
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
        attributes: dict[str, Any] = {
            attrs.RUN_ID: run_state.run_id,
            attrs.WORKFLOW: run_state.workflow,
            attrs.STEP: name,
            attrs.STEP_ATTEMPT: inv.attempt,
            attrs.STEP_WORKER: inv.worker,
            attrs.EVENT_IN: type_name(inv.event),
        }
        if inv.replayed:
            attributes[attrs.STEP_REPLAYED] = True
        span = self._tracer.start_span(
            f"{attrs.STEP_SPAN_PREFIX} {name}",
            context=run_state.parent,
            kind=SpanKind.INTERNAL,
            links=links,
            attributes=attributes,
            start_time=inv.start_ns,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        ctx = span.get_span_context()
        if ctx.is_valid:
            fields[attrs.KEY_TRACE_ID] = format(ctx.trace_id, "032x")
            fields[attrs.KEY_SPAN_ID] = format(ctx.span_id, "016x")
        inv.put(self._step_key, StepState(span, token, fields, name))
        if run_state.bind:
            _bind_contextvars(fields)
        if run_state.log is not None:
            run_state.log.emit("info", attrs.LOG_STEP_STARTED, fields, span)

    def _replayed(self, inv: StepInfo, workflow: str, name: str, fields: dict[str, Any]) -> None:
        """Mark the lines of an attempt that re-runs an invocation in flight at a crash or save."""
        fields[attrs.KEY_REPLAYED] = True
        if inv.attempt == 1:
            labels = self._label(attrs.WORKFLOW, workflow, attrs.STEP, name)
            self._metrics.steps_replayed.add(1, labels)

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """End the step span with what it returned, and measure it."""
        out = type_name(result) if result is not None else "None"
        self._end_step(inv, attrs.STATUS_OK, None, attrs.LOG_STEP_FINISHED, "info", out)

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """End the step span as failed (ERROR for errors and timeouts)."""
        level = "warning" if will_retry or status == attrs.STATUS_CANCELLED else "error"
        self._end_step(inv, status, error, attrs.LOG_STEP_FAILED, level)

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """Count the retry and log step_retry."""
        state = inv.get(self._step_key)
        run_state = inv.run.get(self._run_key)
        self._metrics.step_retries.add(
            1, self._label(attrs.WORKFLOW, run_state.workflow, attrs.STEP, state.name)
        )
        log = run_state.log
        if log is not None:
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
        try:
            if span.is_recording():
                if error is not None and status in _ERROR_STATUSES:
                    record_error(span, error)
                ending: dict[str, str | int] = {
                    attrs.EVENTS_STREAMED: inv.streamed,
                    attrs.STEP_STATUS: status,
                }
                if out is not None:
                    ending[attrs.EVENT_OUT] = out
                span.set_attributes(ending)
        finally:
            # Whatever failed above, the span ends and stops being the current one.
            span.end()
            if state.token is not None:
                # Detached where it was attached: a durable run's step ends later, from
                # its journal's task (once recorded), where the token is not valid; the
                # step's own context ended with its task.
                if trace.get_current_span() is span:
                    otel_context.detach(state.token)
                # The token refers to the step task's contextvars, which refer to this
                # step (current_step): dropping it breaks the cycle, so a finished step
                # is freed at once rather than by the garbage collector.
                state.token = None
        run_state = inv.run.get(self._run_key)
        duration = (time.time_ns() - inv.start_ns) / 1e9
        self._metrics.step_duration.record(
            duration,
            self._label(
                attrs.WORKFLOW,
                run_state.workflow,
                attrs.STEP,
                state.name,
                attrs.STEP_STATUS,
                status,
            ),
        )
        log = run_state.log
        if log is not None:
            fields = {
                **state.fields,
                attrs.KEY_STATUS: status,
                attrs.KEY_DURATION_MS: round(duration * 1000, 3),
            }
            if error is not None:
                fields[attrs.KEY_ERROR_TYPE] = safe_text(type(error).__qualname__)
                fields[attrs.KEY_ERROR] = error_text(error)
            log.emit(level, message, fields, span)

    # -- events ---------------------------------------------------------------------

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """Add a span event on the writing step's span, log it, count it (hot path)."""
        state = run.get(self._run_key)
        step = inv.find(self._step_key) if inv is not None else None
        span = step.span if step is not None else state.span
        name = type(event).__name__
        if not name.isascii():
            name = safe_text(name)
        counts = state.counts
        counts[name] = counts.get(name, 0) + 1
        recording = span.is_recording()
        if not recording and step is not None and state.traced:
            # A durable run publishes an event once recorded: its step may have ended.
            span = state.span
            recording = span.is_recording()
        log = state.log
        if not recording and log is None:
            return
        payload = state.encode(event)
        if recording:
            span.add_event(attrs.STREAM_EVENT, self._event_attrs(name, seq, payload), written_ns)
        if log is not None:
            fields = step.fields if step is not None else self._run_fields(state)
            line = self._event_fields(fields, name, seq, payload, state.log_limit)
            log.emit("info", attrs.LOG_STREAM_EVENT, line, span)

    def resources_resolved(self, inv: StepInfo, names: Sequence[str], seconds: float) -> None:
        """Mark on the step span which resources were resolved, and how long it took."""
        span = inv.get(self._step_key).span
        if span.is_recording():
            span.add_event(
                attrs.RESOURCES_EVENT,
                {
                    attrs.RESOURCE_NAMES: [safe_text(n) for n in names],
                    attrs.RESOURCE_SECONDS: seconds,
                },
            )

    def step_waiting(self, run: RunInfo, inv: StepInfo | None, event_type: type[Event]) -> None:
        """Mark the start of a wait_for_event on the step span."""
        if inv is not None:
            span = inv.get(self._step_key).span
            span.add_event(attrs.WAIT_EVENT, {attrs.WAIT_EVENT_TYPE: type_name(event_type)})

    def step_resumed(self, run: RunInfo, inv: StepInfo | None, event: Event) -> None:
        """Mark the end of a wait_for_event on the step span."""
        if inv is not None:
            span = inv.get(self._step_key).span
            span.add_event(attrs.RESUME_EVENT, {attrs.EVENT_TYPE: type_name(event)})

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
    def _event_attrs(name: str, seq: int, payload: str | None) -> dict[str, Any]:
        if payload is None:  # the event's class keeps its payload out of telemetry
            return {attrs.EVENT_TYPE: name, attrs.EVENT_SEQ: seq}
        return {
            attrs.EVENT_TYPE: name,
            attrs.EVENT_SEQ: seq,
            attrs.EVENT_PAYLOAD: truncate(payload, _settings.payload_limit),
        }

    @staticmethod
    def _event_fields(
        base: dict[str, Any], name: str, seq: int, payload: str | None, limit: int | None
    ) -> dict[str, Any]:
        line = {**base, attrs.KEY_EVENT_TYPE: name, attrs.KEY_SEQ: seq}
        if payload is not None:
            # Logs are the complete record unless configure_telemetry(log_payload_limit=...).
            line[attrs.KEY_PAYLOAD] = payload if limit is None else truncate(payload, limit)
        return line

    @staticmethod
    def _run_fields(state: RunState) -> dict[str, Any]:
        fields = dict(state.fields)
        if state.trace_id is not None:
            fields[attrs.KEY_TRACE_ID] = state.trace_id
            fields[attrs.KEY_SPAN_ID] = state.span_id
        return fields


def _step_name(inv: StepInfo | None) -> str | None:
    return safe_text(inv.step) if inv is not None else None


def _bind_contextvars(fields: dict[str, Any]) -> None:
    """Let the application's structlog lines inside the step carry the correlation keys."""
    bind_contextvars(**{k: fields[k] for k in CORRELATION_KEYS if k in fields})
