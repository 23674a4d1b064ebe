"""Schemas and graphs of workflows whose events hold types JSON Schema cannot describe."""

from __future__ import annotations

import httpx
import pytest

from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.drawing import flow_graph
from stepstream.server import WorkflowServer


class Opaque:
    """A plain class: pydantic holds it, JSON Schema cannot describe it."""


class CarryingStart(StartEvent):
    name: str
    handle: Opaque | None = None


class CarriedEvent(Event):
    handle: Opaque


class Carrying(Workflow):
    @step
    async def first(self, ev: CarryingStart) -> CarriedEvent:
        return CarriedEvent(handle=Opaque())

    @step
    async def second(self, ev: CarriedEvent) -> StopEvent:
        return StopEvent(result="ok")


@pytest.mark.asyncio
async def test_schema_endpoints_describe_what_they_can_and_name_what_they_cannot() -> None:
    """/schema, /events and /representation answer 200; the opaque field is named, not a 500."""
    server = WorkflowServer({"carrying": Carrying()})
    transport = httpx.ASGITransport(server)
    async with server.lifespan(), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        schema = await c.get("/workflows/carrying/schema")
        assert schema.status_code == 200, schema.text
        start = schema.json()["start"]
        assert start["properties"]["name"] == {"title": "Name", "type": "string"}
        assert "Opaque" in str(start["properties"]["handle"])
        events = await c.get("/workflows/carrying/events")
        assert events.status_code == 200, events.text
        assert {e["title"] for e in events.json()["events"]} >= {"CarryingStart", "CarriedEvent"}
        graph = await c.get("/workflows/carrying/representation")
        assert graph.status_code == 200, graph.text


def test_flow_graph_of_an_opaque_event_has_a_schema() -> None:
    """The graph's event node still carries a schema naming the field's type."""
    nodes = {n["id"]: n for n in flow_graph(Carrying)["nodes"]}
    schema = nodes["CarriedEvent"]["event_schema"]
    assert schema["title"] == "CarriedEvent"
    assert "handle" in schema["properties"]
    assert "Opaque" in str(schema["properties"]["handle"])
