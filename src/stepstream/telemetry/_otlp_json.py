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
from typing import Any

import orjson
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from stepstream._text import safe_text
from stepstream.telemetry._files import StoreFile
from stepstream.telemetry._payload import safe_json

__all__ = [
    "EncodedSpan",
    "EncodingBatchSpanProcessor",
    "OtlpJsonFileMetricExporter",
    "OtlpJsonFileSpanExporter",
    "encode_spans",
]

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


_dumps = orjson.dumps


# OTLP's SpanKind numbers: the API's enum values plus one (0 is UNSPECIFIED).
_KINDS = {kind: kind.value + 1 for kind in SpanKind}

# Span names repeat ("run_step fetch"): their JSON is kept, up to a bound.
_NAME_JSON: dict[str, bytes] = {}


def _name_json(name: str) -> bytes:
    encoded = _NAME_JSON.get(name)
    if encoded is None:
        encoded = _dumps(name)
        if len(_NAME_JSON) < 4096:  # noqa: PLR2004 - bound the cache for arbitrary names
            _NAME_JSON[name] = encoded
    return encoded


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    """OTLP key/value pairs; strings and ints (nearly every value) take the short path."""
    if not attributes:
        return []
    out = []
    # The SDK's BoundedAttributes takes a lock per item through the Mapping API; its
    # plain dict, when present, is read directly (falling back to the public API).
    for key, value in getattr(attributes, "_dict", attributes).items():
        kind = type(value)
        if kind is str:
            out.append({"key": key, "value": {"stringValue": value}})
        elif kind is int:
            out.append({"key": key, "value": {"intValue": str(value)}})
        else:
            out.append({"key": key, "value": _value(value)})
    return out


def _safe_dumps(value: Any) -> bytes:
    """Encode ``value`` with orjson, or (text it refuses) safely."""
    try:
        return _dumps(value)
    except Exception:  # noqa: BLE001 - the slow path, once per resource or scope and batch
        return safe_json(value).encode()


def _attributes_json(attributes: Any) -> bytes:
    """Attributes as JSON bytes (the hot part of a span event)."""
    return _dumps(_attributes(attributes)) if attributes else b"[]"


def _events_json(events: Sequence[Any]) -> bytes:
    return (
        b"["
        + b",".join(
            b'{"timeUnixNano":"%d","name":%b,"attributes":%b}'
            % (e.timestamp, _dumps(e.name), _attributes_json(e.attributes))
            for e in events
        )
        + b"]"
    )


def _span(span: ReadableSpan) -> bytes:
    """One span as OTLP/JSON bytes, with the keys in the order the OTLP encoders use."""
    ctx = span.context
    assert ctx is not None  # noqa: S101 - an exported span always has a context
    parent = span.parent
    # As the OTLP encoders do: bit 8 says whether bit 9 (parent is remote) is known.
    if parent is not None:
        head = b'{"traceId":"%032x","spanId":"%016x","parentSpanId":"%016x","flags":%d' % (
            ctx.trace_id,
            ctx.span_id,
            parent.span_id,
            0x300 if parent.is_remote else 0x100,
        )
    else:
        head = b'{"traceId":"%032x","spanId":"%016x","flags":256' % (ctx.trace_id, ctx.span_id)
    parts = [
        head,
        b',"name":%b,"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d"'
        % (_name_json(span.name), _KINDS[span.kind], span.start_time or 0, span.end_time or 0),
    ]
    # ReadableSpan.attributes wraps the SDK's BoundedAttributes in a mappingproxy, whose
    # items go through the locking Mapping API; read the plain dict when it is there.
    attributes = getattr(getattr(span, "_attributes", None), "_dict", None) or span.attributes
    if attributes:
        parts.append(b',"attributes":' + _attributes_json(attributes))
    if span.dropped_attributes:
        parts.append(b',"droppedAttributesCount":%d' % span.dropped_attributes)
    events = span.events
    if events:
        parts.append(b',"events":' + _events_json(events))
    if span.dropped_events:
        parts.append(b',"droppedEventsCount":%d' % span.dropped_events)
    links = span.links
    if links:
        parts.append(b',"links":[%b]' % b",".join([_link_json(link) for link in links]))
    if span.dropped_links:
        parts.append(b',"droppedLinksCount":%d' % span.dropped_links)
    status = span.status
    code = status.status_code.value
    if status.description:
        parts.append(b',"status":' + _dumps({"code": code, "message": status.description}))
    else:
        parts.append(b',"status":{"code":%d}}' % code if code else b',"status":{}}')
        return b"".join(parts)
    parts.append(b"}")
    return b"".join(parts)


