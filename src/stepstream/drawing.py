"""Draw a workflow's graph of all possible flows as self-contained HTML or Mermaid."""

from __future__ import annotations

import html
import inspect
import re
from pathlib import Path
from typing import Any

from stepstream._graph import compiled_graph
from stepstream._schema import event_schema
from stepstream._visible import visible
from stepstream.events import Event, InputRequiredEvent, StartEvent, StopEvent
from stepstream.workflow import Workflow

__all__ = ["draw_all_possible_flows", "flow_graph", "to_mermaid"]

_COL_W, _ROW_H, _BOX_W, _BOX_H = 220, 70, 170, 36


def _edges(workflow: type[Workflow] | Workflow) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the node ids and the edges between them."""
    graph = compiled_graph(workflow if isinstance(workflow, type) else type(workflow))
    edges: list[tuple[str, str]] = []
    events: dict[str, type[Event]] = {}
    for spec in graph.specs:
        for t in spec.accepts:
            events[t.__name__] = t
            edges.append((f"event:{t.__name__}", f"step:{spec.name}"))
        for t in spec.returns:
            events[t.__name__] = t
            edges.append((f"step:{spec.name}", f"event:{t.__name__}"))
            if issubclass(t, InputRequiredEvent):
                edges.append((f"event:{t.__name__}", "actor:human"))
    nodes = [f"event:{n}" for n in events] + [f"step:{s.name}" for s in graph.specs]
    if any(dst == "actor:human" for _, dst in edges):
        nodes.append("actor:human")
    return nodes, edges


_MERMAID_ID = re.compile(r"[A-Za-z0-9_]+")
_MERMAID_UNSAFE = re.compile(r"[^\w .-]")


def _mermaid_label(name: str) -> str:
    """``name`` for a quoted Mermaid label.

    Everything but letters, digits, ``_``, ``.``, ``-`` and spaces becomes an entity code
    (``#34;``), so no name can end its label or start a line of its own.
    """
    return _MERMAID_UNSAFE.sub(lambda m: f"#{ord(m.group())};", name)


def to_mermaid(workflow: type[Workflow] | Workflow) -> str:
    """Return a Mermaid ``flowchart`` of the workflow's steps and events.

    Node ids are ``kind_name`` for names of ASCII letters, digits and ``_`` (``kind``
    then a number otherwise); labels hold the names with entity codes for anything else.
    """
    nodes, edges = _edges(workflow)
    idents: dict[str, str] = {}
    lines = ["flowchart LR"]
    for number, node in enumerate(nodes):
        kind, name = node.split(":", 1)
        ident = idents[node] = (
            f"{kind}_{name}" if _MERMAID_ID.fullmatch(name) else f"{kind}{number}"
        )
        label = _mermaid_label(name)
        shape = {"step": f'["{label}"]', "event": f'(["{label}"])', "actor": '{{"human"}}'}[kind]
        lines.append(f"    {ident}{shape}")
    lines.extend(f"    {idents[a]} --> {idents[b]}" for a, b in edges)
    return "\n".join(lines) + "\n"


def flow_graph(workflow: type[Workflow] | Workflow) -> dict[str, Any]:
    """The workflow's graph as JSON-ready data: step, event and human nodes, and edges.

    The shape of LlamaIndex's ``WorkflowGraph`` (``name``, ``nodes`` with ``id``,
    ``label`` and ``node_type``, ``edges`` with ``source`` and ``target``), as the
    server's ``/workflows/{name}/representation`` answers it.
    """
    cls = workflow if isinstance(workflow, type) else type(workflow)
    own_doc = vars(cls).get("__doc__")
    graph = compiled_graph(cls)
    nodes, edges = _edges(cls)
    types = {t.__name__: t for spec in graph.specs for t in (*spec.accepts, *spec.returns)}
    methods = {spec.name: getattr(cls, spec.name, None) for spec in graph.specs}
    docs = {name: inspect.getdoc(f) if callable(f) else None for name, f in methods.items()}

    # Ids are the names, as LlamaIndex's are; an event named like a step (or like the
    # human actor) gets a suffix so that no two nodes share an id.
    taken = {n.split(":", 1)[1] for n in nodes if not n.startswith("event:")}

    def ident_of(node_key: str) -> str:
        kind, name = node_key.split(":", 1)
        return f"{name} (event)" if kind == "event" and name in taken else name

    def node(ident: str) -> dict[str, Any]:
        kind, name = ident.split(":", 1)
        if kind == "step":
            return {"id": name, "label": name, "node_type": "step", "description": docs.get(name)}
        if kind == "actor":
            return {"id": name, "label": name, "node_type": "external"}
        event = types[name]
        chain = [c.__name__ for c in event.__mro__ if issubclass(c, Event) and c is not Event]
        produced = [a.split(":", 1)[1] for a, b in edges if b == ident and a.startswith("step:")]
        return {
            "id": ident_of(ident),
            "label": name,
            "node_type": "event",
            "event_type": name,
            "event_types": chain,
            "event_schema": event_schema(event),
            "produced_by": produced,
        }

    return {
        "name": cls.__name__,
        "description": inspect.cleandoc(own_doc) if own_doc else None,
        "nodes": [node(n) for n in nodes],
        "edges": [{"source": ident_of(a), "target": ident_of(b)} for a, b in edges],
    }


def _layers(nodes: list[str], edges: list[tuple[str, str]], starts: set[str]) -> dict[str, int]:
    """Longest-path layering from the start event, ignoring back edges (cycles)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    layer = dict.fromkeys(nodes, 0)
    seen: set[str] = set()
    frontier = [n for n in nodes if n in starts] or nodes[:1]
    depth = 0
    while frontier and depth <= len(nodes):
        nxt: list[str] = []
        for n in frontier:
            seen.add(n)
            layer[n] = max(layer[n], depth)
            nxt.extend(m for m in succ[n] if m not in seen)
        frontier, depth = nxt, depth + 1
    return layer


