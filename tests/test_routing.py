"""Unit tests of the pure routing core: no event loop, plain calls and return values.

These are the one place tests import private modules (``stepstream._routing``,
``_collect``, ``_outcome``, ``_graph``, ``_spec``): the routing core makes every
decision of a run as plain data, so its decisions are checked here directly, while the
rest of the suite checks behaviour through the public API. Graphs come from small
``Workflow`` subclasses compiled with ``compiled_graph``, or from ``StepSpec`` objects
built directly for the random graphs of the property tests.
"""

from collections import deque
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowCancelledEvent
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowTimedOutEvent
from stepstream import WorkflowTimeoutError
from stepstream import step
from stepstream._collect import Collector
from stepstream._graph import Graph
from stepstream._graph import compiled_graph
from stepstream._instrument import RunInfo
from stepstream._instrument import StepInfo
from stepstream._outcome import Outcome
from stepstream._outcome import cancelled
from stepstream._outcome import failed
from stepstream._outcome import succeeded
from stepstream._outcome import timed_out
from stepstream._routing import QUEUED
from stepstream._routing import Action
from stepstream._routing import Router
from stepstream._routing import RunState
from stepstream._routing import Waiter
from stepstream._routing import default_waiter_id
from stepstream._routing import result_action
from stepstream._routing import retry_delay
from stepstream._spec import StepSpec
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed

# -- events and a small workflow ------------------------------------------------------------


class Ping(Event):
    n: int = 0


class Parent(Event):
    pass


class Child(Parent):
    pass


class Other(Event):
    pass


class Stray(Event):
    """Accepted by no step of :class:`Fan`."""


class Verdict(StopEvent):
    """A StopEvent subclass: the run's result is the event itself."""

    label: str = ""


class Fan(Workflow):
    """Four steps in this order; ``on_parent``, ``on_ping`` and ``on_child`` take a ``Child``."""

    @step(num_workers=2)
    async def begin(self, ev: StartEvent) -> Ping | Child | Other | None:
        return None

    @step(num_workers=1)
    async def on_parent(self, ev: Parent) -> StopEvent | None:
        return None

    @step(num_workers=3)
    async def on_ping(self, ev: Ping | Child) -> StopEvent | None:
        return None

    @step(num_workers=2)
    async def on_child(self, ev: Child | Other) -> None:
        return None


BEGIN, ON_PARENT, ON_PING, ON_CHILD = range(4)

Decision = Waiter[str] | list[tuple[int, int]] | None


def fan_router() -> Router[str, str]:
    """A fresh router over the graph of :class:`Fan`, run ``r1``."""
    return Router(compiled_graph(Fan), "Fan", "r1")


def ended_message(name: str) -> str:
    """The refusal ``send_problem`` gives for a ``name`` event once run r1 of Fan ended."""
    return (
        f"send_event({name}): run r1 of workflow Fan has ended, so nothing can receive "
        "it; check handler.done() before sending"
    )


def state_of(router: Router[str, str]) -> RunState:
    """The router's state, read afresh (so that type checkers do not narrow it)."""
    return router.state


def starts(decision: Decision) -> list[tuple[int, int]]:
    """The invocations a ``deliver`` decision starts now (failing if a waiter took the event).

    Steps that got the event in their backlog (slot ``QUEUED``) are left out.
    """
    assert isinstance(decision, list)
    return [(i, w) for i, w in decision if w != QUEUED]


# -- the graph under test -----------------------------------------------------------------


def test_fan_graph_is_in_definition_order() -> None:
    """The compiled Fan graph lists its steps in definition order with their worker counts."""
    graph = compiled_graph(Fan)
    assert graph.names == ("begin", "on_parent", "on_ping", "on_child")
    assert [s.num_workers for s in graph.specs] == [2, 1, 3, 2]


# -- RunState transitions -----------------------------------------------------------------


def test_end_moves_running_to_ending_once() -> None:
    """end() moves RUNNING to ENDING and returns True only the first time."""
    router = fan_router()
    assert state_of(router) is RunState.RUNNING
    assert router.end() is True
    assert state_of(router) is RunState.ENDING
    assert router.end() is False
    assert state_of(router) is RunState.ENDING


def test_end_after_close_keeps_ended() -> None:
    """end() on an ended run returns False and leaves it ENDED."""
    router = fan_router()
    assert router.close() is True
    assert router.end() is False
    assert router.state is RunState.ENDED


@pytest.mark.parametrize("end_first", [True, False])
def test_close_moves_to_ended_once(end_first: bool) -> None:
    """close() moves a running or ending run to ENDED and returns True only the first time."""
    router = fan_router()
    if end_first:
        router.end()
    assert router.close() is True
    assert state_of(router) is RunState.ENDED
    assert router.close() is False
    assert state_of(router) is RunState.ENDED


@pytest.mark.parametrize("state", [RunState.ENDING, RunState.ENDED])
@pytest.mark.parametrize("target", [None, "on_ping", "on_parent", "nope"])
def test_send_problem_refuses_once_not_running(state: RunState, target: str | None) -> None:
    """send_problem refuses any send, targeted or not, with the "has ended" message."""
    router = fan_router()
    router.end()
    if state is RunState.ENDED:
        router.close()
    assert router.send_problem(Ping(), target) == ended_message("Ping")
    assert router.send_problem(Stray(), target) == ended_message("Stray")


def test_send_problem_is_none_for_a_routable_event() -> None:
    """send_problem has no objection to an event some step accepts, or to a fitting target."""
    router = fan_router()
    assert router.send_problem(Ping(), None) is None
    assert router.send_problem(Child(), None) is None
    assert router.send_problem(Child(), "on_parent") is None


@pytest.mark.parametrize("state", [RunState.ENDING, RunState.ENDED])
def test_next_job_is_none_once_not_running(state: RunState) -> None:
    """next_job returns None once the run is not RUNNING, even with a backlog."""
    router = fan_router()
    parents = [Parent(), Parent()]
    assert starts(router.deliver(parents[0], "o0", None)) == [(ON_PARENT, 0)]
    assert starts(router.deliver(parents[1], "o1", None)) == []
    router.end()
    if state is RunState.ENDED:
        router.close()
    assert router.next_job(ON_PARENT) is None
    assert router.next_job(ON_PARENT) is None


