"""``stepstream traces``, ``stepstream logs`` and ``stepstream draw``."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stepstream._visible import visible
from stepstream.cli._common import DIR_OPTION, err_console, fail, labelled, shown
from stepstream.cli._load import LoadError, load_workflow
from stepstream.cli._store import Store, StoreError
from stepstream.cli._waterfall import run_to_json, waterfall
from stepstream.drawing import draw_all_possible_flows, to_mermaid
from stepstream.errors import WorkflowValidationError
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry.setup import TRACES_FILE

__all__ = ["draw", "logs", "traces"]

#: Where `stepstream traces push` sends without --endpoint or OTEL_EXPORTER_OTLP_ENDPOINT.
DEFAULT_ENDPOINT = "http://localhost:4318"


def _store(directory: Path) -> Store:
    err = err_console()
    try:
        return Store(directory, lambda m: err.print(labelled("warning", "yellow", m)))
    except StoreError as exc:
        fail(str(exc))


@click.group()
def traces() -> None:
    """Review recorded runs from the embedded trace file."""


@traces.command("list")
@click.option("--workflow", help="Only runs of this workflow class.")
@click.option("--status", type=click.Choice(attrs.STATUSES))
@click.option("--limit", type=int, default=20, show_default=True)
@DIR_OPTION
def list_runs(workflow: str | None, status: str | None, limit: int, telemetry_dir: Path) -> None:
    """List recent runs: start, workflow, run_id, status, duration, steps, events."""
    try:
        runs = _store(telemetry_dir).runs()
    except StoreError as exc:
        fail(str(exc))
    runs = [r for r in runs if (workflow is None or r.workflow == workflow)]
    runs = [r for r in runs if (status is None or r.status == status)][:limit]
    table = Table(header_style="bold")
    for column in ("start (UTC)", "workflow", "run_id", "status", "duration", "steps", "events"):
        table.add_column(
            column,
            justify="right" if column in {"duration", "steps", "events"} else "left",
            no_wrap=True,
        )
    for r in runs:
        start = datetime.fromtimestamp(r.span.start_ns / 1e9, UTC).strftime("%m-%d %H:%M:%S")
        colour = "green" if r.status == attrs.STATUS_OK else "red"
        table.add_row(
            Text(start),
            shown(r.workflow),
            shown(r.run_id[:12]),
            shown(r.status, colour),
            Text(f"{r.span.duration_ns / 1e6:,.1f} ms"),
            Text(str(len(r.steps))),
            Text(str(r.streamed)),
        )
    Console().print(table)


@traces.command("show")
@click.argument("ref", metavar="RUN_ID|TRACE_ID|last")
@click.option(
    "--events",
    "events",
    default="10",
    show_default=True,
    help="Span events listed per span: a number or 'all'.",
)
@click.option("--attributes", "show_attributes", is_flag=True, help="Show every span attribute.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's spans as JSON.")
@DIR_OPTION
def show(ref: str, events: str, show_attributes: bool, as_json: bool, telemetry_dir: Path) -> None:
    """Show one run as a waterfall: spans, offsets, durations, events, causes, errors."""
    if events != "all" and not events.isdigit():
        fail(f"--events takes a number or 'all', got {events!r}")
    try:
        run = _store(telemetry_dir).find(ref)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        click.echo(run_to_json(run))
        return
    console = Console()
    limit = None if events == "all" else int(events)
    console.print(waterfall(run, limit, show_attributes, console.width))


@traces.command("export")
@click.argument("ref", metavar="RUN_ID|TRACE_ID|last")
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False), required=True)
@DIR_OPTION
def export(ref: str, html_file: Path, telemetry_dir: Path) -> None:
    """Write one self-contained HTML file with the run's timeline and graph."""
    from stepstream.cli._html import render_html  # noqa: PLC0415 - only this command needs it

    try:
        run = _store(telemetry_dir).find(ref)
    except StoreError as exc:
        fail(str(exc))
    page = render_html(run)  # before the write: only the write's errors are "cannot write"
    try:
        html_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {html_file}: {exc.strerror}")
    err_console().print(Text.assemble("wrote ", shown(html_file)))


