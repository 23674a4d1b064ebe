"""``stepstream traces export --html``: one self-contained page with the run's timeline."""

from __future__ import annotations

import html

from stepstream.cli._store import Run

__all__ = ["render_html"]


def render_html(run: Run) -> str:
    """Return a self-contained HTML page for ``run`` (no scripts or styles from the network)."""
    rows = "".join(
        f"<li>{html.escape(s.name)}: {s.duration_ns / 1e6:.1f} ms</li>" for s in run.spans
    )
    title = html.escape(f"{run.workflow} {run.run_id}")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body><h1>{title}</h1><ul>{rows}</ul></body></html>\n"
