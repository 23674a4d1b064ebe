"""``stepstream traces export --html``: one self-contained page (inline CSS and SVG) per run.

Header, timeline (a Gantt chart of the spans, streamed events as ticks), the workflow graph
as observed in the run, and the streamed events; hover details are SVG ``<title>``s.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from importlib import resources

from stepstream._visible import visible
from stepstream.cli._store import Run, Span, SpanEvent
from stepstream.telemetry import attributes as attrs

__all__ = ["render_html"]

_COLOURS: dict[str, str] = {
    attrs.STATUS_OK: "#16a34a",
    attrs.STATUS_ERROR: "#dc2626",
    attrs.STATUS_TIMEOUT: "#ea580c",
    attrs.STATUS_CANCELLED: "#9ca3af",
}
_GREY = "#64748b"
_NAME_W, _DUR_W, _CHART_W, _ROW_H, _AXIS_H = 290, 90, 860, 26, 30
_MAX_SPANS, _MAX_TICKS, _MAX_ROWS = 2000, 1000, 500  # timeline rows, ticks per row, table rows
_GAP_X, _GAP_Y = 70, 62  # graph spacing between columns and between rows
_CSS = (resources.files("stepstream") / "_assets" / "view.css").read_text(encoding="utf-8")
_WORST_FIRST: tuple[str, ...] = (attrs.STATUS_ERROR, attrs.STATUS_TIMEOUT, attrs.STATUS_CANCELLED)


def _e(value: object) -> str:
    """Return ``str(value)`` escaped for HTML text and attribute values.

    Control characters and lone surrogates (which no encoder writes) show as escapes.
    """
    return html.escape(visible(value, multiline=True), quote=True)


def _ms(ns: float) -> str:
    """Format nanoseconds as milliseconds with one decimal (``1,234.5 ms``)."""
    return f"{ns / 1e6:,.1f} ms"


def _cut(value: object, limit: int) -> str:
    """Return ``str(value)`` cut to ``limit`` characters, ending with an ellipsis if cut."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg(width: float, height: float, label: str, colour: str) -> str:
    """Open an inline SVG element that defines an arrowhead marker ``#arrow-{label}``."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-size="13" role="img" aria-label="{label}">'
        f'<defs><marker id="arrow-{label}" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M0,0L10,5L0,10z" fill="{colour}"/></marker></defs>'
    )


def _status(span: Span, run: Run) -> str:
    """Return a span's status: the run's, a step's (its attribute), else from its error flag."""
    status = (
        run.status
        if span is run.span
        else str(span.attributes.get(attrs.STEP_STATUS, attrs.STATUS_OK))
    )
    return attrs.STATUS_ERROR if span.error and status in {attrs.STATUS_OK, "unknown"} else status


def _axis(total_ns: int, x0: int, height: int) -> str:
    """Return grid lines and millisecond labels for a timeline ``total_ns`` long."""
    raw = max(total_ns / 1e6 / 8, 1e-6)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    decimals = max(0, -math.floor(math.log10(step)))
    return "".join(
        f'<line x1="{x:.1f}" y1="{_AXIS_H - 6}" x2="{x:.1f}" y2="{height}" stroke="#e2e8f0"/>'
        f'<text x="{x:.1f}" y="16" font-size="11" fill="{_GREY}" text-anchor="middle">'
        f"{k * step:,.{decimals}f} ms</text>"
        for k in range(int(total_ns / 1e6 / step) + 1)
        for x in [x0 + k * step * 1e6 / total_ns * _CHART_W]
    )


def _tick(event: SpanEvent, x: float, y: int, t0: int) -> str:
    """Return one span event as a mark (a tick for a streamed event) with a hover title."""
    a, at = event.attributes, _ms(event.time_ns - t0)
    if event.name == attrs.STREAM_EVENT:
        title = f"#{a.get(attrs.EVENT_SEQ, '')} {a.get(attrs.EVENT_TYPE, '')} at {at}\n"
        title += _cut(a.get(attrs.EVENT_PAYLOAD, ""), 300)
        return (
            f'<line class="tick" x1="{x:.1f}" y1="{y + 3}" x2="{x:.1f}" y2="{y + _ROW_H - 3}">'
            f"<title>{_e(title)}</title></line>"
        )
    details = "".join(f"\n{k} = {_cut(v, 200)}" for k, v in a.items())
    colour = _COLOURS[attrs.STATUS_ERROR] if event.name == "exception" else "#7c3aed"
    return (
        f'<circle cx="{x:.1f}" cy="{y + _ROW_H / 2}" r="4" fill="{colour}" stroke="#fff">'
        f"<title>{_e(f'{event.name} at {at}{details}')}</title></circle>"
    )