# -- deliver: steps, worker slots and backlogs ----------------------------------------------


def test_deliver_starts_every_step_accepting_the_type() -> None:
    """An event starts one invocation in every step that accepts its type."""
    router = fan_router()
    assert starts(router.deliver(Ping(), "o", None)) == [(ON_PING, 0)]
    assert starts(router.deliver(Other(), "o", None)) == [(ON_CHILD, 0)]
    assert starts(router.deliver(StartEvent(), "o", None)) == [(BEGIN, 0)]


def test_deliver_includes_steps_accepting_a_base_class() -> None:
    """A subclass event also goes to the steps that accept one of its base classes."""
    router = fan_router()
    decision = starts(router.deliver(Child(), "o", None))
    assert decision == [(ON_PARENT, 0), (ON_PING, 0), (ON_CHILD, 0)]


def test_deliver_of_a_base_class_skips_steps_taking_only_subclasses() -> None:
    """A base-class event does not go to steps that accept only its subclasses."""
    router = fan_router()
    assert starts(router.deliver(Parent(), "o", None)) == [(ON_PARENT, 0)]


def test_starts_take_the_lowest_free_slot_first() -> None:
    """Successive starts of a fresh step take worker slots 0, 1, 2 in turn."""
    router = fan_router()
    got = [starts(router.deliver(Ping(n=i), "o", None)) for i in range(3)]
    assert got == [[(ON_PING, 0)], [(ON_PING, 1)], [(ON_PING, 2)]]


def test_a_step_with_every_slot_busy_gets_the_event_in_its_backlog() -> None:
    """With all num_workers slots taken, a step queues the event instead of starting it."""
    router = fan_router()
    for i in range(3):
        router.deliver(Ping(n=i), "o", None)
    late = Ping(n=3)
    assert starts(router.deliver(late, "late", None)) == []
    assert router.next_job(ON_PING) == (late, "late", None)
    assert router.next_job(ON_PING) is None


def test_a_busy_step_queues_while_other_takers_start() -> None:
    """An event starts in the takers with a free slot and queues in the busy ones."""
    router = fan_router()
    first, second = Child(), Child()
    router.deliver(first, "o1", None)
    decision = starts(router.deliver(second, "o2", None))
    assert decision == [(ON_PING, 1), (ON_CHILD, 1)]
    assert router.next_job(ON_PARENT) == (second, "o2", None)
    assert router.next_job(ON_PING) is None
    assert router.next_job(ON_CHILD) is None


def test_next_job_pops_the_backlog_first_in_first_out() -> None:
    """next_job hands out backlogged events in the order they were delivered."""
    router = fan_router()
    router.deliver(Parent(), "busy", None)
    queued = [Parent() for _ in range(5)]
    for i, ev in enumerate(queued):
        assert starts(router.deliver(ev, f"o{i}", None)) == []
    popped = [router.next_job(ON_PARENT) for _ in range(5)]
    assert popped == [(ev, f"o{i}", None) for i, ev in enumerate(queued)]
    assert all(job is not None and job[0] is ev for job, ev in zip(popped, queued, strict=True))
    assert router.next_job(ON_PARENT) is None


def test_next_job_of_a_step_that_never_queued_is_none() -> None:
    """next_job of a step with no backlog returns None."""
    router = fan_router()
    assert [router.next_job(i) for i in range(4)] == [None] * 4


def test_release_returns_the_slot() -> None:
    """A released slot is free again: the next event starts in it instead of queueing."""
    router = fan_router()
    assert starts(router.deliver(Parent(), "o", None)) == [(ON_PARENT, 0)]
    assert starts(router.deliver(Parent(), "o", None)) == []
    assert router.next_job(ON_PARENT) is not None
    assert router.next_job(ON_PARENT) is None
    router.release(ON_PARENT, 0)
    assert starts(router.deliver(Parent(), "o", None)) == [(ON_PARENT, 0)]


def test_release_of_a_middle_slot_is_reused() -> None:
    """Releasing slot 1 of three busy slots makes the next start take slot 1."""
    router = fan_router()
    for i in range(3):
        router.deliver(Ping(n=i), "o", None)
    router.release(ON_PING, 1)
    assert starts(router.deliver(Ping(), "o", None)) == [(ON_PING, 1)]


def test_active_steps_lists_steps_with_a_slot_taken_in_graph_order() -> None:
    """active_steps names exactly the steps with a slot taken, in graph order."""
    router = fan_router()
    assert router.active_steps() == []
    router.deliver(Other(), "o", None)
    router.deliver(Ping(), "o", None)
    router.deliver(Parent(), "o", None)
    assert router.active_steps() == ["on_parent", "on_ping", "on_child"]
    router.release(ON_PING, 0)
    assert router.active_steps() == ["on_parent", "on_child"]
    router.release(ON_CHILD, 0)
    router.release(ON_PARENT, 0)
    assert router.active_steps() == []


def test_active_steps_counts_a_step_until_its_last_slot_is_released() -> None:
    """A step with several slots taken stays active until every one is released."""
    router = fan_router()
    router.deliver(Ping(), "o", None)
    router.deliver(Ping(), "o", None)
    router.release(ON_PING, 0)
    assert router.active_steps() == ["on_ping"]
    router.release(ON_PING, 1)
    assert router.active_steps() == []


def test_a_targeted_delivery_goes_only_to_that_step() -> None:
    """deliver(target=...) starts only the named step, not the other takers."""
    router = fan_router()
    assert starts(router.deliver(Child(), "o", "on_child")) == [(ON_CHILD, 0)]
    assert router.active_steps() == ["on_child"]


def test_a_targeted_delivery_to_a_busy_step_is_queued_there_only() -> None:
    """A targeted event for a busy step lands in that step's backlog and nowhere else."""
    router = fan_router()
    router.deliver(Parent(), "o", None)
    child = Child()
    assert starts(router.deliver(child, "t", "on_parent")) == []
    assert router.next_job(ON_PARENT) == (child, "t", None)
    assert router.next_job(ON_PING) is None
    assert router.active_steps() == ["on_parent"]


def test_a_targeted_delivery_bypasses_waiters() -> None:
    """A targeted event goes to its step even when a waiter would match it."""
    router = fan_router()
    waiter, _ = router.add_waiter(Ping, {}, "tok")
    assert starts(router.deliver(Ping(), "o", "on_ping")) == [(ON_PING, 0)]
    assert router.waiters == [waiter]


