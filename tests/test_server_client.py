"""The peer's published client (llama-agents-client) against ``stepstream serve``, unchanged.

The client side uses LlamaIndex's own event classes, as the client's users do; the
server validates them into the served workflow's classes by name.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from llama_agents.client import WorkflowClient
from workflows.events import Event as LlamaEvent
from workflows.events import HumanResponseEvent as LlamaHumanResponse
from workflows.events import StartEvent as LlamaStartEvent

from _live_server import ServeProcess
from _live_server import serve_process


class InputEvent(LlamaStartEvent):
    """The client's copy of the served GreetingWorkflow's start event."""

    greeting: str
    name: str


class GreetEvent(LlamaEvent):
    greeting: str
    exclamation_marks: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``stepstream serve tests/_served_app.py`` for the module."""
    with serve_process(cwd=tmp_path_factory.mktemp("serve")) as process:
        yield process


@pytest.fixture
def client(server: ServeProcess) -> WorkflowClient:
    return WorkflowClient(base_url=server.url)


async def collect(client: WorkflowClient, handler_id: str, **kwargs: Any) -> list[Any]:
    """Every event of the handler's stream, within 20 s."""
    async with asyncio.timeout(20):
        return [ev async for ev in client.get_workflow_events(handler_id, **kwargs)]


@pytest.mark.asyncio
async def test_health_list_and_introspection(client: WorkflowClient) -> None:
    """is_healthy, list_workflows, the schemas and the graph answer as the client expects."""
    assert (await client.is_healthy()).status == "healthy"
    names = (await client.list_workflows()).workflows
    assert set(names) == {"greeting", "counting", "asking", "crashing", "sleeping"}
    schema = await client.get_workflow_schema("greeting")
    assert schema.start["title"] == "InputEvent"
    assert schema.stop["title"] == "OutputEvent"
    titles = {e["title"] for e in (await client.get_workflow_events_schema("greeting")).events}
    assert {"InputEvent", "GreetEvent", "OutputEvent", "HumanResponseEvent"} <= titles
    graph = (await client.get_workflow_graph("greeting")).graph
    assert graph.name == "GreetingWorkflow"
    assert {n.id for n in graph.nodes} >= {"first_step", "second_step", "GreetEvent"}
    with pytest.raises(httpx.HTTPStatusError, match="404 Not Found"):
        await client.get_workflow_schema("missing")


@pytest.mark.asyncio
async def test_run_waits_for_the_result(client: WorkflowClient) -> None:
    """run_workflow answers with the completed handler and its OutputEvent result."""
    handler = await client.run_workflow(
        "greeting", start_event=InputEvent(greeting="hello", name="John")
    )
    assert handler.status == "completed"
    assert handler.result is not None
    assert handler.result.type == "OutputEvent"
    assert handler.result.types == ["StopEvent"]
    assert handler.result.value == {"greeting": "hello John!!!"}
    again = await client.get_handler(handler.handler_id)
    assert again.run_id == handler.run_id
    assert again.completed_at is not None


@pytest.mark.asyncio
async def test_run_nowait_then_stream(client: WorkflowClient) -> None:
    """run_workflow_nowait then get_workflow_events: the stream, in order, ending at the result."""
    handler = await client.run_workflow_nowait(
        "greeting", start_event=InputEvent(greeting="hi", name="Ada")
    )
    stream = client.get_workflow_events(handler.handler_id)
    async with asyncio.timeout(20):
        events = [(ev, stream.last_sequence) async for ev in stream]
    assert [(ev.type, seq) for ev, seq in events] == [
        ("InputEvent", 0),
        ("GreetEvent", 1),
        ("OutputEvent", 2),
    ]
    assert events[0][0].value == {"greeting": "hi", "name": "Ada"}
    assert (await client.get_handler(handler.handler_id)).status == "completed"