def _timeline(run: Run) -> str:
    """Return the Gantt chart of the run's spans, in tree order, as inline SVG."""
    t0, x0 = run.span.start_ns, _NAME_W + _DUR_W
    total = max(1, max(s.end_ns for s in run.spans) - t0)
    scale = _CHART_W / total
    spans = run.spans[:_MAX_SPANS]
    rows = {s.span_id: i for i, s in enumerate(spans)}
    width, height = x0 + _CHART_W + 24, _AXIS_H + len(spans) * _ROW_H + 6
    parts = [_svg(width, height, "timeline", "#2563eb")]
    parts += [
        f'<rect y="{_AXIS_H + i * _ROW_H}" width="{width}" height="{_ROW_H}" fill="#f8fafc"/>'
        for i in range(1, len(spans), 2)
    ]
    parts.append(_axis(total, x0, height))
    depth: dict[str, int] = {}
    for i, span in enumerate(spans):
        level = depth[span.span_id] = depth.get(span.parent_id or "", -1) + 1
        y, status = _AXIS_H + i * _ROW_H, _status(span, run)
        x, w = x0 + (span.start_ns - t0) * scale, max(3.0, span.duration_ns * scale)
        causes = [spans[rows[sid]].name if sid in rows else sid for _, sid in span.links]
        stream = [e for e in span.events if e.name == attrs.STREAM_EVENT]
        lines = [
            span.name,
            f"start +{_ms(span.start_ns - t0)}, duration {_ms(span.duration_ns)}, {status}",
            *(f"caused by {c}" for c in causes),
            *(
                [f"{len(stream)} streamed events, the first {_MAX_TICKS} drawn"]
                * (len(stream) > _MAX_TICKS)
            ),
            *([f"✗ {span.status_message or 'error'}"] if span.error else []),
            *(f"{k} = {_cut(v, 200)}" for k, v in sorted(span.attributes.items())),
        ]
        parts.append(
            f'<text x="{8 + 16 * level}" y="{y + 17}" font-weight="{700 if i == 0 else 400}">'
            f"<title>{_e(span.name)}</title>{_e(_cut(span.name, 36 - 2 * level))}</text>"
            f'<text x="{x0 - 12}" y="{y + 17}" text-anchor="end" fill="#475569">'
            f'{_ms(span.duration_ns)}</text><rect class="bar" x="{x:.1f}" y="{y + 6}" '
            f'width="{w:.1f}" height="{_ROW_H - 12}" rx="3" fill="{_COLOURS.get(status, _GREY)}">'
            f"<title>{_e(chr(10).join(lines))}</title></rect>"
        )
        other = [e for e in span.events if e.name != attrs.STREAM_EVENT]
        parts += [
            _tick(e, x0 + (e.time_ns - t0) * scale, y, t0) for e in stream[:_MAX_TICKS] + other
        ]
        for (_, sid), cause in zip(span.links, causes, strict=True):
            if sid in rows:  # an arrow from the end of the cause's bar to the start of this one
                x1 = x0 + (spans[rows[sid]].end_ns - t0) * scale
                y1 = _AXIS_H + rows[sid] * _ROW_H
                y1, y2 = (y1 + _ROW_H - 6, y + 5) if y1 < y else (y1 + 6, y + _ROW_H - 5)
                parts.append(
                    f'<path d="M{x1:.1f},{y1} C{x1:.1f},{(y1 + y2) / 2} {x:.1f},{(y1 + y2) / 2} '
                    f'{x + 1:.1f},{y2}" fill="none" stroke="#2563eb" stroke-width="1.4" '
                    f'marker-end="url(#arrow-timeline)"><title>{_e(span.name)} caused by '
                    f"{_e(cause)}</title></path>"
                )
    more = len(run.spans) - len(spans)
    note = f'<p class="note">{more} more spans are not drawn.</p>' if more > 0 else ""
    return "".join(parts) + "</svg>" + note


