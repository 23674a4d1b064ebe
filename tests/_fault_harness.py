"""The in-memory telemetry harness shared by the reliability tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stepstream.telemetry import attributes as attrs


class SpanCounter(SpanProcessor):
    """Counts on_start and on_end calls per span id."""

    def __init__(self) -> None:
        self.started: Counter[int] = Counter()
        self.ended: Counter[int] = Counter()

    def on_start(self, span: Span, parent_context: OtelContext | None = None) -> None:
        """Count a started span."""
        self.started[span.context.span_id] += 1

    def on_end(self, span: ReadableSpan) -> None:
        """Count an ended span."""
        assert span.context is not None
        self.ended[span.context.span_id] += 1

    def all_ended_once(self) -> bool:
        """Tell whether every started span was started and ended exactly once."""
        return (
            set(self.started) == set(self.ended)
            and set(self.started.values()) <= {1}
            and set(self.ended.values()) <= {1}
        )


class BaseTelemetry:
    """Providers recording in memory, plus ``tracker``, a processor watching span ends."""

    def __init__(self, tracker: SpanProcessor | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracker = tracker if tracker is not None else SpanCounter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(self.tracker)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make a Workflow use these providers."""
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def metric_sum(self, name: str) -> float:
        """Sum of every data point of metric ``name`` (0 when it was never recorded)."""
        total = 0.0
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data is not None else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        total += sum(getattr(p, "value", 0) for p in metric.data.data_points)
        return total

    def runs_active(self) -> float:
        """Current value of stepstream.runs.active (0 when never recorded)."""
        return self.metric_sum(attrs.METRIC_RUNS_ACTIVE)
