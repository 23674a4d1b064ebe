"""``capture_telemetry()``: a run's spans, span events, log lines and metrics, in memory.

In the spirit of ``structlog.testing.capture_logs()``: every run started inside the
``with`` block is also recorded into in-memory OpenTelemetry SDK providers and a list
of log lines, whatever else observes it. Nothing global is configured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stepstream._version import __version__
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry._observers import observe
from stepstream.telemetry._sink import TelemetrySink

__all__ = ["CapturedTelemetry", "capture_telemetry"]


class _SpanTracker(SpanProcessor):
    """Counts how often each span was started and ended."""

    def __init__(self) -> None:
        self.started: Counter[int] = Counter()
        self.ended: Counter[int] = Counter()

    def on_start(self, span: Span, parent_context: OtelContext | None = None) -> None:
        self.started[span.context.span_id] += 1

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None:
            self.ended[span.context.span_id] += 1


class _LogList:
    """A log target that keeps each line as a dict (``event`` is the message)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def emit(self, level: str, message: str, fields: dict[str, Any], span: Any) -> None:
        self.lines.append({attrs.KEY_EVENT: message, attrs.KEY_LEVEL: level, **fields})


class CapturedTelemetry:
    """What the runs inside a ``capture_telemetry()`` block recorded.

    ``tracer_provider`` and ``meter_provider`` are the in-memory SDK providers (give
    them to your own instrumentation to capture its spans alongside).
    """

    def __init__(self, max_span_events: int = 10_000) -> None:
        self._exporter = InMemorySpanExporter()
        self._tracker = _SpanTracker()
        self.tracer_provider = TracerProvider(
            span_limits=SpanLimits(max_events=max_span_events), shutdown_on_exit=False
        )
        self.tracer_provider.add_span_processor(self._tracker)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self._reader], shutdown_on_exit=False)
        self._logs = _LogList()
        self.observer = TelemetrySink(
            trace.get_tracer("stepstream", __version__, tracer_provider=self.tracer_provider),
            metrics.get_meter("stepstream", __version__, meter_provider=self.meter_provider),
            self._logs,
        )

    # -- spans ----------------------------------------------------------------------

    @property
    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in the order they ended."""
        return list(self._exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``, in start order."""
        found = [s for s in self.spans if s.name == name]
        return sorted(found, key=lambda s: s.start_time or 0)

    def one(self, name: str) -> ReadableSpan:
        """The single finished span called ``name``; AssertionError naming the others if not one."""
        found = self.named(name)
        if len(found) != 1:
            names = [s.name for s in self.spans]
            msg = f"{len(found)} finished spans named {name!r}; the finished spans are {names}"
            raise AssertionError(msg)
        return found[0]

    def span_events(self, name: str = attrs.STREAM_EVENT) -> list[SpanEvent]:
        """The span events called ``name`` (default: streamed events), in time order."""
        events = [e for s in self.spans for e in s.events if e.name == name]
        return sorted(events, key=lambda e: e.timestamp)

    def all_spans_ended_once(self) -> bool:
        """Tell whether every span started was ended, each exactly once."""
        started, ended = self._tracker.started, self._tracker.ended
        return set(started) == set(ended) and set(started.values()) | set(ended.values()) <= {1}

    # -- logs and metrics -----------------------------------------------------------

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Every log line, as a dict: ``event`` (the message), ``level`` and the fields."""
        return list(self._logs.lines)

    def lines(self, message: str) -> list[dict[str, Any]]:
        """The log lines whose message is ``message`` (``stream_event``, ``run_finished``...)."""
        return [line for line in self._logs.lines if line[attrs.KEY_EVENT] == message]

    def metrics(self) -> dict[str, Metric]:
        """The metrics recorded so far, by name."""
        data = self._reader.get_metrics_data()
        if data is None:
            return {}
        return {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }

    def metric_sum(self, name: str) -> float:
        """Sum of the values of every data point of metric ``name`` (0 if never recorded)."""
        metric = self.metrics().get(name)
        if metric is None:
            return 0.0
        return float(sum(getattr(p, "value", 0) for p in metric.data.data_points))


@contextmanager
def capture_telemetry(max_span_events: int = 10_000) -> Iterator[CapturedTelemetry]:
    """Record every run started inside the block in memory, and give it to the test.

    ::

        with capture_telemetry() as tel:
            await MyWorkflow().run(topic="x")
        assert [line["event_type"] for line in tel.lines("stream_event")] == [...]
        assert tel.one("invoke_workflow MyWorkflow").status.is_ok

    Spans are exported as they end (synchronously). A run started inside the block is
    recorded to its end, even if it ends after the block; everything stays readable
    after the block. No threads are started, so nothing needs shutting down.
    """
    captured = CapturedTelemetry(max_span_events)
    with observe(captured.observer):
        yield captured