def test_deliver_of_an_event_no_step_accepts_raises_the_send_problem() -> None:
    """An event no step accepts raises WorkflowRuntimeError with send_problem's message."""
    router = fan_router()
    stray = Stray()
    expected = (
        "no step of workflow Fan accepts Stray and no step is waiting for it; add a step "
        "that takes Stray, or wait for it with ctx.wait_for_event"
    )
    assert router.send_problem(stray, None) == expected
    with pytest.raises(WorkflowRuntimeError) as info:
        router.deliver(stray, "o", None)
    assert str(info.value) == expected
    assert router.active_steps() == []


# -- waiters --------------------------------------------------------------------------------


def test_a_matching_waiter_takes_the_event_before_any_step() -> None:
    """A waiter of the type whose requirements all hold gets the event; no step starts."""
    router = fan_router()
    waiter, _ = router.add_waiter(Ping, {"n": 1, "tag": "x"}, "tok")
    ev = Ping(n=1, tag="x")
    assert router.deliver(ev, "o", None) is waiter
    assert waiter.token == "tok"  # noqa: S105 - a waiter token, not a password
    assert router.waiters == []
    assert router.active_steps() == []


def test_an_answered_waiter_is_gone_so_the_next_event_goes_to_steps() -> None:
    """Once a waiter took an event, the next event of the type goes to the steps."""
    router = fan_router()
    router.add_waiter(Ping, {}, "tok")
    assert isinstance(router.deliver(Ping(), "o", None), Waiter)
    assert starts(router.deliver(Ping(), "o", None)) == [(ON_PING, 0)]


def test_a_waiter_for_a_base_class_takes_a_subclass_event() -> None:
    """A waiter for a base class matches an event of a subclass."""
    router = fan_router()
    waiter, _ = router.add_waiter(Parent, {}, "tok")
    assert router.deliver(Child(), "o", None) is waiter


def test_the_first_registered_matching_waiter_wins() -> None:
    """Of several matching waiters, the one registered first takes the event."""
    router = fan_router()
    first, _ = router.add_waiter(Ping, {}, "a")
    second, _ = router.add_waiter(Ping, {}, "b")
    assert router.deliver(Ping(), "o", None) is first
    assert router.waiters == [second]


def test_a_waiter_takes_an_event_no_step_accepts() -> None:
    """A waiter for a type no step accepts takes it instead of the delivery failing."""
    router = fan_router()
    waiter, _ = router.add_waiter(Stray, {"n": 2}, "tok")
    ev = Stray(n=2)
    assert router.send_problem(ev, None) is None
    assert router.deliver(ev, "o", None) is waiter


@pytest.mark.parametrize(
    "event",
    [
        Ping(n=2, tag="x"),  # n differs
        Ping(n=1, tag="y"),  # tag differs
        Ping(n=1),  # tag missing
        Other(n=1, tag="x"),  # wrong type, fields fit
    ],
    ids=["n-differs", "tag-differs", "tag-missing", "wrong-type"],
)
def test_a_waiter_failing_one_requirement_does_not_match(event: Event) -> None:
    """An event failing the type or any one requirement is not the waiter's; steps get it."""
    router = fan_router()
    waiter, _ = router.add_waiter(Ping, {"n": 1, "tag": "x"}, "tok")
    assert not waiter.matches(event)
    decision = router.deliver(event, "o", None)
    assert isinstance(decision, list)
    assert decision
    assert router.waiters == [waiter]


def test_a_waiter_requirement_of_none_needs_the_field_present() -> None:
    """A requirement of None is not met by an event lacking the field."""
    waiter: Waiter[str] = Waiter(Ping, {"tag": None}, "tok")
    assert waiter.matches(Ping(tag=None))
    assert not waiter.matches(Ping())


def test_waiter_copies_its_requirements() -> None:
    """A waiter keeps its own copy of the requirements mapping."""
    requirements: dict[str, Any] = {"n": 1}
    waiter: Waiter[str] = Waiter(Ping, requirements, "tok")
    requirements["n"] = 2
    assert waiter.matches(Ping(n=1))


def test_remove_waiter_forgets_it_and_ignores_one_already_gone() -> None:
    """remove_waiter drops a waiter, and is a no-op for a waiter no longer registered."""
    router = fan_router()
    waiter, _ = router.add_waiter(Ping, {}, "tok")
    router.remove_waiter(waiter)
    assert router.waiters == []
    router.remove_waiter(waiter)
    assert router.waiters == []
    assert starts(router.deliver(Ping(), "o", None)) == [(ON_PING, 0)]


def test_send_problem_names_an_unknown_target_step() -> None:
    """A send to a step the workflow lacks is refused, listing the workflow's steps."""
    router = fan_router()
    assert router.send_problem(Ping(), "nope") == (
        "send_event(..., step='nope'): workflow Fan has no step 'nope'; its steps are "
        "begin, on_parent, on_ping, on_child"
    )


def test_send_problem_names_the_takers_when_the_target_refuses_the_type() -> None:
    """A send to a step not accepting the type names what it accepts and who takes the type."""
    router = fan_router()
    assert router.send_problem(Ping(), "on_parent") == (
        "send_event(Ping, step='on_parent'): step 'on_parent' does not accept Ping (it "
        "accepts Parent); steps that accept Ping: on_ping"
    )
    assert router.send_problem(Parent(), "on_child") == (
        "send_event(Parent, step='on_child'): step 'on_child' does not accept Parent (it "
        "accepts Child, Other); steps that accept Parent: on_parent"
    )


def test_send_problem_says_none_when_no_step_takes_the_targeted_type() -> None:
    """A targeted send of a type no step accepts lists its takers as "none"."""
    router = fan_router()
    assert router.send_problem(Stray(), "on_ping") == (
        "send_event(Stray, step='on_ping'): step 'on_ping' does not accept Stray (it "
        "accepts Ping, Child); steps that accept Stray: none"
    )


def test_send_problem_with_no_taker_and_no_waiter() -> None:
    """An untargeted event with no taker and no waiter of its type is refused."""
    router = fan_router()
    router.add_waiter(Ping, {}, "tok")  # waiting for another type does not help
    assert router.send_problem(Stray(), None) == (
        "no step of workflow Fan accepts Stray and no step is waiting for it; add a step "
        "that takes Stray, or wait for it with ctx.wait_for_event"
    )


