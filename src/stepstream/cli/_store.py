"""Read the embedded telemetry directory: OTLP/JSON trace lines and JSON log lines.

Damaged lines and spans are skipped with a warning naming the file and line number;
they never stop a listing. Rotated files (``traces.1.jsonl``, ...) are read too, oldest
first. Files are read safely (see ``_jsonl``) and spans checked field by field (see
``_spans``); the span tree is built without recursion and with parent loops broken.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepstream.cli._jsonl import StoreError, Warn, json_lines, max_line_bytes
from stepstream.cli._spans import NotABatchError, Span, SpanEvent, shown, spans_of_batch
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry.setup import LOGS_FILE, TRACES_FILE

__all__ = ["Run", "Span", "SpanEvent", "Store", "StoreError"]


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
        max_line_bytes()  # a bad STEPSTREAM_MAX_LINE_BYTES is reported before any output

    def span_batches(self) -> list[dict[str, Any]]:
        """Every line of traces.jsonl (and its rotated files) that is an OTLP/JSON span batch."""
        out: list[dict[str, Any]] = []
        for where, batch in json_lines(self.directory, TRACES_FILE, self._warn):
            if isinstance(batch, dict) and isinstance(batch.get("resourceSpans"), list):
                out.append(batch)
            else:
                self._warn(f"{where}: damaged line skipped (not an OTLP span batch)")
        return out

    def spans(self) -> list[Span]:
        """Every span in traces.jsonl and its rotated files, oldest first."""
        out: list[Span] = []
        for where, batch in json_lines(self.directory, TRACES_FILE, self._warn):
            try:
                spans, damaged = spans_of_batch(batch, where)
            except NotABatchError:
                self._warn(f"{where}: damaged line skipped (not an OTLP span batch)")
                continue
            out.extend(spans)
            for reason in damaged:
                self._warn(f"{where}: damaged span skipped ({reason})")
        return out

    def runs(self) -> list[Run]:
        """Every recorded run, most recent first."""
        spans = self.spans()
        parents = _parents(spans, self._warn)
        for s in spans:
            parent = parents.get(id(s))
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

    def log_lines(self, *, follow: bool = False) -> Iterator[dict[str, Any]]:
        """Every JSON object in logs.jsonl (and its rotated files), in file order.

        With ``follow``, go on with the lines appended later (the caller stops iterating).
        """
        for where, item in json_lines(self.directory, LOGS_FILE, self._warn, follow=follow):
            if isinstance(item, dict):
                yield item
            else:
                self._warn(f"{where}: damaged line skipped (not a JSON object)")


def _parents(spans: list[Span], warn: Warn) -> dict[int, Span]:
    """Each span's parent span (by ``id()``), with every parentSpanId loop broken.

    A span found to be its own ancestor loses its parent link, with a warning.
    """
    by_id = {s.span_id: s for s in spans}
    parents = {
        id(s): by_id[s.parent_id] for s in spans if s.parent_id is not None and s.parent_id in by_id
    }
    settled: set[int] = set()  # spans whose chain of ancestors is known to end
    for span in spans:
        chain: list[Span] = []
        on_chain: set[int] = set()
        current: Span | None = span
        while current is not None and id(current) not in settled:
            if id(current) in on_chain:  # the last span of the chain closes the loop
                looping = chain[-1]
                del parents[id(looping)]
                warn(
                    f"{looping.source}: span {shown(looping.span_id)} is its own ancestor "
                    "(a parentSpanId loop); its parent link is ignored"
                )
                break
            chain.append(current)
            on_chain.add(id(current))
            current = parents.get(id(current))
        settled.update(on_chain)
    return parents


def _walk(span: Span) -> Iterator[Span]:
    """``span`` and its descendants, depth first, children by start time (no recursion)."""
    stack = [span]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(sorted(current.children, key=lambda s: s.start_ns, reverse=True))
