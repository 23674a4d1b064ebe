"""``stepstream traces push``: send the embedded trace and log files to an OTLP collector.

A run recorded locally (no ``OTEL_EXPORTER_OTLP_ENDPOINT``) lands in ``.stepstream/``;
this command posts it to a collector over OTLP/HTTP with JSON bodies, so that it shows
up in Jaeger, Tempo and Loki like a run exported live:

- each line of ``traces.jsonl`` is already an OTLP/JSON span batch: posted as it is to
  ``<endpoint>/v1/traces``;
- each line of ``logs.jsonl`` becomes an OTLP log record as the live OTLP path makes it
  (body: the line's ``event``; the trace context from ``trace_id``/``span_id``; every
  other key an attribute) under the resource of the spans of its trace, so that its
  ``service.name`` matches; batches go to ``<endpoint>/v1/logs``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from stepstream.cli._store import Store
from stepstream.telemetry import attributes as attrs

__all__ = ["PushError", "log_requests", "post"]

#: Log records per request.
BATCH = 500
_SEVERITY = {"debug": 5, "info": 9, "warning": 13, "error": 17}
_NOT_ATTRIBUTES = {
    attrs.KEY_TIMESTAMP,
    attrs.KEY_LEVEL,
    attrs.KEY_EVENT,
    attrs.KEY_TRACE_ID,
    attrs.KEY_SPAN_ID,
}


class PushError(Exception):
    """The collector could not take what was sent (message says why)."""


def _resources(batches: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Map each trace id to the resource attributes of its spans."""
    found: dict[str, list[dict[str, Any]]] = {}
    for batch in batches:
        for rs in batch.get("resourceSpans", []):
            resource = (rs.get("resource") or {}).get("attributes") or []
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    found.setdefault(span.get("traceId", ""), resource)
    return found


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"stringValue": json.dumps(value, separators=(",", ":"), default=str)}


def _time_ns(text: Any) -> str:
    try:
        stamp = datetime.fromisoformat(str(text))
    except ValueError:
        return "0"
    return str(int(stamp.timestamp() * 1_000_000) * 1000)


def _record(line: dict[str, Any]) -> dict[str, Any]:
    level = str(line.get(attrs.KEY_LEVEL, "info")).lower()
    record: dict[str, Any] = {
        "timeUnixNano": _time_ns(line.get(attrs.KEY_TIMESTAMP)),
        "severityNumber": _SEVERITY.get(level, 9),
        "severityText": level.upper(),
        "body": {"stringValue": str(line.get(attrs.KEY_EVENT, ""))},
        "attributes": [
            {"key": key, "value": _any_value(value)}
            for key, value in line.items()
            if key not in _NOT_ATTRIBUTES and value is not None
        ],
    }
    if line.get(attrs.KEY_TRACE_ID):
        record["traceId"] = str(line[attrs.KEY_TRACE_ID])
    if line.get(attrs.KEY_SPAN_ID):
        record["spanId"] = str(line[attrs.KEY_SPAN_ID])
    return record


def log_requests(
    store: Store, batches: list[dict[str, Any]], default_resource: dict[str, str]
) -> Iterator[dict[str, Any]]:
    """logs.jsonl as OTLP/JSON log requests, each line under its trace's resource.

    ``batches`` are the span batches of traces.jsonl (they give each trace's resource);
    a line of no recorded trace gets ``default_resource``.
    """
    resources = _resources(batches)
    fallback = [{"key": k, "value": {"stringValue": v}} for k, v in default_resource.items()]
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    pending = 0
    for line in store.log_lines():
        trace_id = str(line.get(attrs.KEY_TRACE_ID) or "")
        resource = resources.get(trace_id, fallback)
        key = json.dumps(resource, sort_keys=True)
        groups.setdefault(key, (resource, []))[1].append(_record(line))
        pending += 1
        if pending >= BATCH:
            yield _logs_request(groups)
            groups, pending = {}, 0
    if pending:
        yield _logs_request(groups)


def _logs_request(
    groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
) -> dict[str, Any]:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": resource},
                "scopeLogs": [{"scope": {"name": attrs.LOGGER_NAME}, "logRecords": records}],
            }
            for resource, records in groups.values()
        ]
    }


def post(url: str, body: dict[str, Any], timeout: float = 30) -> None:
    """POST one OTLP/JSON request; PushError when the collector refuses or is unreachable."""
    data = json.dumps(body, separators=(",", ":")).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the command
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()[:300]
        msg = f"the collector at {url} answered {exc.code}: {text or exc.reason}"
        raise PushError(msg) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = (
            f"cannot reach a collector at {url}: {reason}; start one "
            "(deploy/README.md) or pass --endpoint"
        )
        raise PushError(msg) from exc
