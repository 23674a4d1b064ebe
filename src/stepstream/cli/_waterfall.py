"""``stepstream traces show``: a run's span tree as a terminal waterfall."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stepstream._visible import visible
from stepstream.cli._store import Run, Span
from stepstream.telemetry import attributes as attrs

__all__ = ["run_to_json", "waterfall"]

_BAR = 24


def _ms(ns: int) -> str:
    return f"{ns / 1e6:,.1f} ms"


def _bar(span: Span, run: Run) -> Text:
    total = max(run.span.duration_ns, 1)
    start = round((span.start_ns - run.span.start_ns) / total * _BAR)
    width = max(1, round(span.duration_ns / total * _BAR))
    start = min(max(start, 0), _BAR - 1)
    width = min(width, _BAR - start)
    style = "red" if span.error else ("cyan" if span is run.span else "green")
    return Text.assemble(" " * start, ("█" * width, style), " " * (_BAR - start - width))


def _payload(event_attrs: dict[str, Any], limit: int = 70) -> str:
    text = visible(event_attrs.get(attrs.EVENT_PAYLOAD, ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def waterfall(
    run: Run, events: int | None, show_attributes: bool, width: int = 100
) -> RenderableType:
    """Render ``run``: one row per span (tree order), its events, links and errors.

    ``events`` caps the span events listed under each span (None: all). Every string read
    from the trace file is shown with its control characters escaped.
    """
    names = {s.span_id: s.name for s in run.spans}
    depth = {run.span.span_id: 0}
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    span_width = max(24, width - _BAR - 2 * 12 - 4)
    table.add_column("span", no_wrap=True, overflow="ellipsis", max_width=span_width)
    table.add_column("offset", justify="right", no_wrap=True, min_width=10)
    table.add_column("duration", justify="right", no_wrap=True, min_width=10)
    table.add_column("timeline", no_wrap=True, min_width=_BAR)
    for span in run.spans:
        level = depth.get(span.parent_id or "", -1) + 1 if span is not run.span else 0
        depth[span.span_id] = level
        indent = "  " * level
        label = Text(indent + visible(span.name), style="bold red" if span.error else "bold")
        table.add_row(
            label, _ms(span.start_ns - run.span.start_ns), _ms(span.duration_ns), _bar(span, run)
        )
        for _, span_id in span.links:
            cause = names.get(span_id, span_id)
            table.add_row(Text(f"{indent}  caused by {visible(cause)}", style="blue"), "", "", "")
        if span.error:
            error = visible(_exception(span))
            table.add_row(Text(f"{indent}  ✗ {error}", style="red"), "", "", "")
        if show_attributes:
            for key, value in sorted(span.attributes.items()):
                line = visible(f"{indent}  {key} = {value!r}")
                table.add_row(Text(line, style="dim"), "", "", "")
        stream = [e for e in span.events if e.name != "exception"]
        shown = stream if events is None else stream[:events]
        for event in shown:
            offset = _ms(event.time_ns - run.span.start_ns)
            seq = event.attributes.get(attrs.EVENT_SEQ, "")
            kind = event.attributes.get(
                attrs.EVENT_TYPE, event.attributes.get(attrs.WAIT_EVENT_TYPE, "")
            )
            body = (
                f"{indent}  · #{seq} {kind} {_payload(event.attributes)}"
                if event.name == attrs.STREAM_EVENT
                else f"{indent}  · {event.name} {kind}"
            )
            table.add_row(Text(visible(body), style="dim"), offset, "", "")
        if len(shown) < len(stream):
            table.add_row(
                Text(
                    f"{indent}  … {len(stream) - len(shown)} more events (--events all)",
                    style="dim",
                ),
                "",
                "",
                "",
            )
    title = Text.assemble(
        (visible(run.workflow), "bold"),
        visible(f"  run_id {run.run_id}  trace_id {run.span.trace_id}  "),
        (visible(run.status), "green" if run.status == attrs.STATUS_OK else "red"),
        f"  {_ms(run.span.duration_ns)}",
    )
    title.no_wrap = False
    return Group(title, table)


def _exception(span: Span) -> str:
    for event in span.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type", "")
            message = event.attributes.get("exception.message", "")
            return f"{kind}: {message}"
    return span.status_message or "error"


def run_to_json(run: Run) -> str:
    """The run's spans as JSON (for ``--json``)."""
    spans = [
        {
            "name": s.name,
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "parent_id": s.parent_id,
            "start_ns": s.start_ns,
            "end_ns": s.end_ns,
            "error": s.error,
            "attributes": s.attributes,
            "links": [{"trace_id": t, "span_id": i} for t, i in s.links],
            "events": [
                {"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in s.events
            ],
        }
        for s in run.spans
    ]
    return json.dumps(
        {"run_id": run.run_id, "workflow": run.workflow, "status": run.status, "spans": spans},
        indent=2,
    )