@traces.command("push")
@click.option(
    "--endpoint",
    metavar="URL",
    help="The collector's OTLP/HTTP base URL (default: $OTEL_EXPORTER_OTLP_ENDPOINT, "
    "else http://localhost:4318).",
)
@click.option("--no-logs", is_flag=True, help="Push the spans only, not logs.jsonl.")
@DIR_OPTION
def push(endpoint: str | None, no_logs: bool, telemetry_dir: Path) -> None:
    """Send the recorded runs (spans and log lines) to an OTLP collector."""
    from stepstream.cli._push import PushError, log_requests, post  # noqa: PLC0415

    base = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    base = base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        fail(f"--endpoint must be an http:// or https:// URL, got {base!r}")
    store = _store(telemetry_dir)
    try:
        batches = store.span_batches()
        if not batches:
            fail(f"no runs recorded in {telemetry_dir / TRACES_FILE}")
        for batch in batches:
            post(f"{base}/v1/traces", batch)
        lines = 0
        if not no_logs:
            service = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "stepstream"}
            for request in log_requests(store, batches, service):
                post(f"{base}/v1/logs", request)
                lines += sum(
                    len(scope["logRecords"])
                    for rl in request["resourceLogs"]
                    for scope in rl["scopeLogs"]
                )
    except (StoreError, PushError) as exc:
        fail(str(exc))
    spans = sum(
        len(ss.get("spans", []))
        for b in batches
        for rs in b["resourceSpans"]
        for ss in rs.get("scopeSpans", [])
    )
    err_console().print(
        Text.assemble(f"pushed {spans} spans and {lines} log lines to ", shown(base)),
        highlight=False,
    )


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if match is None:
        fail(f"--since takes a duration like 30s, 10m, 2h or 1d, got {text!r}")
    amount, unit = float(match.group(1)), _UNITS[match.group(2)]
    return datetime.now(UTC) - timedelta(**{unit: amount})


def _matches(line: dict[str, Any], filters: dict[str, str | None], since: datetime | None) -> bool:
    run_id = filters["run_id"]
    if run_id is not None and not str(line.get(attrs.KEY_RUN_ID, "")).startswith(run_id):
        return False
    for key, field in (
        ("step", attrs.KEY_STEP),
        ("event_type", attrs.KEY_EVENT_TYPE),
        ("level", attrs.KEY_LEVEL),
    ):
        wanted = filters[key]
        if wanted is not None and str(line.get(field, "")) != wanted:
            return False
    if since is not None:
        try:
            stamp = datetime.fromisoformat(str(line.get(attrs.KEY_TIMESTAMP, "")))
        except ValueError:
            return False
        if stamp.tzinfo is None:  # a time without a zone: UTC, as stepstream writes it
            stamp = stamp.replace(tzinfo=UTC)
        if stamp < since:
            return False
    return True


def format_log_line(line: dict[str, Any]) -> str:
    """One readable line: time, level, message, workflow/step, run, then the details."""
    stamp = str(line.get(attrs.KEY_TIMESTAMP, ""))[11:23]
    level = str(line.get(attrs.KEY_LEVEL, "")).upper()
    where = "/".join(str(line[k]) for k in (attrs.KEY_WORKFLOW, attrs.KEY_STEP) if line.get(k))
    run = str(line.get(attrs.KEY_RUN_ID, ""))[:8]
    shown = {
        attrs.KEY_TIMESTAMP,
        attrs.KEY_LEVEL,
        attrs.KEY_LOGGER,
        attrs.KEY_EVENT,
        attrs.KEY_WORKFLOW,
        attrs.KEY_STEP,
        attrs.KEY_RUN_ID,
        attrs.KEY_TRACE_ID,
        attrs.KEY_SPAN_ID,
        attrs.KEY_ATTEMPT,
    }
    rest = " ".join(f"{k}={v}" for k, v in line.items() if k not in shown)
    message = str(line.get(attrs.KEY_EVENT, ""))
    return f"{stamp} {level:<7} {message:<14} {where} run={run} {rest}".rstrip()


@click.command()
@click.option("--run-id", help="Only lines of this run (a prefix is enough).")
@click.option("--step", help="Only lines of this step.")
@click.option("--event-type", help="Only stream_event lines of this event type.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--since", metavar="DURATION", help="Only lines newer than this (30s, 10m, 2h, 1d).")
@click.option(
    "--follow", is_flag=True, help="Keep printing new lines as they are written (Ctrl-C stops)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON lines.")
@DIR_OPTION
def logs(
    *,
    run_id: str | None,
    step: str | None,
    event_type: str | None,
    level: str | None,
    since: str | None,
    follow: bool,
    as_json: bool,
    telemetry_dir: Path,
) -> None:
    """Query the embedded JSON Lines log."""
    store = _store(telemetry_dir)
    filters = {"run_id": run_id, "step": step, "event_type": event_type, "level": level}
    cutoff = _since(since)
    try:
        for line in store.log_lines(follow=follow):
            if _matches(line, filters, cutoff):
                click.echo(json.dumps(line) if as_json else visible(format_log_line(line)))
    except StoreError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return


@click.command()
@click.argument("target", metavar="FILE.py[:WorkflowClass]")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the graph as self-contained HTML.",
)
@click.option("--mermaid", is_flag=True, help="Print the graph as a Mermaid flowchart.")
def draw(target: str, output: Path | None, mermaid: bool) -> None:
    """Draw every possible flow of a workflow: steps, events, who emits and accepts what."""
    if (output is None) == (not mermaid):
        fail("give exactly one of -o FILE.html or --mermaid")
    try:
        cls = load_workflow(target)
        if mermaid:
            click.echo(to_mermaid(cls), nl=False)
        else:
            assert output is not None  # noqa: S101 - checked above
            draw_all_possible_flows(cls, filename=output)
            err_console().print(Text.assemble("wrote ", shown(output)))
    except (LoadError, WorkflowValidationError) as exc:
        fail(str(exc))
