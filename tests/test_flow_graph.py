"""flow_graph(): the graph the server's /representation answers, with unique node ids."""

from __future__ import annotations

from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.drawing import flow_graph


class review(Event):  # noqa: N801 - named like the step on purpose
    text: str = ""


ReviewEvent = review  # the steps name it through an alias: "review" is also a step


class Clash(Workflow):
    @step
    async def review(self, ev: StartEvent) -> ReviewEvent:
        return ReviewEvent(text="x")

    @step
    async def finish(self, ev: ReviewEvent) -> StopEvent:
        return StopEvent(result=ev.text)


def test_an_event_named_like_a_step_gets_its_own_node_id() -> None:
    """Every node id is unique and every edge end names a node."""
    graph = flow_graph(Clash)
    ids = [n["id"] for n in graph["nodes"]]
    assert len(ids) == len(set(ids)), ids
    assert {"review", "review (event)"} <= set(ids)
    for edge in graph["edges"]:
        assert edge["source"] in ids
        assert edge["target"] in ids
    assert {"source": "review", "target": "review (event)"} in graph["edges"]
    assert {"source": "review (event)", "target": "finish"} in graph["edges"]


def test_ids_are_the_plain_names_when_nothing_clashes() -> None:
    """Without a clash the ids are the names, as LlamaIndex's are."""

    class Plain(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    ids = {n["id"] for n in flow_graph(Plain)["nodes"]}
    assert ids == {"StartEvent", "StopEvent", "only"}
