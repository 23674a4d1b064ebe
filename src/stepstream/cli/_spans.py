"""Spans read back from OTLP/JSON span batches, every field checked.

A span whose fields have the wrong type or are out of range is skipped, with the reason,
and its run still shows: what the commands compute from a span (times, durations,
counters, the order of streamed events) then always works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepstream.telemetry import attributes as attrs

__all__ = ["DamagedSpanError", "NotABatchError", "Span", "SpanEvent", "shown", "spans_of_batch"]

_INT64 = range(-(2**63), 2**63)
_TIMES = range(2**63)  # nanoseconds since 1970 up to 2262: what datetime can show
_MAX_DEPTH = 32
_STATUS_ERROR = {2, "STATUS_CODE_ERROR"}
#: Attributes of the contract that the commands count, sort or show as numbers.
_INTEGER_KEYS = frozenset(
    {
        attrs.EVENTS_STREAMED,
        attrs.EVENT_SEQ,
        attrs.STEP_ATTEMPT,
        attrs.STEP_WORKER,
        attrs.RUN_ATTEMPT,
    }
)


class NotABatchError(ValueError):
    """A line that is JSON but not an OTLP span batch."""


class DamagedSpanError(ValueError):
    """A span with a field of the wrong type or out of range; the message says which."""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """One span event: name, time and attributes."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class Span:
    """One span read back from OTLP/JSON."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[tuple[str, str]]
    error: bool
    status_message: str
    children: list[Span] = field(default_factory=list)
    #: Where the span was read ("path:line"), for warnings.
    source: str = field(default="", compare=False, repr=False)

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_ns - self.start_ns


_SHOWN = 64  # characters of a value quoted in a message


def shown(value: object) -> str:
    """``value`` for a message: plain if it is a short printable word, else a short repr."""
    if isinstance(value, str) and value.isprintable() and "[" not in value and len(value) <= _SHOWN:
        return value
    return quoted(value)


def quoted(value: object) -> str:
    """``value``'s repr for a message, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "..."


