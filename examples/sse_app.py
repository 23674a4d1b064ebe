"""A web app that streams workflow runs to clients as Server-Sent Events, on stepstream's server.

``make_app()`` is a :class:`stepstream.server.WorkflowServer` serving ``ReportWorkflow`` as
``report``: an ASGI app (run it with ``python examples/sse_app.py``, with
``stepstream serve examples/sse_app.py``, or mount it in your own Starlette/FastAPI app).
Start a run, then stream it; every frame names its position (``id:``) and event type::

    curl -X POST 127.0.0.1:8765/workflows/report/run-nowait \\
        -d '{"start_event": {"topic": "whales"}}'
    curl -N '127.0.0.1:8765/events/<handler_id>?after_sequence=-1'

    id: 0
    event: ProgressEvent
    data: {"value":{"msg":"researching whales"},"type":"ProgressEvent",...}
    ...
    id: 6
    event: StopEvent
    data: {"value":{"result":"Whales: ..."},"type":"StopEvent",...}

A dropped client reconnects with ``Last-Event-ID`` (browsers' EventSource does) and
goes on with no gap and no duplicate. Each request is a SERVER span (OpenTelemetry's
ASGI instrumentation, child of the caller's ``traceparent``), and the run span is its
child. Slow and half-open connections are timed out, so they cannot starve the others
(the earlier, standard-library version of this example could be stalled that way).

    python examples/sse_app.py [PORT]     # or SSE_PORT=...; default 8765, on 127.0.0.1

``main()`` calls ``stepstream.configure_telemetry()``, so the request and run spans are
written to ``.stepstream/traces.jsonl`` (``stepstream traces list``).
"""

import asyncio
import os
import sys
from typing import Any

from opentelemetry.trace import TracerProvider

from stepstream import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    configure_telemetry,
    step,
)
from stepstream.server import WorkflowServer
from stepstream.testing import FakeStreamingLLM

DEFAULT_PORT = 8765
HOST = "127.0.0.1"


# -- the workflow -------------------------------------------------------------------------


class TopicStart(StartEvent):
    topic: str = "whales"


class ProgressEvent(Event):
    msg: str


class NotesEvent(Event):
    topic: str
    notes: str


class ReportWorkflow(Workflow):
    """Researches a topic (a fake streaming LLM), then writes a one-line report."""

    @step
    async def research(self, ctx: Context[Any], ev: TopicStart) -> NotesEvent:
        ctx.write_event_to_stream(ProgressEvent(msg=f"researching {ev.topic}"))
        llm = FakeStreamingLLM(text=f"{ev.topic} are remarkable animals.", delay=0.005)
        notes = ""
        async for chunk in await llm.astream_complete(f"Tell me about {ev.topic}"):
            ctx.write_event_to_stream(ProgressEvent(msg=chunk.delta))
            notes = str(chunk)
        return NotesEvent(topic=ev.topic, notes=notes)

    @step
    async def report(self, ctx: Context[Any], ev: NotesEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="writing the report"))
        return StopEvent(result=f"{ev.topic.capitalize()}: {ev.notes}")


# -- the app ------------------------------------------------------------------------------


def make_app(tracer_provider: TracerProvider | None = None, **options: Any) -> WorkflowServer:
    """The server: ``ReportWorkflow`` as ``report``; spans to ``tracer_provider`` (or global).

    ``options`` are WorkflowServer's (``token=``, ``header_timeout=``, ...).
    """
    workflow = ReportWorkflow(timeout=30, tracer_provider=tracer_provider)
    return WorkflowServer({"report": workflow}, tracer_provider=tracer_provider, **options)


#: What ``stepstream serve examples/sse_app.py`` serves (module-level instances).
report = ReportWorkflow(timeout=30)


def _port(argv: list[str]) -> int:
    if len(argv) > 1:
        return int(argv[1])
    return int(os.environ.get("SSE_PORT", DEFAULT_PORT))


async def main(port: int) -> None:
    handle = configure_telemetry(service_name="sse-app")
    print(f"serving on http://{HOST}:{port}/workflows/report  (Ctrl-C to stop)", flush=True)
    print(f"telemetry: {handle.endpoint or handle.directory}", flush=True)
    try:
        await make_app().serve(HOST, port)
    finally:
        await handle.aflush()
        handle.shutdown()
    print("stopped")


if __name__ == "__main__":
    asyncio.run(main(_port(sys.argv)))
