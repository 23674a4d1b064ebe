"""The example programs: each runs as a script, and its workflow has the documented trace."""

import asyncio
import json
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

from _helpers import answer_prompts
from _helpers import drain
from _helpers import example_output
from _helpers import load_example
from _helpers import parent_id
from _helpers import span_id
from _helpers import trace_id
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StopEvent
from stepstream import WorkflowHandler
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

# -- helpers ----------------------------------------------------------------------------


async def run_example(
    name: str, workflow: str, sdk: CapturedTelemetry, **start: Any
) -> tuple[ModuleType, list[Event], Any]:
    """Run ``workflow`` of examples/<name>.py, recording into ``sdk``: module, stream, result."""
    mod = load_example(name)
    handler: WorkflowHandler = getattr(mod, workflow)(
        timeout=10, tracer_provider=sdk.tracer_provider
    ).run(**start)
    events = await drain(handler, timeout=10)
    return mod, events, await handler


# -- fan_out ----------------------------------------------------------------------------


def test_fan_out_script_prints_progress_and_sum(tmp_path: Path) -> None:
    """Running examples/fan_out.py prints a line per item and the sum of the squares."""
    out = example_output("fan_out", tmp_path)
    assert "dispatched 8 items" in out
    for i in range(8):
        assert f"item {i}: {i} squared is {i * i}" in out
    assert "joined 8 results" in out
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49]" in out
    assert "sum: 140" in out


@pytest.mark.asyncio
async def test_fan_out_join_span_links_every_worker_span(sdk: CapturedTelemetry) -> None:
    """The join span that completes the collection links to the span of every worker."""
    mod, events, result = await run_example("fan_out", "FanOutWorkflow", sdk, n=6)
    assert result == {"squares": [0, 1, 4, 9, 16, 25], "sum": 55}
    progress = [ev for ev in events if isinstance(ev, mod.ProgressEvent)]
    assert len(progress) == 1 + 6 + 1
    workers = sdk.named("run_step square")
    assert len(workers) == 6
    assert len({s.attributes[attrs.STEP_WORKER] for s in workers if s.attributes}) <= 4
    joins = sdk.named("run_step join")
    assert len(joins) == 6  # one invocation per Result; the last one completes the join
    final = [s for s in joins if s.attributes and s.attributes[attrs.EVENT_OUT] == "StopEvent"]
    assert len(final) == 1
    linked = {link.context.span_id for link in final[0].links}
    assert linked == {span_id(s) for s in workers}
    (run,) = sdk.named("invoke_workflow FanOutWorkflow")
    assert all(parent_id(s) == span_id(run) for s in [*workers, *joins])


# -- human_in_the_loop ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_human_in_the_loop_answered_from_the_stream() -> None:
    """Answering the InputRequiredEvent through handler.ctx resumes the step with the name."""
    mod = load_example("human_in_the_loop")
    handler: WorkflowHandler = mod.GreetingWorkflow(timeout=10).run()
    events = await answer_prompts(handler, HumanResponseEvent(response="Ada"), timeout=10)
    questions = [ev.get("prefix") for ev in events if isinstance(ev, InputRequiredEvent)]
    assert questions == ["What is your name? "]
    assert await handler == "Hello, Ada!"


def test_human_in_the_loop_script_reads_the_answer_from_stdin(tmp_path: Path) -> None:
    """Running examples/human_in_the_loop.py with "Ada" on stdin greets Ada."""
    out = example_output("human_in_the_loop", tmp_path, stdin="Ada\n")
    assert "What is your name? " in out
    assert "Hello, Ada!" in out


# -- retries ----------------------------------------------------------------------------


def test_retries_script_prints_a_line_per_attempt(tmp_path: Path) -> None:
    """Running examples/retries.py prints two failed attempts, a successful third, the result."""
    assert example_output("retries", tmp_path) == textwrap.dedent(
        """\
        attempt 1: service unavailable
        attempt 2: service unavailable
        attempt 3: ok
        fetched after 3 attempts
        """
    )


@pytest.mark.asyncio
async def test_retries_record_one_span_per_attempt(sdk: CapturedTelemetry) -> None:
    """Each attempt of the flaky step is a span; the first two are ERROR, the third is not."""
    mod, events, result = await run_example("retries", "FlakyWorkflow", sdk)
    assert result == "fetched after 3 attempts"
    assert [ev.attempt for ev in events if isinstance(ev, mod.AttemptEvent)] == [1, 2, 3]
    attempts = sdk.named("run_step fetch")
    assert [s.attributes[attrs.STEP_ATTEMPT] for s in attempts if s.attributes] == [1, 2, 3]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [s.attributes[attrs.STEP_STATUS] for s in attempts if s.attributes] == [
        "error",
        "error",
        "ok",
    ]
    assert all(
        s.attributes and s.attributes[attrs.ERROR_TYPE] == "ConnectionError" for s in attempts[:2]
    )