def test_send_problem_names_the_requirements_a_waited_event_fails() -> None:
    """An event only a waiter could take, failing its requirements, names them."""
    router = fan_router()
    router.add_waiter(Stray, {"n": 1}, "tok")
    assert router.send_problem(Stray(n=2), None) == (
        "Stray does not meet the requirements of the step waiting for it (n=1) and no "
        "step of workflow Fan accepts it; send a Stray whose fields match"
    )


def test_send_problem_names_every_waiters_requirements() -> None:
    """With several waiters of the type, the message lists each one's requirements."""
    router = fan_router()
    router.add_waiter(Stray, {"n": 1}, "a")
    router.add_waiter(Stray, {"n": 3, "tag": "x"}, "b")
    router.add_waiter(Ping, {"n": 9}, "c")  # another type: not listed
    assert router.send_problem(Stray(n=2), None) == (
        "Stray does not meet the requirements of the step waiting for it "
        "(n=1; n=3, tag='x') and no step of workflow Fan accepts it; send a Stray "
        "whose fields match"
    )
    with pytest.raises(WorkflowRuntimeError, match=r"^Stray does not meet"):
        router.deliver(Stray(n=2), "o", None)


# -- collect: joins -------------------------------------------------------------------------


def test_collect_completes_in_expected_order() -> None:
    """A join returns None until complete, then the events and origins in expected order."""
    router = fan_router()
    expected: list[type[Event]] = [Ping, Parent, Other]
    other, ping, parent = Other(), Ping(), Parent()
    assert router.collect("s", other, "o-other", expected) is None
    assert router.collect("s", ping, "o-ping", expected) is None
    done = router.collect("s", parent, "o-parent", expected)
    assert done == ([ping, parent, other], ["o-ping", "o-parent", "o-other"])
    assert done is not None
    assert all(a is b for a, b in zip(done[0], [ping, parent, other], strict=True))


def test_collect_waits_for_every_repeat_of_a_type() -> None:
    """A join of [Ping] * 3 completes on the third Ping, with the Pings in arrival order."""
    router = fan_router()
    pings = [Ping(n=i) for i in range(3)]
    assert router.collect("s", pings[0], "o0", [Ping] * 3) is None
    assert router.collect("s", pings[1], "o1", [Ping] * 3) is None
    assert router.collect("s", pings[2], "o2", [Ping] * 3) == (pings, ["o0", "o1", "o2"])


def test_collect_with_repeats_interleaved_with_other_types() -> None:
    """A join of [Ping, Other, Ping] puts the Pings in the Ping positions in arrival order."""
    router = fan_router()
    expected: list[type[Event]] = [Ping, Other, Ping]
    p0, p1, other = Ping(n=0), Ping(n=1), Other()
    assert router.collect("s", p0, "a", expected) is None
    assert router.collect("s", p1, "b", expected) is None
    assert router.collect("s", other, "c", expected) == ([p0, other, p1], ["a", "c", "b"])


def test_collect_fills_a_base_type_slot_with_a_subclass() -> None:
    """A subclass event fills the slot of its base type."""
    router = fan_router()
    child, ping = Child(), Ping()
    assert router.collect("s", child, "c", [Parent, Ping]) is None
    assert router.collect("s", ping, "p", [Parent, Ping]) == ([child, ping], ["c", "p"])


@pytest.mark.parametrize("child_first", [True, False])
@pytest.mark.parametrize(
    "expected", [[Parent, Child], [Child, Parent]], ids=["base-1st", "sub-1st"]
)
def test_collect_of_a_base_and_its_subclass_completes(
    expected: list[type[Event]], child_first: bool
) -> None:
    """A join of a base type and its subclass completes with one event of each."""
    router = fan_router()
    child, parent = Child(), Parent()
    arrivals = [(child, "c"), (parent, "p")] if child_first else [(parent, "p"), (child, "c")]
    assert router.collect("s", arrivals[0][0], arrivals[0][1], expected) is None
    done = router.collect("s", arrivals[1][0], arrivals[1][1], expected)
    by_type: dict[type[Event], tuple[Event, str]] = {Parent: (parent, "p"), Child: (child, "c")}
    assert done == (
        [by_type[t][0] for t in expected],
        [by_type[t][1] for t in expected],
    )


def test_collect_of_a_wrong_type_raises_naming_the_expected_types() -> None:
    """An event of none of the expected types raises, naming the types expected."""
    router = fan_router()
    with pytest.raises(WorkflowRuntimeError) as info:
        router.collect("s", Stray(), "o", [Ping, Parent, Ping])
    assert str(info.value) == (
        "collect_events got Stray, which is none of the expected types "
        "[Ping, Parent, Ping]; pass only events of the expected types"
    )


def test_collect_of_a_base_type_does_not_fill_a_subclass_slot() -> None:
    """A base-class event is not accepted where only its subclass is expected."""
    router = fan_router()
    with pytest.raises(WorkflowRuntimeError, match=r"^collect_events got Parent, "):
        router.collect("s", Parent(), "o", [Child])


def test_a_refused_event_leaves_the_join_untouched() -> None:
    """After a wrong-type event is refused, the join completes as if it never came."""
    router = fan_router()
    ping, other = Ping(), Other()
    assert router.collect("s", ping, "p", [Ping, Other]) is None
    with pytest.raises(WorkflowRuntimeError):
        router.collect("s", Stray(), "x", [Ping, Other])
    assert router.collect("s", other, "o", [Ping, Other]) == ([ping, other], ["p", "o"])


def test_collect_with_no_expected_types_raises() -> None:
    """An empty expected list raises WorkflowRuntimeError."""
    router = fan_router()
    with pytest.raises(WorkflowRuntimeError) as info:
        router.collect("s", Ping(), "o", [])
    assert str(info.value) == "collect_events needs at least one expected event type"