def _link_json(link: Any) -> bytes:
    """One link (a fan-in join has one per collected event, so bytes, not a dict)."""
    ctx = link.context
    attributes = link.attributes
    return b'{"traceId":"%032x","spanId":"%016x",%b"flags":%d}' % (
        ctx.trace_id,
        ctx.span_id,
        b'"attributes":%b,' % _attributes_json(attributes) if attributes else b"",
        0x300 if ctx.is_remote else 0x100,
    )


def _encode_span(span: ReadableSpan) -> bytes:
    """One span as OTLP/JSON bytes, whatever text it holds.

    orjson refuses lone surrogates (in an attribute a step's own code set, say): such
    a span, and only such a span, is encoded again from a copy with its text made safe.
    """
    try:
        return _span(span)
    except Exception:  # noqa: BLE001 - the slow path
        return _span(_SafeSpan(span))  # type: ignore[arg-type]  # duck-typed span


class _SafeSpan:
    """What :func:`_span` reads of a span, with every string made safe."""

    def __init__(self, span: ReadableSpan) -> None:
        self.context = span.context
        self.parent = span.parent
        self.kind = span.kind
        self.start_time = span.start_time
        self.end_time = span.end_time
        self.name = safe_text(span.name)
        self.attributes = _safe_attributes(span.attributes)
        self.dropped_attributes = span.dropped_attributes
        self.events = [
            _Item(name=safe_text(e.name), timestamp=e.timestamp, attrs=e.attributes)
            for e in span.events
        ]
        self.dropped_events = span.dropped_events
        self.links = [_Item(context=link.context, attrs=link.attributes) for link in span.links]
        self.dropped_links = span.dropped_links
        description = span.status.description
        self.status = _Item(
            status_code=span.status.status_code,
            description=safe_text(description) if description else description,
        )


class _Item:
    """A span event, link or status for :class:`_SafeSpan` (``attrs`` made safe)."""

    def __init__(self, attrs: Any = None, **fields: Any) -> None:
        self.attributes = _safe_attributes(attrs)
        self.__dict__.update(fields)


def _safe_attributes(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    return {safe_text(k): _safe_value(v) for k, v in attributes.items()}


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, list | tuple):
        return [safe_text(v) if isinstance(v, str) else v for v in value]
    return value


class EncodedSpan:
    """A span already encoded to OTLP/JSON, with what grouping it in a request needs."""

    __slots__ = ("context", "instrumentation_scope", "json", "resource")

    def __init__(self, span: ReadableSpan) -> None:
        self.context = span.context
        self.resource = span.resource
        self.instrumentation_scope = span.instrumentation_scope
        self.json = _encode_span(span)


def encode_spans(spans: Sequence[ReadableSpan | EncodedSpan]) -> list[bytes]:
    """Encode ``spans`` as one OTLP/JSON ``ExportTraceServiceRequest`` line, in pieces.

    The pieces, joined, are the line; they are written with ``os.writev``.
    """
    resources: dict[int, tuple[Any, dict[tuple[str, str | None], list[bytes]]]] = {}
    for span in spans:
        key = id(span.resource)
        if key not in resources:
            resources[key] = (span.resource, {})
        scope = span.instrumentation_scope
        scope_key = (scope.name, scope.version) if scope is not None else ("", None)
        encoded = span.json if isinstance(span, EncodedSpan) else _encode_span(span)
        resources[key][1].setdefault(scope_key, []).append(encoded)
    pieces = [b'{"resourceSpans":[']
    for i, (resource, scopes) in enumerate(resources.values()):
        resource_json = _safe_dumps({"attributes": _attributes(resource.attributes)})
        pieces.append(b'%b{"resource":%b,"scopeSpans":[' % (b"," if i else b"", resource_json))
        for j, ((name, version), jsons) in enumerate(scopes.items()):
            named = {"name": name, "version": version} if version else {"name": name}
            scope_json = _safe_dumps(named)
            pieces.append(b'%b{"scope":%b,"spans":[' % (b"," if j else b"", scope_json))
            for k, span_json in enumerate(jsons):
                pieces.append(b"," + span_json if k else span_json)
            pieces.append(b"]}")
        pieces.append(b"]}")
    pieces.append(b"]}\n")
    return pieces