def _terminal_events(workflow: type[Workflow] | Workflow) -> tuple[set[str], set[str]]:
    """Node ids of the StartEvent and StopEvent types (by class, not by name)."""
    graph = compiled_graph(workflow if isinstance(workflow, type) else type(workflow))
    types = {t for spec in graph.specs for t in (*spec.accepts, *spec.returns)}
    starts = {f"event:{t.__name__}" for t in types if issubclass(t, StartEvent)}
    stops = {f"event:{t.__name__}" for t in types if issubclass(t, StopEvent)}
    return starts, stops


def draw_all_possible_flows(
    workflow: type[Workflow] | Workflow, filename: str | Path = "workflow_all_flows.html"
) -> Path:
    """Write a self-contained HTML page (inline SVG, no scripts) of every possible flow."""
    nodes, edges = _edges(workflow)
    starts, stops = _terminal_events(workflow)
    layer = _layers(nodes, edges, starts)
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for node in sorted(nodes, key=lambda n: layer[n]):
        col = layer[node]
        row = rows.get(col, 0)
        rows[col] = row + 1
        pos[node] = (20 + col * _COL_W, 20 + row * _ROW_H)
    width = 40 + (max(layer.values(), default=0) + 1) * _COL_W
    height = 40 + max(rows.values(), default=1) * _ROW_H
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="100%" style="max-width:{width}px;height:auto" '
            'font-family="sans-serif" font-size="13">'
        ),
        (
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            'markerHeight="8" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker></defs>'
        ),
    ]
    for a, b in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        parts.append(
            f'<line x1="{x1 + _BOX_W}" y1="{y1 + _BOX_H // 2}" x2="{x2}" y2="{y2 + _BOX_H // 2}" '
            'stroke="#555" marker-end="url(#arrow)"/>'
        )
    for node, (x, y) in pos.items():
        kind, name = node.split(":", 1)
        fill = {"step": "#dbeafe", "event": "#fef3c7", "actor": "#fce7f3"}[kind]
        if node in starts or node in stops:
            fill = "#dcfce7"
        radius = 4 if kind == "step" else 18
        parts.append(
            f'<g><title>{kind}: {html.escape(visible(name))}</title><rect x="{x}" y="{y}" '
            f'width="{_BOX_W}" height="{_BOX_H}" rx="{radius}" fill="{fill}" stroke="#333"/>'
            f'<text x="{x + _BOX_W // 2}" y="{y + 23}" text-anchor="middle">'
            f"{html.escape(visible(name))}</text></g>"
        )
    parts.append("</svg>")
    cls = workflow if isinstance(workflow, type) else type(workflow)
    title = html.escape(visible(cls.__name__))
    page = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1 style='font-family:sans-serif'>{title}: all possible flows</h1>"
        f"{''.join(parts)}</body></html>\n"
    )
    path = Path(filename)
    path.write_text(page, encoding="utf-8")
    return path