@pytest.mark.parametrize("other_step", ["b", None])
def test_collect_keeps_a_separate_join_per_step(other_step: str | None) -> None:
    """The same expected list collected by two steps (or outside a step) makes two joins."""
    router = fan_router()
    expected: list[type[Event]] = [Ping, Ping]
    a0, b0, a1 = Ping(n=0), Ping(n=1), Ping(n=2)
    assert router.collect("a", a0, "a0", expected) is None
    assert router.collect(other_step, b0, "b0", expected) is None
    assert router.collect("a", a1, "a1", expected) == ([a0, a1], ["a0", "a1"])


def test_collect_keeps_a_separate_join_per_expected_list() -> None:
    """Different expected lists sharing length and ends are still separate joins."""
    router = fan_router()
    first: list[type[Event]] = [Ping, Ping, Other]
    second: list[type[Event]] = [Ping, Parent, Other]
    p0, p1 = Ping(n=0), Ping(n=1)
    parent, o0, o1 = Parent(), Other(n=0), Other(n=1)
    assert router.collect("s", p0, "p0", first) is None
    assert router.collect("s", p1, "p1", second) is None
    assert router.collect("s", parent, "pa", second) is None
    assert router.collect("s", o1, "o1", second) == ([p1, parent, o1], ["p1", "pa", "o1"])
    assert router.collect("s", o0, "o0", first) is None
    assert router.collect("s", Ping(n=2), "p2", first) is not None


def test_collect_treats_an_equal_list_as_the_same_join() -> None:
    """A new list object with the same types continues the same join."""
    router = fan_router()
    ping, other = Ping(), Other()
    assert router.collect("s", ping, "p", [Ping, Other]) is None
    assert router.collect("s", other, "o", [Ping, Other]) == ([ping, other], ["p", "o"])


def test_a_completed_join_starts_afresh() -> None:
    """After a join completes, the next event starts a new, empty join."""
    router = fan_router()
    expected: list[type[Event]] = [Ping, Other]
    router.collect("s", Ping(), "p", expected)
    assert router.collect("s", Other(), "o", expected) is not None
    assert router.collect("s", Other(), "o2", expected) is None
    ping = Ping(n=5)
    done = router.collect("s", ping, "p2", expected)
    assert done is not None
    assert done[0][0] is ping
    assert done[1] == ["p2", "o2"]


def test_surplus_events_carry_over_to_the_next_join() -> None:
    """Events beyond what a join needs wait, in order, for the next join of the list."""
    router = fan_router()
    expected: list[type[Event]] = [Ping, Other]
    p0, p1, p2 = Ping(n=0), Ping(n=1), Ping(n=2)
    for i, ev in enumerate((p0, p1, p2)):
        assert router.collect("s", ev, f"p{i}", expected) is None
    o0, o1 = Other(n=0), Other(n=1)
    assert router.collect("s", o0, "o0", expected) == ([p0, o0], ["p0", "o0"])
    assert router.collect("s", o1, "o1", expected) == ([p1, o1], ["p1", "o1"])
    assert router.collect("s", Other(), "o2", expected) is not None


def test_collector_serves_only_its_expected_list() -> None:
    """Collector.serves holds for its own list (the same or an equal one) only."""
    expected: list[type[Event]] = [Ping, Other]
    collector: Collector[str] = Collector(expected)
    assert collector.serves(expected)
    assert collector.serves([Ping, Other])
    assert collector.serves((Ping, Other))
    assert not collector.serves([Other, Ping])
    assert not collector.serves([Ping])


# -- result_action and retry_delay ----------------------------------------------------------


RESULTS: list[tuple[str, Any, Action]] = [
    ("none", None, Action.NOTHING),
    ("int", 42, Action.INVALID),
    ("str", "done", Action.INVALID),
    ("event-class", Ping, Action.INVALID),
    ("stop", StopEvent(result=1), Action.STOP),
    ("stop-subclass", Verdict(label="x"), Action.STOP),
    ("failed-event", WorkflowFailedEvent(step_name="s", exception=ValueError("m")), Action.STOP),
    ("input-required", InputRequiredEvent(prompt="?"), Action.STREAM),
    ("event", Ping(), Action.ROUTE),
    ("start", StartEvent(), Action.ROUTE),
    ("human-response", HumanResponseEvent(answer="y"), Action.ROUTE),
]


@pytest.mark.parametrize(
    ("result", "action"), [r[1:] for r in RESULTS], ids=[r[0] for r in RESULTS]
)
def test_result_action_while_running(result: Any, action: Action) -> None:
    """While running: None is nothing, a StopEvent stops, input-required streams, events route."""
    assert result_action(result, RunState.RUNNING) is action


@pytest.mark.parametrize("state", [RunState.ENDING, RunState.ENDED])
@pytest.mark.parametrize(
    ("result", "action"), [r[1:] for r in RESULTS], ids=[r[0] for r in RESULTS]
)
def test_result_action_once_not_running(result: Any, action: Action, state: RunState) -> None:
    """Once not running every result is ignored, except a non-event, which is still invalid."""
    expected = Action.INVALID if action is Action.INVALID else Action.NOTHING
    assert result_action(result, state) is expected


@dataclass
class RecordingPolicy:
    """A retry policy that records its calls and answers ``delay``."""

    delay: float | None
    calls: list[tuple[float, int, Exception]] = field(default_factory=list)

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """Record the call; return ``delay``."""
        self.calls.append((elapsed_time, attempts, error))
        return self.delay


class Abort(BaseException):
    """A BaseException that is not an Exception."""


def test_retry_delay_without_a_policy_is_none() -> None:
    """With no retry policy a failed attempt is never retried."""
    assert retry_delay(None, RunState.RUNNING, 0.0, 1, ValueError("x")) is None


def test_retry_delay_asks_the_policy_while_running() -> None:
    """While running, the policy gets elapsed time, attempt and error, and its answer is used."""
    policy = RecordingPolicy(0.25)
    error = ValueError("x")
    assert retry_delay(policy, RunState.RUNNING, 1.5, 2, error) == 0.25
    assert policy.calls == [(1.5, 2, error)]
    assert policy.calls[0][2] is error


def test_retry_delay_passes_on_the_policy_giving_up() -> None:
    """A policy answering None fails the step."""
    policy = RecordingPolicy(None)
    assert retry_delay(policy, RunState.RUNNING, 0.0, 1, ValueError("x")) is None
    assert len(policy.calls) == 1