def _layers(nodes: list[str], edges: dict[tuple[str, str], int]) -> dict[str, int]:
    """Longest-path layers over the forward edges of a breadth-first order (cycle-safe)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    targets = {b for _, b in edges}
    pending, queue = [n for n in nodes if n not in targets] + nodes, list[str]()
    order: dict[str, int] = {}
    while pending or queue:
        node = queue.pop(0) if queue else pending.pop(0)
        if node not in order:
            order[node] = len(order)
            queue.extend(succ[node])
    layer = dict.fromkeys(nodes, 0)
    for node in sorted(nodes, key=order.__getitem__):
        for nxt in succ[node]:
            if order[nxt] > order[node]:
                layer[nxt] = max(layer[nxt], layer[node] + 1)
    return layer


def _observed(run: Run) -> tuple[dict[tuple[str, str], int], dict[str, tuple[str, str]]]:
    """Return the run's edges (event→step, step→event: counts) and each step's summary/status."""
    edges: dict[tuple[str, str], int] = {}
    spans: dict[str, list[Span]] = {}
    for s in run.steps:
        step = f"step:{s.attributes.get(attrs.STEP, s.name)}"
        spans.setdefault(step, []).append(s)
        ev_in, ev_out = s.attributes.get(attrs.EVENT_IN), s.attributes.get(attrs.EVENT_OUT)
        keys = [(f"event:{ev_in}", step)] if ev_in else []
        keys += [(step, f"event:{ev_out}")] if ev_out not in {None, "", "None"} else []
        for key in keys:
            edges[key] = edges.get(key, 0) + 1
    summaries = {}
    for step, group in spans.items():
        statuses = [_status(s, run) for s in group]
        worst = next((s for s in _WORST_FIRST if s in statuses), attrs.STATUS_OK)
        streamed = sum(int(s.attributes.get(attrs.EVENTS_STREAMED, 0)) for s in group)
        runs = f"{len(group)} attempt" + ("s" if len(group) > 1 else "")
        total = _ms(sum(s.duration_ns for s in group))
        summaries[step] = (f"{runs} · {total} · {streamed} streamed", worst)
    return edges, summaries


def _node(node: str, box: tuple[float, float, float], summary: tuple[str, str]) -> str:
    """Return one graph node: a step box (runs, time, events streamed) or an event pill."""
    (x, y, w), (kind, name) = box, node.split(":", 1)
    if kind == "event":
        terminal = name.endswith(("StartEvent", "StopEvent"))
        fill, stroke = ("#dcfce7", "#16a34a") if terminal else ("#fef3c7", "#d97706")
        return (
            f'<g><title>event {_e(name)}</title><rect x="{x:.1f}" y="{y:.1f}" width="{w:.0f}" '
            f'height="30" rx="15" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text '
            f'x="{x + w / 2:.1f}" y="{y + 20:.1f}" text-anchor="middle">{_e(name)}</text></g>'
        )
    sub, worst = summary
    return (
        f'<g><title>{_e(f"step {name}: {sub}, {worst}")}</title><rect x="{x:.1f}" '
        f'y="{y:.1f}" width="{w:.0f}" height="44" rx="6" fill="#eff6ff" '
        f'stroke="{_COLOURS.get(worst, _GREY)}" stroke-width="1.5"/><text x="{x + w / 2:.1f}" '
        f'y="{y + 18:.1f}" text-anchor="middle" font-weight="600">{_e(name)}</text><text '
        f'x="{x + w / 2:.1f}" y="{y + 35:.1f}" font-size="11" fill="#475569" '
        f'text-anchor="middle">{_e(sub)}</text></g>'
    )


def _graph(run: Run) -> str:
    """Return the workflow graph observed in the run (events and steps) as inline SVG."""
    edges, steps = _observed(run)
    if not edges:
        return '<p class="note">No step spans were recorded for this run.</p>'
    nodes = list(dict.fromkeys(n for edge in edges for n in edge))
    layer = _layers(nodes, edges)
    size = {n: (max(110.0, 7.8 * len(n) - 20), 30.0) for n in nodes}
    size.update({n: (max(size[n][0], 6.2 * len(sub) + 20), 44.0) for n, (sub, _) in steps.items()})
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(layer[n], []).append(n)
    col_x, x = {}, 16.0
    for c in sorted(columns):
        col_x[c], x = x, x + max(size[n][0] for n in columns[c]) + _GAP_X
    tallest = max(len(c) for c in columns.values())
    pos = {
        n: (col_x[c], 16 + (tallest - len(col)) * _GAP_Y / 2 + i * _GAP_Y + (44 - size[n][1]) / 2)
        for c, col in columns.items()
        for i, n in enumerate(col)
    }
    back = any(layer[b] <= layer[a] for a, b in edges)
    height = tallest * _GAP_Y + (40 if back else 0)
    parts = [_svg(x - _GAP_X + 16, height, "graph", _GREY)]
    for (a, b), count in edges.items():
        (ax, ay), (bx, by) = pos[a], pos[b]
        ay, by = ay + size[a][1] / 2, by + size[b][1] / 2
        if layer[b] > layer[a]:
            ax += size[a][0]
            curve, label_y = f"C{ax + 40:.1f},{ay:.1f} {bx - 40:.1f},{by:.1f}", (ay + by) / 2 - 5
        else:  # a back edge: loop below the nodes
            ax, bx, ay, by = ax + size[a][0] / 2, bx + size[b][0] / 2, ay + 22, by + 22
            curve = f"C{ax:.1f},{height:.1f} {bx:.1f},{height:.1f}"
            label_y = (ay + by) / 8 + 0.75 * height - 5  # just above the bottom of the loop
        parts.append(
            f'<path d="M{ax:.1f},{ay:.1f} {curve} {bx - 1:.1f},{by:.1f}" fill="none" '
            f'stroke="{_GREY}" stroke-width="1.4" marker-end="url(#arrow-graph)"><title>'
            f"{_e(a.split(':', 1)[1])} → {_e(b.split(':', 1)[1])}: {count} times</title></path>"
            f'<text x="{(ax + bx) / 2:.1f}" y="{label_y:.1f}" font-size="11" '
            f'fill="#475569" text-anchor="middle">{f"&times;{count}" if count > 1 else ""}</text>'
        )
    parts += [_node(n, (nx, ny, size[n][0]), steps.get(n, ("", ""))) for n, (nx, ny) in pos.items()]
    return "".join(parts) + "</svg>"


def _events_table(run: Run) -> str:
    """Return the streamed events (the first ``_MAX_ROWS`` by seq) as an HTML table."""
    found = sorted(
        ((e, s) for s in run.spans for e in s.events if e.name == attrs.STREAM_EVENT),
        key=lambda pair: (int(pair[0].attributes.get(attrs.EVENT_SEQ, 0)), pair[0].time_ns),
    )
    rows = "".join(
        f'<tr><td class="num">{_e(e.attributes.get(attrs.EVENT_SEQ, ""))}</td><td class="num">'
        f"{_ms(e.time_ns - run.span.start_ns)}</td><td>{_e(s.attributes.get(attrs.STEP, '(run)'))}"
        f'</td><td>{_e(e.attributes.get(attrs.EVENT_TYPE, ""))}</td><td class="mono">'
        f"{_e(_cut(e.attributes.get(attrs.EVENT_PAYLOAD, ''), 200))}</td></tr>"
        for e, s in found[:_MAX_ROWS]
    )
    notes = [f"Showing the first {_MAX_ROWS} of {len(found)} events."] * (len(found) > _MAX_ROWS)
    if len(found) < run.streamed:
        notes.append(
            f"{run.streamed - len(found)} streamed events are not in the trace (span event "
            f"limit); `stepstream logs --run-id {run.run_id}` lists every one."
        )
    return (
        "<table><thead><tr><th>seq</th><th>offset</th><th>step</th><th>type</th>"
        f"<th>payload</th></tr></thead><tbody>{rows}</tbody></table>"
        + "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    )


def render_html(run: Run) -> str:
    """Return one self-contained HTML page for ``run`` (nothing is loaded from the network).

    Args:
        run: A recorded run, as read by ``Store.find``.

    Returns:
        The page: a header, the timeline, the observed workflow graph, the events table.
    """
    colour = _COLOURS.get(run.status, _GREY)
    start = datetime.fromtimestamp(run.span.start_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    meta = [
        ("workflow", _e(run.workflow)),
        ("status", f'<span class="badge" style="background:{colour}">{_e(run.status)}</span>'),
        ("duration", _ms(run.span.duration_ns)),
        ("streamed events", f"{run.streamed:,}"),
        ("run_id", f'<span class="mono">{_e(run.run_id)}</span>'),
        ("trace_id", f'<span class="mono">{_e(run.span.trace_id)}</span>'),
        ("started (UTC)", start[:-3]),
        ("step attempts", str(len(run.steps))),
    ]
    legend = "".join(f'<span><i style="background:{c}"></i>{s}</span>' for s, c in _COLOURS.items())
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
        f"{_e(run.workflow)} run {_e(run.run_id[:12])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(run.workflow)} <small>run {_e(run.run_id[:12])}</small></h1>"
        '<div class="card"><dl class="meta">'
        + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in meta)
        + '</dl></div><h2>Timeline</h2><div class="card"><p class="legend">'
        f'{legend}<span><i style="background:#0f172a;width:2px"></i>streamed event</span>'
        '<span style="color:#2563eb">⤷ caused by</span><span>hover a bar or tick for details'
        f"</span></p>{_timeline(run)}</div><h2>Workflow graph (as observed in this run)</h2>"
        f'<div class="card">{_graph(run)}</div><h2>Streamed events</h2>'
        f'<div class="card">{_events_table(run)}</div></body></html>\n'
    )
