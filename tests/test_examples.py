"""The example programs: each runs as a script, and its workflow has the documented trace."""

import asyncio
import json
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
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
from _live_server import serve_in_thread
from _live_server import trickle
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


def parse_sse(body: str) -> list[tuple[str, str, Any]]:
    """Split an SSE body into (id, event name, decoded JSON data) triples."""
    messages: list[tuple[str, str, Any]] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"id", "event", "data"}, block
        messages.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return messages


@pytest.mark.asyncio
async def test_sse_app_streams_events_under_the_request_span(sdk: CapturedTelemetry) -> None:
    """A run started over HTTP streams each event and the result as SSE frames with ids;
    the run span's parent is the request span."""
    with serve_in_thread(load_example("sse_app").make_app(sdk.tracer_provider)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            started = await http.post(
                "/workflows/report/run-nowait", json={"start_event": {"topic": "otters"}}
            )
            hid = started.json()["handler_id"]
            response = await http.get(f"/events/{hid}", params={"after_sequence": -1})
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = parse_sse(response.text)
    assert [seq for seq, _, _ in messages] == [str(i) for i in range(7)]
    assert [name for _, name, _ in messages] == ["ProgressEvent"] * 6 + ["StopEvent"]
    assert messages[0][2]["value"] == {"msg": "researching otters"}
    deltas = "".join(data["value"]["msg"] for _, _, data in messages[1:5])
    assert deltas == "otters are remarkable animals."
    assert messages[-1][2]["value"] == {"result": "Otters: otters are remarkable animals."}
    (request,) = sdk.named("POST /workflows/{name}/run-nowait")
    (run,) = sdk.named("invoke_workflow ReportWorkflow")
    assert request.kind is SpanKind.SERVER
    assert parent_id(request) is None
    assert parent_id(run) == span_id(request)
    assert trace_id(run) == trace_id(request)
    assert started.json()["run_id"] == (run.attributes or {})[attrs.RUN_ID]


@pytest.mark.asyncio
async def test_sse_app_keeps_answering_under_half_open_connections() -> None:
    """50 clients trickling request heads do not stall a normal run; they are timed out."""
    server = load_example("sse_app").make_app(header_timeout=1.0)
    with serve_in_thread(server) as base:
        port = int(base.rsplit(":", 1)[1])
        opened: list[asyncio.StreamWriter] = []
        stop = asyncio.Event()
        slow = [asyncio.ensure_future(trickle(port, opened, stop)) for _ in range(50)]
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                done = await http.post("/workflows/report/run", json={})
            assert done.status_code == 200
            hung_up = await asyncio.wait_for(asyncio.gather(*slow), timeout=10)
        finally:
            stop.set()
            await asyncio.gather(*slow, return_exceptions=True)
            for writer in opened:
                writer.close()
    assert done.json()["result"]["value"]["result"].startswith("Whales: ")
    assert all(hung_up)