def test_retry_delay_with_a_constant_policy_counts_attempts() -> None:
    """A constant-delay policy of three attempts retries after attempts 1 and 2 only."""
    policy = retry_policy(wait=wait_fixed(0.5), stop=stop_after_attempt(3))
    delays = [retry_delay(policy, RunState.RUNNING, 0.0, n, ValueError("x")) for n in (1, 2, 3)]
    assert delays == [0.5, 0.5, None]


@pytest.mark.parametrize("error", [Abort(), KeyboardInterrupt(), SystemExit(1)])
def test_retry_delay_never_retries_a_base_exception(error: BaseException) -> None:
    """A BaseException that is not an Exception is never retried; the policy is not asked."""
    policy = RecordingPolicy(1.0)
    assert retry_delay(policy, RunState.RUNNING, 0.0, 1, error) is None
    assert policy.calls == []


@pytest.mark.parametrize("state", [RunState.ENDING, RunState.ENDED])
def test_retry_delay_is_none_once_not_running(state: RunState) -> None:
    """Once the run is not running nothing is retried; the policy is not asked."""
    policy = RecordingPolicy(1.0)
    assert retry_delay(policy, state, 0.0, 1, ValueError("x")) is None
    assert policy.calls == []


# -- Outcome builders -----------------------------------------------------------------------


def step_info() -> StepInfo:
    """A step attempt of run r1 of Fan, to pass as an outcome's source."""
    return StepInfo(RunInfo("Fan", "r1", 0), "on_ping", 1, 0, Ping(), None, 0)


def test_succeeded_returns_the_stop_events_result() -> None:
    """A plain StopEvent's outcome is "ok" and its value is the event's result."""
    stop = StopEvent(result={"answer": 42})
    source = step_info()
    outcome = succeeded(stop, source)
    assert outcome.status == "ok"
    assert outcome.terminal is stop
    assert outcome.error is None
    assert outcome.source is source
    assert outcome.value() == {"answer": 42}


def test_succeeded_with_a_stop_event_subclass_returns_the_event() -> None:
    """A StopEvent subclass's outcome value is the event itself."""
    verdict = Verdict(label="yes", result=1)
    outcome = succeeded(verdict, None)
    assert outcome.status == "ok"
    assert outcome.source is None
    assert outcome.value() is verdict


def test_failed_describes_the_error_and_raises_it() -> None:
    """A failed outcome names the step and error in its terminal event and raises the error."""
    error = ValueError("boom")
    source = step_info()
    outcome = failed("on_ping", error, source)
    assert outcome.status == "error"
    assert outcome.error is error
    assert outcome.source is source
    terminal = outcome.terminal
    assert type(terminal) is WorkflowFailedEvent
    assert (terminal.step, terminal.exception_type, terminal.message) == (
        "on_ping",
        "ValueError",
        "boom",
    )
    assert terminal.result is None
    with pytest.raises(ValueError, match=r"^boom$") as info:
        outcome.value()
    assert info.value is error


def test_failed_with_a_base_exception_raises_it() -> None:
    """A failure by a non-Exception BaseException is described and raised as is."""
    error = Abort("stop now")
    outcome = failed("begin", error, None)
    assert isinstance(outcome.terminal, WorkflowFailedEvent)
    assert outcome.terminal.exception_type == "Abort"
    with pytest.raises(Abort):
        outcome.value()


def test_timed_out_describes_the_timeout_and_raises_it() -> None:
    """A timed-out outcome carries timeout, active steps and message, and raises them."""
    outcome = timed_out("too slow", 2.5, ["on_ping", "on_child"])
    assert outcome.status == "timeout"
    assert outcome.source is None
    terminal = outcome.terminal
    assert type(terminal) is WorkflowTimedOutEvent
    assert terminal.timeout == 2.5
    assert terminal.active_steps == ["on_ping", "on_child"]
    assert terminal.message == "too slow"
    with pytest.raises(WorkflowTimeoutError, match=r"^too slow$") as info:
        outcome.value()
    assert info.value is outcome.error
    assert info.value.timeout == 2.5
    assert info.value.active_steps == ("on_ping", "on_child")


def test_timed_out_of_a_step_keeps_its_source() -> None:
    """A step's timeout names that step attempt as the source; no limit and no steps is fine."""
    source = step_info()
    outcome = timed_out("step slow", None, [], source)
    assert outcome.source is source
    assert isinstance(outcome.terminal, WorkflowTimedOutEvent)
    assert outcome.terminal.timeout is None
    assert outcome.terminal.active_steps == []


def test_cancelled_describes_the_cancellation_and_raises_it() -> None:
    """A cancelled outcome carries the message in its terminal event and raises it."""
    outcome = cancelled("stopped by caller")
    assert outcome.status == "cancelled"
    assert outcome.source is None
    assert type(outcome.terminal) is WorkflowCancelledEvent
    assert outcome.terminal.message == "stopped by caller"
    with pytest.raises(WorkflowCancelledError, match=r"^stopped by caller$") as info:
        outcome.value()
    assert info.value is outcome.error


def test_outcome_value_prefers_the_error_over_the_result() -> None:
    """An outcome with an error raises it even if its terminal event has a result."""
    error = RuntimeError("late")
    outcome = Outcome("error", StopEvent(result=1), error)
    with pytest.raises(RuntimeError, match=r"^late$"):
        outcome.value()


# -- property tests over random graphs ------------------------------------------------------


class Root(Event):
    pass


class Left(Root):
    pass


class Right(Root):
    pass


class LeftLeaf(Left):
    pass


class Loner(Event):
    pass


HIERARCHY: tuple[type[Event], ...] = (Root, Left, Right, LeftLeaf, Loner)


async def _noop(ev: Event) -> None:
    return None


@dataclass(frozen=True)
class StepShape:
    """A random step: worker count and accepted types."""

    num_workers: int
    accepts: tuple[type[Event], ...]


@dataclass(frozen=True)
class Deliver:
    """Deliver an event of ``event_type``; ``pick`` chooses a taker as target, or None."""

    event_type: type[Event]
    pick: int | None


@dataclass(frozen=True)
class Finish:
    """Finish the ``pick``-th running invocation (modulo their count): next_job/release."""

    pick: int


@dataclass(frozen=True)
class End:
    """End the run."""


Op = Deliver | Finish | End

