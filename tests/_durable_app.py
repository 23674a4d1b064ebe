"""A process running a durable workflow, for tests/test_durable_kill.py to kill and restart.

``python _durable_app.py DIR MODE``: the database is $STEPSTREAM_TEST_DATABASE, or
DIR/durable.sqlite. Each step appends
``step|step_key|pid`` to DIR/effects.txt (a side effect outside the process) and writes
``step:i`` events to the stream; step ``two`` waits for the file DIR/gate before it
returns (and step ``one`` too, when DIR/hold-one exists). A stream reader appends each
event's seq and label to DIR/reader-MODE.txt.
Finished spans go to DIR/spans-MODE.jsonl as they end (one JSON object per line).

MODE ``start`` starts a run and writes its id to DIR/run_id.txt; ``resume`` launches the
runtime (the run resumes), re-attaches to the run and reads the stream after the seq in
DIR/cursor.txt, opens the gate and writes the result to DIR/result-resume.txt;
``straight`` runs a run with the gate open (the uninterrupted reference); ``waiting``
starts a run whose step waits for a HumanResponseEvent; ``answer`` re-attaches to it and
sends the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.durable import DBOSRuntime
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event
from stepstream.events import HumanResponseEvent
from stepstream.events import InputRequiredEvent
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.testing import capture_telemetry


class Label(Event):
    """A streamed event: which step wrote it, and its number within the step."""

    label: str


class Middle(Event):
    """One's result, two's input."""

    total: int


class Last(Event):
    """Two's result, three's input."""

    total: int


class SpanFile(SpanExporter):
    """Appends each finished span to a JSON Lines file at once (the process may be killed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                ctx = span.get_span_context()
                parent = span.parent
                record: dict[str, object] = {
                    "name": span.name,
                    "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
                    "span_id": f"{ctx.span_id:016x}" if ctx else None,
                    "parent_id": f"{parent.span_id:016x}" if parent else None,
                    "attributes": dict(span.attributes or {}),
                    "links": [f"{link.context.span_id:016x}" for link in span.links],
                    "events": [
                        {"name": e.name, "attributes": dict(e.attributes or {})}
                        for e in span.events
                    ],
                    "pid": os.getpid(),
                }
                out.write(json.dumps(record, default=str) + "\n")
        return SpanExportResult.SUCCESS


class Chain(Workflow):
    """Three steps in a chain; two waits for the gate file."""

    def __init__(self, directory: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.directory = directory

    def effect(self, ctx: Context, name: str) -> None:
        """Record that step ``name`` ran, with its step key, outside the process."""
        with (self.directory / "effects.txt").open("a", encoding="utf-8") as out:
            out.write(f"{name}|{ctx.step_key}|{os.getpid()}\n")

    @step
    async def one(self, ctx: Context, ev: StartEvent) -> Middle:
        """Stream two events (between them, wait for the gate if DIR/hold-one exists); add 1."""
        self.effect(ctx, "one")
        ctx.write_event_to_stream(Label(label="one:0"))
        while (self.directory / "hold-one").exists() and not (self.directory / "gate").exists():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        ctx.write_event_to_stream(Label(label="one:1"))
        await ctx.store.set("seen", ["one"])
        return Middle(total=int(ev.get("x", 0)) + 1)

    @step
    async def two(self, ctx: Context, ev: Middle) -> Last:
        """Stream an event, wait for the gate, stream another, multiply by 10."""
        self.effect(ctx, "two")
        ctx.write_event_to_stream(Label(label="two:0"))
        while not (self.directory / "gate").exists():  # noqa: ASYNC110 - another process opens it
            await asyncio.sleep(0.01)
        ctx.write_event_to_stream(Label(label="two:1"))
        seen = await ctx.store.get("seen")
        await ctx.store.set("seen", [*seen, "two"])
        return Last(total=ev.total * 10)

    @step
    async def three(self, ctx: Context, ev: Last) -> StopEvent:
        """Stream an event and end with the total and the steps the store saw."""
        self.effect(ctx, "three")
        ctx.write_event_to_stream(Label(label="three:0"))
        seen = await ctx.store.get("seen")
        return StopEvent(result={"total": ev.total + 2, "seen": [*seen, "three"]})


class Asks(Workflow):
    """One step that asks a human and waits for the answer."""

    def __init__(self, directory: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.directory = directory

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Record, ask, wait, answer."""
        with (self.directory / "effects.txt").open("a", encoding="utf-8") as out:
            out.write(f"ask|{ctx.step_key}|{os.getpid()}\n")
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        return StopEvent(result=f"hello {answer.get('response')}")


async def read(handler: WorkflowHandler, path: Path, after: int | None) -> None:
    """Append ``seq label`` per streamed event (the seq counted from ``after``)."""
    seq = -1 if after is None else after
    events = handler.stream_events() if after is None else handler.stream_events(after=after)
    async for event in events:
        seq += 1
        label = event.label if isinstance(event, Label) else type(event).__name__
        with path.open("a", encoding="utf-8") as out:
            out.write(f"{seq} {label}\n")


async def main(directory: Path, mode: str) -> None:
    """Run ``mode`` (see the module docstring)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SpanFile(directory / f"spans-{mode}.jsonl")))
    url = os.environ.get("STEPSTREAM_TEST_DATABASE") or f"sqlite:///{directory / 'durable.sqlite'}"
    runtime = DBOSRuntime(url)
    if mode == "orphan":  # a deploy that lacks the workflow: its runs must stay pending
        await orphan(directory, runtime)
        return
    chain = Chain(directory, runtime=runtime, tracer_provider=provider, timeout=60)
    asks = Asks(directory, runtime=runtime, tracer_provider=provider, timeout=None)
    with capture_telemetry() as tel:  # the runs the launch resumes are observed too
        await runtime.launch()
    await run_mode(directory, mode, runtime, chain, asks)
    (directory / f"telemetry-{mode}.json").write_text(
        json.dumps(
            {
                "logs": tel.logs,
                "metrics": {name: tel.metric_sum(name) for name in tel.metrics()},
                "histograms": {
                    name: sum(getattr(p, "count", 0) for p in m.data.data_points)
                    for name, m in tel.metrics().items()
                    if type(m.data).__name__ == "Histogram"
                },
            },
            default=str,
        )
    )
    await runtime.destroy()


async def orphan(directory: Path, runtime: DBOSRuntime) -> None:
    """Launch without constructing Chain; record what re-attaching to its run says."""
    await runtime.launch()
    try:
        await runtime.handler((directory / "run_id.txt").read_text(), timeout=3)
    except WorkflowRuntimeError as exc:
        (directory / "orphan.txt").write_text(str(exc))
    await runtime.destroy()


async def run_mode(
    directory: Path, mode: str, runtime: DBOSRuntime, chain: Chain, asks: Asks
) -> None:
    """The part of ``main`` that differs by mode."""
    reader = directory / f"reader-{mode}.txt"
    if mode in {"start", "straight"}:
        if mode == "straight":
            (directory / "gate").touch()
        handler = chain.run(x=4)
        (directory / "run_id.txt").write_text(handler.run_id)
        await read(handler, reader, None)
        (directory / f"result-{mode}.txt").write_text(json.dumps(await handler))
    elif mode == "resume":
        run_id = (directory / "run_id.txt").read_text()
        handler = await runtime.handler(run_id)
        after = int((directory / "cursor.txt").read_text())
        reading = asyncio.create_task(read(handler, reader, after))
        (directory / "gate").touch()
        result = await handler
        await reading
        (directory / "result-resume.txt").write_text(json.dumps(result))
    elif mode == "waiting":
        handler = asks.run()
        (directory / "run_id.txt").write_text(handler.run_id)
        await read(handler, reader, None)
    elif mode == "answer":
        handler = await runtime.handler((directory / "run_id.txt").read_text())
        reading = asyncio.create_task(read(handler, reader, -1))
        handler.ctx.send_event(HumanResponseEvent(response="ada"))
        result = await handler
        await reading
        (directory / "result-answer.txt").write_text(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
