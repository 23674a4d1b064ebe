"""Unit tests of the fan-out / fan-in routing core (``FanRouter``): no event loop.

Like tests/test_routing.py, this is where tests import private modules: the batches,
joins and slots of a run are decided as plain data, checked here call by call; the
behaviour is checked through the public API in tests/test_fan_in.py.
"""

from typing import Annotated
from typing import Any

from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream._fanrouter import FanRouter
from stepstream._fanrouter import Start
from stepstream._graph import compiled_graph
from stepstream._routing import QUEUED
from stepstream.collect import Collect
from stepstream.collect import Take
from stepstream.events import CollectionReleaseEvent


class Task(Event):
    n: int = 0


class Done(Event):
    n: int = 0


class Sub(Event):
    n: int = 0


class Left(Event):
    pass


class Right(Event):
    pass


class Flow(Workflow):
    """fan -> work -> (join, first); work may fan out again (inner -> per_inner)."""

    @step
    async def fan(self, ev: StartEvent) -> list[Task]:
        return []

    @step(num_workers=2)
    async def work(self, ev: Task) -> Done | list[Sub]:
        return Done()

    @step
    async def per_inner(self, events: list[Sub]) -> Done:
        return Done()

    @step
    async def join(self, events: list[Done]) -> StopEvent:
        return StopEvent()

    @step
    async def first(self, events: Annotated[list[Done], Collect(Take(1))]) -> None:
        return None

    @step
    async def pair(self, a: Left, b: Right) -> None:
        return None

    @step
    async def sides(self, ev: StartEvent) -> Left | Right:
        return Left()


FAN, WORK, PER_INNER, JOIN, FIRST, PAIR = (
    compiled_graph(Flow).index[n] for n in ("fan", "work", "per_inner", "join", "first", "pair")
)


def router() -> FanRouter:
    return FanRouter(compiled_graph(Flow), "Flow", "run-1")


def released(starts: list[Start]) -> list[tuple[str, list[int], tuple[str, ...]]]:
    """The joins among ``starts``: (step, collected Done/Sub n's, scope it runs in)."""
    names = compiled_graph(Flow).names
    out = []
    for index, _, event, _, ticket in starts:
        if isinstance(event, CollectionReleaseEvent):
            ns = [e.n for e in event.events if isinstance(e, Done | Sub)]
            out.append((names[index], ns, ticket.scope if ticket else ()))
    return out


def test_a_fan_out_is_bound_to_the_joins_its_events_reach() -> None:
    """The graph binds join and first to fan, per_inner to work (its inner fan-out)."""
    graph = compiled_graph(Flow)
    assert graph.bindings[FAN] == (JOIN, FIRST)
    assert graph.bindings[WORK] == (PER_INNER,)
    assert graph.fan


def test_a_batch_releases_its_joins_once_its_last_invocation_finishes() -> None:
    """Deliveries in the batch count as live work; the last finish releases every join."""
    r = router()
    scope = r.open_batch(FAN, (), "producer")
    assert scope == ("fan#0",)
    starts = []
    for n in range(3):
        got = r.route(Task(n=n), "producer", None, False, scope)
        assert not isinstance(got, list) or [s[0] for s in got] == [WORK]
        assert isinstance(got, list)
        starts += got
    assert [s[1] for s in starts] == [0, 1, QUEUED]  # two workers, the third queued
    assert r.finished(scope) == []  # the producer is done routing: three tasks live
    first = r.route(Done(n=2), "w2", None, False, scope)
    assert released(first if isinstance(first, list) else []) == [("first", [2], ())]
    assert r.finished(scope) == []
    r.route(Done(n=0), "w0", None, False, scope)
    assert r.finished(scope) == []
    assert r.open_batches() == ["fan#0"]
    assert released(r.finished(scope)) == [("join", [2, 0], ())]
    assert r.open_batches() == []


def test_an_empty_batch_releases_at_once_with_nothing() -> None:
    """A batch finished before any delivery releases its joins with no events."""
    r = router()
    scope = r.open_batch(FAN, (), "producer")
    assert released(r.finished(scope)) == [("join", [], ()), ("first", [], ())]


def test_a_nested_batch_holds_its_parent_open_and_releases_into_it() -> None:
    """An inner batch is live work of the outer one; its join runs in the outer scope."""
    r = router()
    outer = r.open_batch(FAN, (), "producer")
    r.route(Task(n=0), "producer", None, False, outer)
    assert r.finished(outer) == []  # one task live
    inner = r.open_batch(WORK, outer, "w0")
    assert inner == ("fan#0", "work#1")
    r.route(Sub(n=7), "w0", None, False, inner)  # straight into per_inner's buffer
    # The inner producer routed its elements and no invocation is live: released.
    assert released(r.finished(inner)) == [("per_inner", [7], ("fan#0",))]
    assert r.finished(outer) == []  # the task that fanned out is done; per_inner is live
    assert r.open_batches() == ["fan#0"]
    assert released(r.finished(outer)) == [("join", [], ()), ("first", [], ())]


def test_an_event_outside_any_batch_is_dropped_by_a_join_and_reported() -> None:
    """A join ignores an event with no batch; the router records why, for the run to warn."""
    r = router()
    got = r.route(Done(n=1), None, None, True, ())
    assert got == []
    why = "it was not returned inside a fan-out batch"
    assert r.dropped == [("join", "Done", why), ("first", "Done", why)]


def test_a_several_parameter_step_starts_once_one_of_each_arrived() -> None:
    """pair(a: Left, b: Right) starts on the completing arrival, with both as its args."""
    r = router()
    left = Left()
    assert r.route(left, "o1", None, False, ()) == []
    right = Right()
    got = r.route(right, "o2", None, False, ())
    assert isinstance(got, list)
    [(index, worker, event, origin, ticket)] = got
    assert (index, worker, event, origin) == (PAIR, 0, right, "o2")
    assert ticket is not None
    assert (ticket.args, ticket.origins) == ((left, right), ("o1", "o2"))


def test_a_snapshot_mid_batch_resumes_with_the_collected_events_and_scopes() -> None:
    """snapshot then resume: the open batch, its join buffer and the scoped queue survive."""
    r = router()
    scope = r.open_batch(FAN, (), "producer")
    running: Any = r.route(Task(n=0), "p", None, False, scope)
    r.route(Task(n=1), "p", None, False, scope)
    r.route(Task(n=2), "p", None, False, scope)  # queued: both workers busy
    r.finished(scope)
    r.route(Done(n=5), "w", None, False, scope)
    r.route(Left(), "o", None, False, ())
    snap = r.snapshot([(WORK, running[0][2], running[0][4], 3)])
    assert [b.batch_id for b in snap.batches] == ["fan#0"]
    assert snap.batches[0].buffers == {"join": [Done(n=5)]}
    assert snap.batches[0].released == ["first"]
    assert snap.slots == [("pair", [Left()])]
    assert snap.tickets == {0: (scope, None), 1: (scope, None)}
    assert snap.keys == {0: 3}  # the invocation in flight keeps its number; the queued has none

    again = router()
    starts = again.resume(snap)
    assert [(step, s[1], key) for step, s, key in starts] == [("work", 0, 3), ("work", 1, None)]
    assert again.open_batches() == ["fan#0"]
    assert again.finished(scope) == []
    assert released(again.finished(scope)) == [("join", [5], ())]
    assert again.open_batch(FAN, (), None) == ("fan#1",)