step_shapes = st.builds(
    StepShape,
    num_workers=st.integers(1, 3),
    accepts=st.lists(st.sampled_from(HIERARCHY), min_size=1, max_size=3, unique=True).map(tuple),
)
# Deliveries (untargeted, or to one of the takers) and finishes, two to one.
operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(Deliver, st.sampled_from(HIERARCHY), st.none() | st.integers(0, 5)),
    st.builds(Deliver, st.sampled_from(HIERARCHY), st.none()),
    st.builds(Finish, st.integers(0, 50)),
)


def with_ends(ops: list[Op], ends: list[int] | None) -> list[Op]:
    """``ops`` with an End inserted at each position in ``ends``."""
    out = list(ops)
    for at in sorted(ends or (), reverse=True):
        out.insert(at, End())
    return out


# Any length up to 60 is as likely as any other (plain lists stay short), and about half
# of the sequences end the run once or twice somewhere.
op_lists = st.builds(
    with_ends,
    st.integers(0, 60).flatmap(lambda n: st.lists(operations, min_size=n, max_size=n)),
    st.none() | st.lists(st.integers(0, 60), min_size=1, max_size=2),
)


def random_graph(shapes: list[StepShape]) -> Graph:
    """A graph of steps s0, s1, ... with the given shapes, built from StepSpec directly."""
    return Graph(
        [
            StepSpec(
                name=f"s{i}",
                fn=_noop,
                accepts=shape.accepts,
                returns=(),
                accepts_known=True,
                returns_known=True,
                arg_order=("ev",),
                is_method=False,
                is_async=True,
                state_type=None,
                num_workers=shape.num_workers,
                retry_policy=None,
                timeout=None,
            )
            for i, shape in enumerate(shapes)
        ]
    )


@dataclass
class Model:
    """What the router should hold: running slots, backlogs, and each step's processing log."""

    graph: Graph
    running: list[dict[int, int]] = field(default_factory=list)  # slot -> event number
    backlog: list[deque[int]] = field(default_factory=list)
    # Event numbers each step started (at delivery or from its backlog), in order.
    started: list[list[int]] = field(default_factory=list)
    # Event numbers delivered to each step, in delivery order.
    delivered: list[list[int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.graph.specs)
        self.running = [{} for _ in range(n)]
        self.backlog = [deque() for _ in range(n)]
        self.started = [[] for _ in range(n)]
        self.delivered = [[] for _ in range(n)]


def check_invariants(router: Router[str, str], model: Model) -> None:
    """Slots within num_workers, active steps exact, and no free slot beside a backlog."""
    specs = router.graph.specs
    for i, spec in enumerate(specs):
        assert len(model.running[i]) <= spec.num_workers
        assert all(0 <= slot < spec.num_workers for slot in model.running[i])
        if router.state is RunState.RUNNING and model.backlog[i]:
            # A slot is only released once the backlog is empty.
            assert len(model.running[i]) == spec.num_workers
    assert router.active_steps() == [s.name for i, s in enumerate(specs) if model.running[i]]


def do_deliver(router: Router[str, str], model: Model, op: Deliver) -> None:
    """Deliver a fresh event of ``op.event_type`` and check the router's decision."""
    graph = router.graph
    number = len(model.events)
    event = op.event_type(k=number)
    takers = graph.route(op.event_type)
    target = None
    if op.pick is not None and takers:
        target = graph.names[takers[op.pick % len(takers)]]
    problem = router.send_problem(event, target)
    if router.state is not RunState.RUNNING:
        assert problem == (
            f"send_event({op.event_type.__name__}): run r of workflow Random has ended, so "
            "nothing can receive it; check handler.done() before sending"
        )
        return  # the run never delivers once not running
    if not takers:
        assert problem is not None
        with pytest.raises(WorkflowRuntimeError) as info:
            router.deliver(event, f"o{number}", None)
        assert str(info.value) == problem
        return
    assert problem is None
    model.events.append(event)
    indices = (graph.index[target],) if target is not None else takers
    decision = starts(router.deliver(event, f"o{number}", target))
    expected_starts = [i for i in indices if len(model.running[i]) < graph.specs[i].num_workers]
    assert [i for i, _ in decision] == expected_starts
    for i, slot in decision:
        assert slot not in model.running[i]
        model.running[i][slot] = number
        model.started[i].append(number)
    for i in indices:
        model.delivered[i].append(number)
        if i not in expected_starts:
            model.backlog[i].append(number)


def do_finish(router: Router[str, str], model: Model, pick: int) -> None:
    """Finish one running invocation: take the next backlogged event, or release the slot."""
    running = [(i, slot) for i, slots in enumerate(model.running) for slot in sorted(slots)]
    if not running:
        return
    i, slot = running[pick % len(running)]
    job = router.next_job(i)
    if router.state is RunState.RUNNING and model.backlog[i]:
        number = model.backlog[i].popleft()
        assert job is not None
        assert job[0] is model.events[number]
        assert job[1] == f"o{number}"
        model.running[i][slot] = number
        model.started[i].append(number)
    else:
        assert job is None
        router.release(i, slot)
        del model.running[i][slot]


def drain(router: Router[str, str], model: Model) -> None:
    """Finish every invocation, and what each backlog then starts, until nothing runs."""
    while any(model.running):
        do_finish(router, model, 0)
        check_invariants(router, model)


@settings(max_examples=200, deadline=None)
@given(shapes=st.lists(step_shapes, min_size=1, max_size=6), ops=op_lists)
def test_random_graphs_route_every_event_exactly_once_per_taker(
    shapes: list[StepShape], ops: list[Op]
) -> None:
    """On random graphs and operations, each delivered event starts once per taker, FIFO."""
    graph = random_graph(shapes)
    router: Router[str, str] = Router(graph, "Random", "r")
    model = Model(graph)
    ended = False
    for op in ops:
        if isinstance(op, Deliver):
            do_deliver(router, model, op)
        elif isinstance(op, Finish):
            do_finish(router, model, op.pick)
        else:
            assert router.end() is not ended
            ended = True
        check_invariants(router, model)
    if ended:
        # Nothing more starts; every slot is released as its invocation finishes.
        assert all(router.next_job(i) is None for i in range(len(graph.specs)))
        drain(router, model)
        assert router.active_steps() == []
        return
    drain(router, model)
    # No loss, no duplication, first in first out: each step started exactly the events
    # delivered to it, in delivery order, and its backlog is empty.
    assert model.started == model.delivered
    assert all(not backlog for backlog in model.backlog)
    assert all(router.next_job(i) is None for i in range(len(graph.specs)))
    assert router.active_steps() == []


@settings(max_examples=200, deadline=None)
@given(shapes=st.lists(step_shapes, min_size=1, max_size=6), ops=op_lists)
def test_random_graphs_free_every_slot_after_draining(
    shapes: list[StepShape], ops: list[Op]
) -> None:
    """After random operations and a drain, each step starts exactly num_workers events at once."""
    graph = random_graph(shapes)
    router: Router[str, str] = Router(graph, "Random", "r")
    model = Model(graph)
    for op in ops:
        if isinstance(op, Deliver):
            do_deliver(router, model, op)
        elif isinstance(op, Finish):
            do_finish(router, model, op.pick)
    drain(router, model)
    for i, shape in enumerate(shapes):
        target = graph.names[i]
        slots: list[int] = []
        for _ in range(shape.num_workers):
            decision = starts(router.deliver(shape.accepts[0](), "probe", target))
            slots.extend(slot for _, slot in decision)
        assert sorted(slots) == list(range(shape.num_workers))
        assert router.deliver(shape.accepts[0](), "probe", target) == [(i, QUEUED)]


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(step_shapes, min_size=1, max_size=6),
    event_type=st.sampled_from(HIERARCHY),
)
def test_random_graphs_route_to_exactly_the_accepting_steps(
    shapes: list[StepShape], event_type: type[Event]
) -> None:
    """An untargeted event starts exactly the steps accepting its type or a base, in graph order."""
    graph = random_graph(shapes)
    router: Router[str, str] = Router(graph, "Random", "r")
    takers = [i for i, s in enumerate(shapes) if issubclass(event_type, s.accepts)]
    if not takers:
        with pytest.raises(WorkflowRuntimeError, match=r"^no step of workflow Random accepts "):
            router.deliver(event_type(), "o", None)
        return
    assert router.deliver(event_type(), "o", None) == [(i, 0) for i in takers]
    assert router.active_steps() == [f"s{i}" for i in takers]


