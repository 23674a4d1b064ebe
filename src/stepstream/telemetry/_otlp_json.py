"""OTLP/JSON Lines file exporters: the embedded default's trace and metric files.

Each export call appends one line holding one ``ExportTraceServiceRequest`` (or
``ExportMetricsServiceRequest``) in the OTLP/JSON encoding: the format the collector's
``otlpjsonfile`` receiver and the Jaeger UI's upload read. Spans are encoded by hand
with orjson: the generic encoders cost about 20 microseconds per span event, more than
the whole budget of a streamed event. Metrics are few, so they go through the OTLP
protobuf encoder and protobuf's JSON mapping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.types import AttributeValue

__all__ = ["OtlpJsonFileMetricExporter", "OtlpJsonFileSpanExporter", "encode_spans"]

_log = logging.getLogger("stepstream")


def _value(value: AttributeValue) -> dict[str, Any]:  # noqa: PLR0911 - one return per type
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:  # before int: bool is an int subclass
        return {"boolValue": value}
    if kind is int:
        return {"intValue": str(value)}
    if kind is float:
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": str(value)}
    if isinstance(value, int):
        return {"intValue": str(int(value))}
    if isinstance(value, float):
        return {"doubleValue": float(value)}
    return {"arrayValue": {"values": [_value(v) for v in value]}}  # type: ignore[union-attr]


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    if not attributes:
        return []
    return [{"key": k, "value": _value(v)} for k, v in attributes.items()]


_dumps = orjson.dumps


def _attributes_json(attributes: Any) -> bytes:
    """Encode attributes straight to JSON bytes (the hot part of a span event)."""
    if not attributes:
        return b"[]"
    parts = []
    # The SDK's BoundedAttributes takes a lock per item through the Mapping API; its
    # plain dict, when present, is read directly (falling back to the public API).
    for key, value in getattr(attributes, "_dict", attributes).items():
        kind = type(value)
        if kind is str:
            parts.append(b'{"key":%b,"value":{"stringValue":%b}}' % (_dumps(key), _dumps(value)))
        elif kind is int:
            parts.append(b'{"key":%b,"value":{"intValue":"%d"}}' % (_dumps(key), value))
        else:
            parts.append(_dumps({"key": key, "value": _value(value)}))
    return b"[" + b",".join(parts) + b"]"


def _events_json(events: Sequence[Any]) -> orjson.Fragment:
    return orjson.Fragment(
        b"["
        + b",".join(
            b'{"timeUnixNano":"%d","name":%b,"attributes":%b}'
            % (e.timestamp, _dumps(e.name), _attributes_json(e.attributes))
            for e in events
        )
        + b"]"
    )


def _span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    assert ctx is not None  # noqa: S101 - an exported span always has a context
    out: dict[str, Any] = {
        "traceId": format(ctx.trace_id, "032x"),
        "spanId": format(ctx.span_id, "016x"),
    }
    parent = span.parent
    if parent is not None:
        out["parentSpanId"] = format(parent.span_id, "016x")
    # As the OTLP encoders do: bit 8 says whether bit 9 (parent is remote) is known.
    out["flags"] = 0x300 if parent is not None and parent.is_remote else 0x100
    out["name"] = span.name
    out["kind"] = span.kind.value + 1  # OTLP numbers kinds from 1 (INTERNAL)
    out["startTimeUnixNano"] = str(span.start_time)
    out["endTimeUnixNano"] = str(span.end_time)
    if span.attributes:
        out["attributes"] = orjson.Fragment(_attributes_json(span.attributes))
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        out["events"] = _events_json(span.events)
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        out["links"] = [_link(link) for link in span.links]
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status = span.status
    code = status.status_code.value
    out["status"] = (
        {"code": code, "message": status.description}
        if status.description
        else ({"code": code} if code else {})
    )
    return out


def _link(link: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": format(link.context.trace_id, "032x"),
        "spanId": format(link.context.span_id, "016x"),
    }
    if link.attributes:
        out["attributes"] = _attributes(link.attributes)
    out["flags"] = 0x300 if link.context.is_remote else 0x100
    return out


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """Encode ``spans`` as one OTLP/JSON ``ExportTraceServiceRequest`` line."""
    resources: dict[int, tuple[Any, dict[tuple[str, str | None], list[dict[str, Any]]]]] = {}
    for span in spans:
        key = id(span.resource)
        if key not in resources:
            resources[key] = (span.resource, {})
        scope = span.instrumentation_scope
        scope_key = (scope.name, scope.version) if scope is not None else ("", None)
        resources[key][1].setdefault(scope_key, []).append(_span(span))
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes)},
                "scopeSpans": [
                    {
                        "scope": {"name": name, "version": version} if version else {"name": name},
                        "spans": encoded,
                    }
                    for (name, version), encoded in scopes.items()
                ],
            }
            for resource, scopes in resources.values()
        ]
    }
    return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)


class _LineFile:
    """An append-only file written one complete line per export, under a lock."""

    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = path.open("ab")
        self._lock = threading.Lock()
        self.path = path

    def write(self, line: bytes) -> bool:
        with self._lock:
            if self._file.closed:
                return False
            try:
                self._file.write(line)
                self._file.flush()
            except OSError:
                _log.exception("stepstream: cannot write %s", self.path)
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._file.close()


class OtlpJsonFileSpanExporter(SpanExporter):
    """Appends each batch of spans to ``path`` as one OTLP/JSON line."""

    def __init__(self, path: Path) -> None:
        self._out = _LineFile(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write one line for the batch."""
        if not spans:
            return SpanExportResult.SUCCESS
        ok = self._out.write(encode_spans(spans))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the file."""
        self._out.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every line is flushed when written."""
        del timeout_millis
        return True


class OtlpJsonFileMetricExporter(MetricExporter):
    """Appends each metrics collection to ``path`` as one OTLP/JSON line."""

    def __init__(self, path: Path) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._out = _LineFile(path)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Write one line for the collection."""
        del timeout_millis, kwargs
        from google.protobuf.json_format import (  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
            MessageToDict,
        )
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import (  # noqa: PLC0415
            encode_metrics,
        )

        body = MessageToDict(encode_metrics(metrics_data))
        ok = self._out.write(orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Every line is flushed when written."""
        del timeout_millis
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close the file."""
        del timeout_millis, kwargs
        self._out.close()


del AggregationTemporality  # imported for readers of this module: cumulative is the default