# -- nested -----------------------------------------------------------------------------


def test_nested_script_relays_inner_progress(tmp_path: Path) -> None:
    """Running examples/nested.py prints the outer and the relayed inner progress in order."""
    lines = example_output("nested", tmp_path).splitlines()
    assert lines[:6] == [
        "[outer] researching whales",
        "[inner] outlined whales: habitat, diet, behaviour",
        "[inner] drafted habitat",
        "[inner] drafted diet",
        "[inner] drafted behaviour",
        "[outer] published",
    ]
    assert lines[6].startswith("The habitat of whales is fascinating.")


@pytest.mark.asyncio
async def test_nested_inner_run_span_is_a_child_of_the_outer_step_span(
    sdk: CapturedTelemetry,
) -> None:
    """The inner run span's parent is the outer step that ran it, in the outer run's trace."""
    mod, events, result = await run_example("nested", "OuterWorkflow", sdk, topic="otters")
    assert result.startswith("The habitat of otters is fascinating.")
    sources = [ev.source for ev in events if isinstance(ev, mod.ProgressEvent)]
    assert sources == ["outer", "inner", "inner", "inner", "inner", "outer"]
    assert sum(isinstance(ev, StopEvent) for ev in events) == 1  # the inner one is not relayed
    (outer_run,) = sdk.named("invoke_workflow OuterWorkflow")
    (research,) = sdk.named("run_step research")
    (inner_run,) = sdk.named("invoke_workflow InnerWorkflow")
    assert parent_id(research) == span_id(outer_run)
    assert parent_id(inner_run) == span_id(research)
    assert trace_id(inner_run) == trace_id(outer_run)
    for name in ("run_step outline", "run_step draft"):
        (inner_step,) = sdk.named(name)
        assert parent_id(inner_step) == span_id(inner_run)


# -- sse_app ----------------------------------------------------------------------------


async def http_get(port: int, target: str) -> tuple[str, str]:
    """Send ``GET target`` to 127.0.0.1:port; return the response head and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()  # the server closes the connection when done
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return head, body


async def get_from_sse_app(target: str, *app: Any) -> tuple[str, str]:
    """Serve examples/sse_app.py (``app`` as given to serve) on a free port and GET ``target``."""
    server: asyncio.Server = await load_example("sse_app").serve("127.0.0.1", 0, *app)
    try:
        port: int = server.sockets[0].getsockname()[1]
        return await http_get(port, target)
    finally:
        server.close()
        await server.wait_closed()


def parse_sse(body: str) -> list[tuple[str, Any]]:
    """Split an SSE body into (event name, decoded JSON data) pairs."""
    messages: list[tuple[str, Any]] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"event", "data"}, block
        messages.append((fields["event"], json.loads(fields["data"])))
    return messages


@pytest.mark.asyncio
async def test_sse_app_streams_events_under_the_request_span(sdk: CapturedTelemetry) -> None:
    """GET /run streams each event and the result as SSE; the run span's parent is the request."""
    app = load_example("sse_app").make_app(sdk.tracer_provider)
    head, body = await get_from_sse_app("/run?topic=otters", app)
    status, *headers = head.split("\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert "Content-Type: text/event-stream" in headers
    messages = parse_sse(body)
    assert [name for name, _ in messages] == ["ProgressEvent"] * 6 + ["StopEvent"]
    assert messages[0][1] == {"msg": "researching otters"}
    assert "".join(data["msg"] for _, data in messages[1:5]) == "otters are remarkable animals."
    assert messages[-1][1] == {"result": "Otters: otters are remarkable animals."}
    (request,) = sdk.named("GET /run")
    (run,) = sdk.named("invoke_workflow ReportWorkflow")
    assert request.kind is SpanKind.SERVER
    assert parent_id(request) is None
    assert parent_id(run) == span_id(request)
    assert trace_id(run) == trace_id(request)
    assert request.attributes is not None
    assert run.attributes is not None
    assert request.attributes["stepstream.run_id"] == run.attributes[attrs.RUN_ID]


@pytest.mark.asyncio
async def test_sse_app_answers_other_paths_with_404() -> None:
    """A request for anything but GET /run gets a 404 and no run."""
    head, body = await get_from_sse_app("/elsewhere")
    assert head.startswith("HTTP/1.1 404 Not Found")
    assert "GET /run" in body
