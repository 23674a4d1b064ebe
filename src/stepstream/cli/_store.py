"""Read the embedded telemetry directory: OTLP/JSON trace lines and JSON log lines.

Damaged lines are skipped with a warning naming the file and line number; they never
stop a listing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stepstream.telemetry import attributes as attrs
from stepstream.telemetry.setup import LOGS_FILE, TRACES_FILE

__all__ = ["Run", "Span", "SpanEvent", "Store", "StoreError"]

_STATUS_ERROR = {2, "STATUS_CODE_ERROR"}


class StoreError(Exception):
    """The telemetry directory or a requested run cannot be read (message says why)."""


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

    @property
    def duration_ns(self) -> int:
        """End minus start, in nanoseconds."""
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class Run:
    """A run: its run span and every span of its trace below it."""

    span: Span
    spans: list[Span]

    @property
    def run_id(self) -> str:
        """The run's ``stepstream.run_id``."""
        return str(self.span.attributes.get(attrs.RUN_ID, ""))

    @property
    def workflow(self) -> str:
        """The workflow class name."""
        return str(self.span.attributes.get(attrs.WORKFLOW, self.span.name))

    @property
    def status(self) -> str:
        """ok, error, timeout, cancelled (or unknown)."""
        return str(self.span.attributes.get(attrs.RUN_STATUS, "unknown"))

    @property
    def steps(self) -> list[Span]:
        """Step spans of this run, in start order."""
        return sorted(
            (s for s in self.spans if s.name.startswith(attrs.STEP_SPAN_PREFIX + " ")),
            key=lambda s: s.start_ns,
        )

    @property
    def streamed(self) -> int:
        """Events this run streamed (from the step spans' counters, terminal included)."""
        total = sum(int(s.attributes.get(attrs.EVENTS_STREAMED, 0)) for s in self.steps)
        return total + 1


def _value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or []}


def _span(raw: dict[str, Any]) -> Span:
    status = raw.get("status") or {}
    return Span(
        trace_id=raw["traceId"],
        span_id=raw["spanId"],
        parent_id=raw.get("parentSpanId") or None,
        name=raw["name"],
        start_ns=int(raw["startTimeUnixNano"]),
        end_ns=int(raw["endTimeUnixNano"]),
        attributes=_attributes(raw.get("attributes")),
        events=[
            SpanEvent(e["name"], int(e["timeUnixNano"]), _attributes(e.get("attributes")))
            for e in raw.get("events") or []
        ],
        links=[(link["traceId"], link["spanId"]) for link in raw.get("links") or []],
        error=status.get("code") in _STATUS_ERROR,
        status_message=status.get("message", ""),
    )


Warn = Callable[[str], None]


def _json_lines(path: Path, warn: Warn) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON) for each non-blank line; warn on damaged ones."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}"
        raise StoreError(msg) from exc
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError:
                warn(f"{path}:{number}: damaged line skipped (not valid JSON)")


class Store:
    """The runs and log lines recorded under one telemetry directory."""

    def __init__(self, directory: Path, warn: Warn) -> None:
        if not directory.is_dir():
            msg = (
                f"no telemetry directory at {directory}; run a workflow with "
                "`stepstream run FILE.py` first, or pass --telemetry-dir"
            )
            raise StoreError(msg)
        self.directory = directory
        self._warn = warn

    def span_batches(self) -> list[dict[str, Any]]:
        """Every line of traces.jsonl that is an OTLP/JSON span batch, as it is."""
        path = self.directory / TRACES_FILE
        out: list[dict[str, Any]] = []
        for number, batch in _json_lines(path, self._warn):
            if isinstance(batch, dict) and isinstance(batch.get("resourceSpans"), list):
                out.append(batch)
            else:
                self._warn(f"{path}:{number}: damaged line skipped (not an OTLP span batch)")
        return out

    def spans(self) -> list[Span]:
        """Every span in traces.jsonl."""
        path = self.directory / TRACES_FILE
        out: list[Span] = []
        for number, batch in _json_lines(path, self._warn):
            try:
                for rs in batch.get("resourceSpans", []):
                    for ss in rs.get("scopeSpans", []):
                        out.extend(_span(raw) for raw in ss.get("spans", []))
            except (AttributeError, KeyError, TypeError, ValueError):
                self._warn(f"{path}:{number}: damaged line skipped (not an OTLP span batch)")
        return out

    def runs(self) -> list[Run]:
        """Every recorded run, most recent first."""
        spans = self.spans()
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            parent = by_id.get(s.parent_id) if s.parent_id else None
            if parent is not None:
                parent.children.append(s)
        runs = [
            Run(s, list(_walk(s)))
            for s in spans
            if s.name.startswith(attrs.RUN_SPAN_PREFIX + " ") and attrs.RUN_ID in s.attributes
        ]
        return sorted(runs, key=lambda r: r.span.start_ns, reverse=True)

    def find(self, ref: str) -> Run:
        """Return the run named by run_id, trace_id (or a unique prefix), or ``last``."""
        runs = self.runs()
        if not runs:
            msg = f"no runs recorded in {self.directory / TRACES_FILE}"
            raise StoreError(msg)
        if ref == "last":
            return runs[0]
        hits = [r for r in runs if r.run_id.startswith(ref) or r.span.trace_id.startswith(ref)]
        if len(hits) == 1 or (hits and all(h.run_id == hits[0].run_id for h in hits)):
            return hits[0]
        if not hits:
            msg = f"no run with run_id or trace_id {ref!r}; `stepstream traces list` shows them"
            raise StoreError(msg)
        msg = f"{ref!r} matches {len(hits)} runs; give more characters of the id"
        raise StoreError(msg)

    def log_lines(self) -> Iterator[dict[str, Any]]:
        """Every JSON object in logs.jsonl, in file order."""
        path = self.directory / LOGS_FILE
        for number, item in _json_lines(path, self._warn):
            if isinstance(item, dict):
                yield item
            else:
                self._warn(f"{path}:{number}: damaged line skipped (not a JSON object)")


def _walk(span: Span) -> Iterator[Span]:
    yield span
    for child in sorted(span.children, key=lambda s: s.start_ns):
        yield from _walk(child)
