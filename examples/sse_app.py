"""A minimal web app that streams a workflow run to the client as Server-Sent Events.

Standard library only (``asyncio.start_server``), plus stepstream and OpenTelemetry.
``GET /run?topic=whales`` starts one run of ``ReportWorkflow`` per request and answers
with ``Content-Type: text/event-stream``: one message per streamed event, the last one
the terminal ``StopEvent`` carrying the final result (or ``WorkflowFailedEvent`` /
``WorkflowTimedOutEvent``), then the connection closes::

    event: ProgressEvent
    data: {"msg":"researching whales"}

    ...

    event: StopEvent
    data: {"result":"Whales: ..."}

Each request is a SERVER span, ``GET /run``, and the run starts inside it, so the run
span ``invoke_workflow ReportWorkflow`` is a child of the request span (one trace per
request). ``make_app(tracer_provider=...)`` uses the given provider for both.

Run it, then open the URL or use curl::

    python examples/sse_app.py [PORT]     # or SSE_PORT=...; default 8765, on 127.0.0.1
    curl -N 'http://127.0.0.1:8765/run?topic=whales'
    stepstream run examples/sse_app.py --input topic=whales   # the workflow alone

``main()`` calls ``stepstream.configure_telemetry()``, so the request and run spans are
written to ``.stepstream/traces.jsonl`` (``stepstream traces list``).
"""

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from stepstream import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    configure_telemetry,
    step,
)
from stepstream.testing import FakeStreamingLLM

DEFAULT_PORT = 8765
HOST = "127.0.0.1"

App = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


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


def sse_message(event: str, data: str) -> bytes:
    """Encode one Server-Sent Events message (``data`` is one line of JSON)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


def _response_head(status: str, content_type: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
    ).encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """Return the method and target of an HTTP/1.1 request; headers are read and ignored."""
    request_line = (await reader.readline()).decode("latin-1").strip()
    while (await reader.readline()) not in {b"\r\n", b"\n", b""}:
        pass
    method, _, rest = request_line.partition(" ")
    target, _, _ = rest.partition(" ")
    return method, target


def make_app(tracer_provider: TracerProvider | None = None) -> App:
    """Return the connection handler: one request per connection, one run per request.

    Spans go to ``tracer_provider`` (the global provider when None), for the request
    span and for the runs alike.
    """
    tracer = trace.get_tracer("sse_app", tracer_provider=tracer_provider)
    workflow = ReportWorkflow(timeout=30, tracer_provider=tracer_provider)  # runs concurrently

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):  # the client went away: nobody to tell
                await respond(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target = await _read_request(reader)
        url = urlsplit(target)
        if method != "GET" or url.path != "/run":
            writer.write(_response_head("404 Not Found", "text/plain"))
            writer.write(b"try GET /run?topic=whales\n")
            await writer.drain()
            return
        topic = parse_qs(url.query).get("topic", ["whales"])[0]
        with tracer.start_as_current_span(
            "GET /run",
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": url.path,
                "url.query": url.query,
            },
        ) as span:
            # The run starts while the request span is current, so it becomes the parent.
            handler = workflow.run(topic=topic)
            span.set_attribute("stepstream.run_id", handler.run_id)
            writer.write(_response_head("200 OK", "text/event-stream"))
            span.set_attribute("http.response.status_code", 200)
            try:
                async for ev in handler.stream_events():
                    writer.write(sse_message(type(ev).__name__, ev.model_dump_json()))
                    await writer.drain()
            except ConnectionError:
                span.set_status(Status(StatusCode.ERROR, "client disconnected"))
                await handler.cancel_run()
            try:
                await handler
            except Exception as exc:  # noqa: BLE001 - the client got it as the terminal event
                span.record_exception(exc)

    return handle


async def serve(
    host: str = HOST, port: int = DEFAULT_PORT, app: App | None = None
) -> asyncio.Server:
    """Start serving ``app`` (default ``make_app()``) and return the server; port 0 picks one."""
    return await asyncio.start_server(app or make_app(), host, port)


def _port(argv: list[str]) -> int:
    if len(argv) > 1:
        return int(argv[1])
    return int(os.environ.get("SSE_PORT", DEFAULT_PORT))


async def main(port: int) -> None:
    handle = configure_telemetry(service_name="sse-app")
    server = await serve(HOST, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"serving on http://{HOST}:{bound}/run?topic=whales  (Ctrl-C to stop)", flush=True)
    print(f"telemetry: {handle.endpoint or handle.directory}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        async with server:
            await stop.wait()
    finally:
        await handle.aflush()
        handle.shutdown()
    print("stopped")


if __name__ == "__main__":
    asyncio.run(main(_port(sys.argv)))
