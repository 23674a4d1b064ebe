"""What ``stepstream run`` shows: a live rich view on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from stepstream._visible import unshowable, visible
from stepstream.events import Event, StopEvent
from stepstream.telemetry import Observer, RunInfo, Status, StepInfo
from stepstream.telemetry import attributes as attrs

if TYPE_CHECKING:
    from stepstream.workflow import Workflow

__all__ = [
    "LiveModel",
    "LiveView",
    "compact",
    "compact_line",
    "fields_of",
    "plain_line",
    "result_text",
    "text_of",
]

_MAX_TEXT = 1500
_MAX_LINES = 12


def fields_of(event: Event) -> dict[str, Any]:
    """The event's fields, declared and dynamic alike, in one dict (empty if it cannot say).

    ``model_dump()`` nests the dynamic ones under ``"_data"``. An event whose
    ``model_dump()`` raises has no fields to show; :func:`compact` says why.
    """
    try:
        return _fields(event)
    except Exception:  # noqa: BLE001 - a user's model_dump must not end the command
        return {}


def _fields(event: Event) -> dict[str, Any]:
    data = event.model_dump()
    data.update(data.pop("_data", None) or {})
    return data


def text_of(event: Event) -> str | None:
    """The text of an event with exactly one field, a string (a text delta candidate)."""
    data = fields_of(event)
    if len(data) == 1:
        (value,) = data.values()
        if isinstance(value, str):
            return value
    return None


def compact(event: Event, limit: int = 160) -> str:
    """One line, safe to print: the event type and its fields as key=value."""
    try:
        fields = " ".join(f"{k}={v!r}" for k, v in _fields(event).items())
    except Exception as exc:  # noqa: BLE001 - a user's model_dump or __repr__: shown, not raised
        fields = f"<fields cannot be shown: {type(exc).__name__}: {visible(exc)}>"
    return compact_line(type(event).__name__, fields, limit)


def compact_line(type_name: str, fields: str, limit: int = 160) -> str:
    """``Type k=v ...`` made safe to print and cut to ``limit`` characters."""
    line = visible(f"{type_name} {fields}".rstrip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class _StepRow:
    name: str
    state: str = "waiting"
    started: float = 0.0
    duration_ms: float = 0.0
    runs: int = 0
    retries: int = 0
    error: str = ""
    waiting_for: str = ""


@dataclass
class _Block:
    """Consecutive single-string events of one type from one step."""

    key: tuple[str, int, str]
    texts: list[str] = field(default_factory=list)
    line: str = ""


class LiveView:
    """Step rows and streamed-event blocks: what the live terminal view draws.

    Fed by the seam in this process (:class:`LiveModel`) or by a server's step and event
    streams (``stepstream watch``).
    """

    def __init__(self, workflow: str, steps: Iterable[str]) -> None:
        self.workflow = workflow
        self.rows = {name: _StepRow(name) for name in steps}
        self.blocks: list[_Block] = []
        self.started = time.monotonic()
        self.trace_id = ""
        self.run_id = ""

    def _row(self, step: str) -> _StepRow:
        row = self.rows.get(step)
        if row is None:
            row = self.rows[step] = _StepRow(step)
        return row

    def mark_running(self, step: str) -> None:
        """A new attempt of ``step`` began."""
        row = self._row(step)
        row.state = "running"
        row.started = time.monotonic()
        row.runs += 1

    def mark_done(self, step: str, duration_ms: float) -> None:
        """The attempt of ``step`` returned after ``duration_ms``."""
        row = self._row(step)
        row.state = "done"
        row.duration_ms = duration_ms

    def mark_failed(self, step: str, state: str, error: str, duration_ms: float) -> None:
        """The attempt failed: ``state`` is a failed status or ``retrying``; ``error`` is text."""
        row = self._row(step)
        row.duration_ms = duration_ms
        row.state = state
        row.error = "" if state == attrs.STATUS_CANCELLED else error

    def mark_waiting(self, step: str, event_type: str) -> None:
        """``step`` waits for an event of ``event_type`` (``ctx.wait_for_event``)."""
        row = self._row(step)
        row.state = "awaiting"  # not "waiting": that is a step not started yet
        row.waiting_for = event_type

    def mark_retry(self, step: str) -> None:
        """Count a retry of ``step``."""
        self._row(step).retries += 1

    def add_event(self, key: tuple[str, int, str], text: str | None, line: str) -> None:
        """Append a streamed event: text deltas with one ``key`` (step, attempt, type) join."""
        last = self.blocks[-1] if self.blocks else None
        if text is not None and last is not None and last.key == key and last.texts:
            last.texts.append(text)
            return
        self.blocks.append(_Block(key, [text] if text is not None else [], line))
        if len(self.blocks) > _MAX_LINES * 4:
            del self.blocks[: len(self.blocks) - _MAX_LINES * 4]

    # -- rendering ---------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        header = Text.assemble(
            (visible(self.workflow), "bold"),
            "  run ",
            (visible(self.run_id[:12]) or "…", "cyan"),
            f"  elapsed {elapsed:5.1f}s",
        )
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(width=2)
        table.add_column()
        table.add_column()
        for row in self.rows.values():
            table.add_row(*_render_row(row))
        return Group(header, table, Text(""), *self._render_events())

    def _render_events(self) -> list[RenderableType]:
        out: list[RenderableType] = []
        for block in self.blocks[-_MAX_LINES:]:
            if len(block.texts) > 1:
                text = "".join(block.texts)
                if len(text) > _MAX_TEXT:
                    text = "…" + text[-_MAX_TEXT:]
                out.append(Text(visible(text, multiline=True)))
            else:
                out.append(Text(block.line, style="dim"))
        return out


class LiveModel(LiveView, Observer):
    """The live view of a run in this process, fed by the seam and by the stream loop."""

    def __init__(self, workflow: Workflow) -> None:
        super().__init__(type(workflow).__name__, workflow.steps)
        # Which step wrote each event still in the stream (popped by the reader).
        self.writers: dict[int, str] = {}

    def run_started(self, run: RunInfo) -> None:
        """Remember the run's id."""
        self.run_id = run.run_id

    def run_finished(  # noqa: PLR0917 - matches the seam
        self,
        run: RunInfo,
        status: Status,
        error: BaseException | None,
        terminal: StopEvent,
        seq: int,
        source: StepInfo | None,
    ) -> None:
        """Remember the trace id (set by the tracing observer when the run began)."""
        self.trace_id = run.trace_id or ""

    def step_started(self, inv: StepInfo) -> None:
        """Mark the step running."""
        self.mark_running(inv.step)

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """Mark the step done with its duration."""
        self.mark_done(inv.step, (time.monotonic() - self.rows[inv.step].started) * 1000)

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """Mark the step failed (or cancelled)."""
        took = (time.monotonic() - self.rows[inv.step].started) * 1000
        text = f"{type(error).__name__}: {visible(error)}"
        self.mark_failed(inv.step, "retrying" if will_retry else status, text, took)

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """Count a retry."""
        self.mark_retry(inv.step)

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """Append the event to its block (text deltas of one step run together)."""
        self.writers[id(event)] = inv.step if inv is not None else ""
        if isinstance(event, StopEvent):
            return
        key = (inv.step if inv is not None else "", inv.attempt if inv else 0, type(event).__name__)
        self.add_event(key, text_of(event), compact(event))