@settings(max_examples=200, deadline=None)
@given(
    expected=st.lists(st.sampled_from(HIERARCHY), min_size=1, max_size=6),
    data=st.data(),
)
def test_random_joins_complete_on_the_last_event_of_each_expected_type(
    expected: list[type[Event]], data: st.DataObject
) -> None:
    """One event of each expected type, in any order, completes the join on the last one."""
    router = fan_router()
    events = [t(k=i) for i, t in enumerate(expected)]
    order = data.draw(st.permutations(range(len(events))))
    results = [router.collect("s", events[i], f"o{i}", expected) for i in order]
    assert results[:-1] == [None] * (len(results) - 1)
    done = results[-1]
    assert done is not None
    # Events of one type come out in arrival order; types in expected order.
    arrivals = {t: [i for i in order if expected[i] is t] for t in set(expected)}
    want = [arrivals[t].pop(0) for t in expected]
    assert [ev["k"] for ev in done[0]] == want
    assert done[1] == [f"o{i}" for i in want]


# -- held events, saved waits, snapshots ------------------------------------------------


def test_a_caller_event_nobody_takes_is_held_and_given_to_the_next_matching_waiter() -> None:
    """deliver(hold=True) keeps an untaken event; a waiter registered later takes it at once."""
    router = fan_router()
    stray = Stray(n=1)
    assert router.send_problem(stray, None, from_caller=True) is None
    assert router.deliver(stray, "caller", None, hold=True) is None
    assert router.held == [stray]
    other, taken = router.add_waiter(Stray, {"n": 2}, "tok")
    assert taken is None
    assert router.waiters == [other]
    waiter, taken = router.add_waiter(Stray, {"n": 1}, "tok")
    assert taken is stray
    assert waiter not in router.waiters
    assert router.held == []


def test_a_queued_delivery_is_reported_with_the_queued_slot() -> None:
    """A step with every worker busy is reported as (index, QUEUED)."""
    router = fan_router()
    assert starts(router.deliver(Parent(), "o", "on_parent")) == [(ON_PARENT, 0)]
    assert router.deliver(Parent(), "o", "on_parent") == [(ON_PARENT, QUEUED)]


def test_a_snapshot_round_trips_pending_work_held_events_waits_and_joins() -> None:
    """Router.snapshot then Router.restore gives a new router the same pending state."""
    router = fan_router()
    starts(router.deliver(Parent(), "o", "on_parent"))
    queued = Parent()
    router.deliver(queued, "o", "on_parent")
    held = Stray(n=5)
    router.deliver(held, "caller", None, hold=True)
    router.add_waiter(Ping, {"n": 1}, "tok", "wait-1")
    first = Ping(n=7)
    assert router.collect("on_ping", first, "o", [Ping, Ping]) is None
    running = Parent()
    snap = router.snapshot([(ON_PARENT, running, None, 4)])
    assert snap.queue == [("on_parent", running), ("on_parent", queued)]
    assert snap.held == [held]
    assert snap.waiters == [("wait-1", Ping, {"n": 1})]
    assert snap.joins == [("on_ping", (Ping, Ping), [first])]

    restored = fan_router()
    assert snap.keys == {0: 4}
    assert restored.restore(snap, "saved") == [(*snap.queue[0], 4), (*snap.queue[1], None)]
    assert restored.held == [held]
    waiter, taken = restored.add_waiter(Ping, {"n": 1}, "tok", "wait-1")
    assert (waiter.restored, taken) == (True, None)
    second = Ping(n=8)
    assert restored.collect("on_ping", second, "o", [Ping, Ping]) == (
        [first, second],
        ["saved", "o"],
    )


def test_default_waiter_ids_are_stable_and_distinguish_requirements() -> None:
    """default_waiter_id depends only on the step, the event type and the requirements."""
    one = default_waiter_id("ask", Ping, {"n": 1, "tag": "x"})
    assert one == default_waiter_id("ask", Ping, {"tag": "x", "n": 1})
    assert one == "ask:test_routing.Ping:n=1,tag='x'"
    assert default_waiter_id(None, Ping, {}) == "<caller>:test_routing.Ping:"