class DropOnce(httpx.AsyncBaseTransport):
    """A transport that breaks the first event stream after ``after`` chunks (a lost connection)."""

    def __init__(self, after: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._after = after
        self.streams = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.startswith("/events/"):
            return response
        self.streams += 1
        if self.streams > 1:
            return response
        inner = response.stream
        after = self._after

        class Broken(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                seen = 0
                async for chunk in inner:  # type: ignore[union-attr]
                    yield chunk
                    seen += 1
                    if seen >= after:
                        msg = "connection reset (forced by the test)"
                        raise httpx.ReadError(msg)

            async def aclose(self) -> None:
                await inner.aclose()  # type: ignore[union-attr]

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Broken(), request=request
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.asyncio
async def test_stream_resumes_after_a_forced_disconnect(server: ServeProcess) -> None:
    """The client reconnects after a dropped stream, after its last seq: no gap, no duplicate."""
    transport = DropOnce(after=5)
    async with httpx.AsyncClient(base_url=server.url, transport=transport) as http:
        client = WorkflowClient(httpx_client=http)
        handler = await client.run_workflow_nowait("counting", start_event={"n": 40, "delay": 0.01})
        events = await collect(client, handler.handler_id)
    assert transport.streams == 2  # dropped once, resumed once
    ticks = [ev.value["i"] for ev in events if ev.type == "Tick"]
    assert ticks == list(range(40))
    assert events[-1].type == "StopEvent"
    assert events[-1].value == {"result": 40}


@pytest.mark.asyncio
async def test_human_in_the_loop(client: WorkflowClient) -> None:
    """The client answers the InputRequiredEvent with send_event; the run ends with the answer."""
    handler = await client.run_workflow_nowait("asking")
    stream = client.get_workflow_events(handler.handler_id)
    seen: list[str] = []
    async with asyncio.timeout(20):
        async for ev in stream:
            seen.append(ev.type)
            if ev.type == "InputRequiredEvent":
                assert ev.value == {"_data": {"prefix": "name? "}}
                sent = await client.send_event(
                    handler.handler_id, LlamaHumanResponse(response="Ada")
                )
                assert sent.status == "sent"
    assert seen == ["InputRequiredEvent", "StopEvent"]
    done = await client.get_handler(handler.handler_id)
    assert done.result is not None
    assert done.result.value == {"result": "hello Ada"}


@pytest.mark.asyncio
async def test_cancel_and_list_handlers(client: WorkflowClient) -> None:
    """cancel_handler cancels a running handler; get_handlers filters by status and workflow."""
    handler = await client.run_workflow_nowait("sleeping")
    assert (await client.cancel_handler(handler.handler_id)).status == "cancelled"
    events = await collect(client, handler.handler_id)
    assert [ev.type for ev in events] == ["Tick", "WorkflowCancelledEvent"]
    cancelled = await client.get_handlers(status=["cancelled"], workflow_name=["sleeping"])
    assert handler.handler_id in {h.handler_id for h in cancelled.handlers}
    assert all(h.status == "cancelled" for h in cancelled.handlers)
    greetings = await client.get_handlers(workflow_name=["greeting"])
    assert all(h.workflow_name == "greeting" for h in greetings.handlers)
    purged = await client.cancel_handler(handler.handler_id, purge=True)
    assert purged.status == "deleted"
    with pytest.raises(httpx.HTTPStatusError, match="404 Not Found"):
        await client.get_handler(handler.handler_id)


@pytest.mark.asyncio
async def test_failed_run_and_unknown_workflow(client: WorkflowClient) -> None:
    """A failing run is a failed handler naming the error; an unknown workflow is a 404."""
    with pytest.raises(httpx.HTTPStatusError, match="500") as failed:
        await client.run_workflow("crashing")
    body = failed.value.response.json()
    assert body["status"] == "failed"
    assert body["error"] == "ValueError: Workflow crashed intentionally"
    with pytest.raises(httpx.HTTPStatusError, match=r"404 Not Found.*'nope'"):
        await client.run_workflow("nope")


def test_server_logs_carry_correlation_keys(server: ServeProcess) -> None:
    """Every server line about a run names its handler, run and trace."""
    lines: list[str] = []
    for _ in range(100):  # the server writes its lines every 0.2 s: wait (bounded) for them
        lines = [line for line in list(server.lines) if '"run_started"' in line]
        if lines:
            break
        time.sleep(0.05)
    assert lines, "no run_started line yet"
    assert all('"trace_id"' in line and '"run_id"' in line for line in lines)