def _render_row(  # noqa: PLR0911 - one return per state
    row: _StepRow,
) -> tuple[RenderableType, RenderableType, RenderableType]:
    retries = f"  ({row.retries} retr{'y' if row.retries == 1 else 'ies'})" if row.retries else ""
    name = Text(visible(row.name), style="bold")
    if row.state == "running":
        return Spinner("dots", style="yellow"), name, Text("running" + retries, style="yellow")
    if row.state == "done":
        runs = f" x{row.runs}" if row.runs > 1 else ""
        ms = row.duration_ms
        took = f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"  # noqa: PLR2004
        detail = f"done in {took}{runs}{retries}"
        return Text("✓", style="green"), name, Text(detail, style="green")
    if row.state in {attrs.STATUS_ERROR, attrs.STATUS_TIMEOUT}:
        detail = visible(f"{row.state}: {row.error}{retries}")
        return Text("✗", style="red"), name, Text(detail, style="red")
    if row.state == "retrying":
        return Text("↻", style="magenta"), name, Text(visible(f"retrying: {row.error}"), "magenta")
    if row.state == attrs.STATUS_CANCELLED:
        return Text("-", style="dim"), name, Text("cancelled", style="dim")
    if row.state == "awaiting":
        return Text("…", "blue"), name, Text(visible(f"waiting for {row.waiting_for}"), "blue")
    return Text("·", style="dim"), name, Text("waiting", style="dim")


def plain_line(console: Console, elapsed: float, step: str, event: Event) -> None:
    """Print one plain line for a streamed event (stdout is not a terminal)."""
    line = f"{elapsed:8.3f}s {visible(step) or '-':<16} {compact(event, 400)}"
    console.print(Text(line), soft_wrap=True)


def result_text(value: Any) -> str:
    """How a run's result is printed (before its control characters are escaped)."""
    if isinstance(value, str):
        return value
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - a user's __repr__ must not lose the run's end
        return unshowable(value, exc)