#: A span with more events than this is encoded by the export thread, not where it ends.
INLINE_EVENTS = 256


class EncodingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor whose spans are encoded when they end, on the ending thread.

    Encoding is CPU work that needs the GIL wherever it runs. Done in the export thread,
    it competes with a busy event loop and falls behind under sustained load: the
    queue, and memory, grow. Done here, it costs the same CPU, the queue holds compact
    bytes, and the export thread only joins and writes them.

    Except for a span with many events (a step that streamed thousands): encoding it
    takes milliseconds in one go, during which the event loop that ended it would do
    nothing else. The export thread encodes those, and gives the GIL back to the loop
    every switch interval meanwhile.
    """

    def on_end(self, span: ReadableSpan) -> None:
        """Encode ``span`` (unless it has many events) and queue it for the batch export."""
        if span.context is not None and span.context.trace_flags.sampled:
            if len(span.events) > INLINE_EVENTS:
                super().on_end(span)
            else:
                super().on_end(EncodedSpan(span))  # type: ignore[arg-type]  # duck-typed span


class _LineFile:
    """A store file written one complete line per call, under a lock.

    Lines are written with ``os.writev`` from their pieces: no copy of a whole batch
    (big temporary buffers in the export thread fragment its malloc arena), and a
    handful of system calls (each releases the GIL, and taking it back behind a busy
    event loop can take a switch interval). A write failure is logged once, until a
    write succeeds again.
    """

    def __init__(self, path: Path, max_bytes: int | None, keep: int) -> None:
        self._file: StoreFile | None = StoreFile(path, max_bytes, keep)
        self._lock = threading.Lock()
        self._failing = False
        self.path = path

    def write(self, lines: Sequence[Sequence[bytes]]) -> bool:
        with self._lock:
            if self._file is None:
                return False
            try:
                for pieces in lines:
                    self._file.write_line(pieces)
            except OSError as exc:
                if not self._failing:
                    _log.error("stepstream: cannot write %s: %s", self.path, exc)
                self._failing = True
                return False
            self._failing = False
            return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


#: Spans are split into several lines (requests) of at most about this many bytes, so
#: that a reader can bound the length of a line (one span larger than this is one line).
LINE_TARGET_BYTES = 8 << 20


def _line_groups(spans: Sequence[ReadableSpan | EncodedSpan]) -> list[list[EncodedSpan]]:
    """``spans`` (encoded) in groups of at most LINE_TARGET_BYTES of span JSON each."""
    groups: list[list[EncodedSpan]] = [[]]
    size = 0
    for span in spans:
        encoded = span if isinstance(span, EncodedSpan) else EncodedSpan(span)
        if groups[-1] and size + len(encoded.json) > LINE_TARGET_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(encoded)
        size += len(encoded.json)
    return groups


class OtlpJsonFileSpanExporter(SpanExporter):
    """Appends each batch of spans to ``path`` as OTLP/JSON lines (one, unless huge).

    With ``max_bytes``, the file is rotated when full, ``keep`` rotated files kept.
    """

    def __init__(self, path: Path, max_bytes: int | None = None, keep: int = 1) -> None:
        self._out = _LineFile(path, max_bytes, keep)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the batch (of spans, or of EncodedSpans): a line per 8 MiB or so."""
        if not spans:
            return SpanExportResult.SUCCESS
        ok = self._out.write([encode_spans(group) for group in _line_groups(spans)])
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the file."""
        self._out.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every line is flushed when written."""
        del timeout_millis
        return True


class OtlpJsonFileMetricExporter(MetricExporter):
    """Appends each metrics collection to ``path`` as one OTLP/JSON line.

    With ``max_bytes``, the file is rotated when full, ``keep`` rotated files kept.
    """

    def __init__(self, path: Path, max_bytes: int | None = None, keep: int = 1) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self._out = _LineFile(path, max_bytes, keep)

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
        ok = self._out.write([[orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)]])
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