def _string(raw: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    if key not in raw:
        if optional:
            return None
        msg = f"{key} is missing"
        raise DamagedSpanError(msg)
    value = raw[key]
    if optional and value in (None, ""):
        return None
    if not isinstance(value, str):
        msg = f"{key} is {quoted(value)}, not a string"
        raise DamagedSpanError(msg)
    return value


def _time(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    number = _integer(value)
    if number is None or number not in _TIMES:
        what = "missing" if value is None else quoted(value)
        msg = f"{key} is {what}, not a time in nanoseconds"
        raise DamagedSpanError(msg)
    return number


def _integer(value: object) -> int | None:
    """An OTLP/JSON 64-bit integer (a JSON number or a decimal string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= 21:  # noqa: PLR2004 - a 64-bit integer's digits
        try:
            return int(value, 10)
        except ValueError:
            return None
    return None


def _value(value: object, depth: int = 0) -> Any:
    """One OTLP/JSON AnyValue as a Python value; DamagedSpanError says what is wrong."""
    if not isinstance(value, dict):
        msg = "has a value that is not an object"
        raise DamagedSpanError(msg)
    if "stringValue" in value:
        if not isinstance(value["stringValue"], str):
            msg = "has a stringValue that is not a string"
            raise DamagedSpanError(msg)
        return value["stringValue"]
    if "intValue" in value:
        number = _integer(value["intValue"])
        if number is None or number not in _INT64:
            msg = "has an intValue out of the 64-bit range"
            raise DamagedSpanError(msg)
        return number
    if "doubleValue" in value:
        return _double(value["doubleValue"])
    if "boolValue" in value:
        if not isinstance(value["boolValue"], bool):
            msg = "has a boolValue that is not true or false"
            raise DamagedSpanError(msg)
        return value["boolValue"]
    if "arrayValue" in value:
        return _array(value["arrayValue"], depth)
    return None  # kvlist and bytes values: stepstream writes none


def _double(raw: object) -> float:
    # The protobuf JSON mapping also allows "NaN", "Infinity" and "-Infinity".
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if raw in ("NaN", "Infinity", "-Infinity"):
        return float(str(raw))
    msg = "has a doubleValue that is not a number"
    raise DamagedSpanError(msg)


def _array(raw: object, depth: int) -> list[Any]:
    if depth >= _MAX_DEPTH:
        msg = f"is nested more than {_MAX_DEPTH} levels deep"
        raise DamagedSpanError(msg)
    values = raw.get("values", []) if isinstance(raw, dict) else None
    if not isinstance(values, list):
        msg = "has an arrayValue without a list of values"
        raise DamagedSpanError(msg)
    return [_value(item, depth + 1) for item in values]


def _attributes(items: object) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        msg = "attributes is not a list"
        raise DamagedSpanError(msg)
    out: dict[str, Any] = {}
    for index, item in enumerate(items, 1):
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str):
            what = "not an object" if not isinstance(item, dict) else f"{quoted(key)}, not a string"
            msg = f"attribute {index}: key is {what}"
            raise DamagedSpanError(msg)
        try:
            value = _value(item.get("value", {}))
        except DamagedSpanError as exc:
            msg = f"attribute {shown(key)} {exc}"
            raise DamagedSpanError(msg) from None
        if key in _INTEGER_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
            msg = f"attribute {key} is {quoted(value)}, not an integer"
            raise DamagedSpanError(msg)
        out[key] = value
    return out


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        msg = f"{key} is not a list"
        raise DamagedSpanError(msg)
    return value


def _event(index: int, raw: object) -> SpanEvent:
    try:
        if not isinstance(raw, dict):
            msg = "is not an object"
            raise DamagedSpanError(msg)  # noqa: TRY301 - prefixed below with the others
        return SpanEvent(
            _string(raw, "name") or "",
            _time(raw, "timeUnixNano"),
            _attributes(raw.get("attributes")),
        )
    except DamagedSpanError as exc:
        separator = " " if str(exc).startswith("is ") else ": "
        msg = f"event {index}{separator}{exc}"
        raise DamagedSpanError(msg) from None


def _link(index: int, raw: object) -> tuple[str, str]:
    try:
        if not isinstance(raw, dict):
            msg = "is not an object"
            raise DamagedSpanError(msg)  # noqa: TRY301 - prefixed below with the others
        return _string(raw, "traceId") or "", _string(raw, "spanId") or ""
    except DamagedSpanError as exc:
        separator = " " if str(exc).startswith("is ") else ": "
        msg = f"link {index}{separator}{exc}"
        raise DamagedSpanError(msg) from None


def _status(raw: dict[str, Any]) -> tuple[bool, str]:
    status = raw.get("status") or {}
    code = status.get("code") if isinstance(status, dict) else None
    message = status.get("message", "") if isinstance(status, dict) else None
    if not isinstance(code, int | str | None) or not isinstance(message, str):
        msg = "status is not an OTLP status"
        raise DamagedSpanError(msg)
    return code in _STATUS_ERROR, message


def _span(raw: dict[str, Any]) -> Span:
    error, message = _status(raw)
    return Span(
        trace_id=_string(raw, "traceId") or "",
        span_id=_string(raw, "spanId") or "",
        parent_id=_string(raw, "parentSpanId", optional=True),
        name=_string(raw, "name") or "",
        start_ns=_time(raw, "startTimeUnixNano"),
        end_ns=_time(raw, "endTimeUnixNano"),
        attributes=_attributes(raw.get("attributes")),
        events=[_event(i, e) for i, e in enumerate(_list(raw, "events"), 1)],
        links=[_link(i, link) for i, link in enumerate(_list(raw, "links"), 1)],
        error=error,
        status_message=message,
    )


def _raw_spans(batch: object) -> list[object]:
    """The span objects of an ExportTraceServiceRequest; NotABatchError if it is none."""
    if not isinstance(batch, dict) or not isinstance(batch.get("resourceSpans"), list):
        raise NotABatchError
    out: list[object] = []
    for resource in batch["resourceSpans"]:
        scopes = resource.get("scopeSpans", []) if isinstance(resource, dict) else None
        if not isinstance(scopes, list):
            raise NotABatchError
        for scope in scopes:
            spans = scope.get("spans", []) if isinstance(scope, dict) else None
            if not isinstance(spans, list):
                raise NotABatchError
            out.extend(spans)
    return out


def spans_of_batch(batch: object, source: str) -> tuple[list[Span], list[str]]:
    """The spans of one trace file line, and the reasons for each damaged span skipped.

    Raises NotABatchError when the line is not an OTLP span batch at all.
    """
    spans: list[Span] = []
    damaged: list[str] = []
    for index, raw in enumerate(_raw_spans(batch), 1):
        span_id = raw.get("spanId") if isinstance(raw, dict) else None
        name = f"span {shown(span_id) if isinstance(span_id, str) and span_id else index}"
        try:
            if not isinstance(raw, dict):
                msg = "is not an object"
                raise DamagedSpanError(msg)  # noqa: TRY301 - reported with the others
            span = _span(raw)
        except DamagedSpanError as exc:
            separator = " " if str(exc).startswith("is ") else ": "
            damaged.append(f"{name}{separator}{exc}")
            continue
        span.source = source
        spans.append(span)
    return spans, damaged
