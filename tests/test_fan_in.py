"""Fan-out (``-> list[E]``), fan-in (``list[E]`` parameters) and several-parameter steps."""

import asyncio
import json
import logging
from typing import Annotated
from typing import Any

import pytest

from _helpers import attr
from _helpers import drain
from _helpers import span_id
from _helpers import step_span_name
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowValidationError
from stepstream import catch_error
from stepstream import step
from stepstream.collect import Collect
from stepstream.collect import Take
from stepstream.events import CollectionReleaseEvent
from stepstream.events import StepFailedEvent
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry


class Task(Event):
    n: int
    drop: bool = False


class Done(Event):
    n: int


class Skipped(Event):
    n: int


class InnerTask(Event):
    outer: int
    inner: int


class InnerDone(Event):
    outer: int
    inner: int


class InnerSummary(Event):
    outer: int
    total: int


class Squares(Workflow):
    """Five tasks, a worker that drops the even ones past 0, a join over the rest."""

    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        drop = ev.get("drop", ())
        return [Task(n=i, drop=i in drop) for i in range(ev.get("count", 5))]

    @step(num_workers=8)
    async def work(self, ev: Task) -> Done | None:
        await asyncio.sleep(0.01 * (5 - ev.n))  # the last task finishes first
        if ev.drop:
            return None
        return Done(n=ev.n)

    @step
    async def join(self, events: list[Done]) -> StopEvent:
        return StopEvent(result=[e.n for e in events])


# -- fan-out and the whole-batch join ---------------------------------------------------


@pytest.mark.asyncio
async def test_a_list_return_fans_out_and_the_join_fires_once_in_completion_order() -> None:
    """Each element runs as its own event; the join gets them all once, as they finished."""
    assert await Squares(timeout=5).run() == [4, 3, 2, 1, 0]


@pytest.mark.asyncio
async def test_a_branch_returning_none_is_dropped_and_the_join_sees_the_rest() -> None:
    """A worker returning None drops its branch; the join fires with the survivors."""
    assert await Squares(timeout=5).run(start_event=StartEvent(drop=[0, 2])) == [4, 3, 1]


@pytest.mark.asyncio
async def test_an_empty_list_fires_the_join_once_with_nothing() -> None:
    """`return []` opens and closes a batch at once: the join fires with []."""
    assert await Squares(timeout=5).run(start_event=StartEvent(count=0)) == []


@pytest.mark.asyncio
async def test_every_branch_dropped_fires_the_join_with_nothing() -> None:
    """When every worker returns None the join still fires, once, with []."""
    assert await Squares(timeout=5).run(start_event=StartEvent(drop=[0, 1, 2, 3, 4])) == []


@pytest.mark.asyncio
async def test_the_join_body_runs_once_per_batch() -> None:
    """A join step is invoked exactly once for a batch, however many events it holds."""
    calls: list[int] = []

    class Counted(Squares):
        @step
        async def join(self, events: list[Done]) -> StopEvent:
            calls.append(len(events))
            return StopEvent(result=len(events))

    assert await Counted(timeout=5).run() == 5
    assert calls == [5]


@pytest.mark.asyncio
async def test_an_empty_list_without_a_join_emits_nothing() -> None:
    """`return []` from a fan-out no join is bound to runs no worker."""
    worked: list[int] = []

    class Quiet(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return []

        @step
        async def stop(self, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(0.02)
            return StopEvent(result="ok")

        @step
        async def work(self, ev: Task) -> StopEvent:
            worked.append(ev.n)
            return StopEvent(result="worked")

    assert await Quiet(timeout=5).run() == "ok"
    assert worked == []


@pytest.mark.asyncio
async def test_a_union_list_collects_both_types_in_one_batch() -> None:
    """`list[Done | Skipped]` collects every member of either type."""

    class Mixed(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(4)]

        @step
        async def work(self, ev: Task) -> Done | Skipped:
            return Done(n=ev.n) if ev.n % 2 == 0 else Skipped(n=ev.n)

        @step
        async def report(self, events: list[Done | Skipped]) -> StopEvent:
            kinds = sorted((type(e).__name__, e.n) for e in events if isinstance(e, Done | Skipped))
            return StopEvent(result=kinds)

    assert await Mixed(timeout=5).run() == [
        ("Done", 0),
        ("Done", 2),
        ("Skipped", 1),
        ("Skipped", 3),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("form", ["annotated", "optional"])
async def test_other_spellings_of_a_whole_batch_join_behave_like_a_bare_list(form: str) -> None:
    """`Annotated[list[E], Collect()]` and `list[E] | None` are the plain whole-batch join."""

    class Annotates(Squares):
        @step
        async def join(self, events: Annotated[list[Done], Collect()]) -> StopEvent:
            return StopEvent(result=sorted(e.n for e in events))

    class Optional(Squares):
        @step
        async def join(self, events: list[Done] | None) -> StopEvent:
            return StopEvent(result=sorted(e.n for e in events or []))

    joined = Annotates if form == "annotated" else Optional
    assert await joined(timeout=5).run() == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_a_fan_out_step_returning_none_opens_no_batch() -> None:
    """`-> list[E] | None` returning None emits nothing: only real lists fire the join."""
    calls = {"produce": 0}
    joined: list[list[int]] = []

    class Round(Event):
        i: int

    class Rounds(Workflow):
        @step
        async def driver(self, ctx: Context, ev: StartEvent) -> Round:
            ctx.send_event(Round(i=1))
            ctx.send_event(Round(i=2))
            return Round(i=0)

        @step(num_workers=1)
        async def produce(self, ev: Round) -> list[Task] | None:
            calls["produce"] += 1
            return None if calls["produce"] < 3 else [Task(n=0), Task(n=1)]

        @step
        async def work(self, ev: Task) -> Done:
            return Done(n=ev.n)

        @step
        async def join(self, events: list[Done]) -> StopEvent:
            joined.append(sorted(e.n for e in events))
            return StopEvent(result=joined[-1])

    assert await Rounds(timeout=5).run() == [0, 1]
    assert joined == [[0, 1]]


@pytest.mark.asyncio
async def test_a_bare_member_declared_beside_the_list_is_routed_alone() -> None:
    """`-> list[Done] | Done` returning a bare Done routes it; no join fires."""
    joined: list[int] = []

    class Single(Workflow):
        @step
        async def produce(self, ev: StartEvent) -> list[Done] | Done:
            return Done(n=5)

        @step
        async def handle(self, ev: Done) -> StopEvent:
            return StopEvent(result=ev.n)

        @step
        async def join(self, events: list[Done]) -> StopEvent:
            joined.append(len(events))
            return StopEvent(result="joined")

    assert await Single(timeout=5).run() == 5
    assert joined == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("returned", "message"),
    [
        pytest.param(
            "bare",
            "step 'produce' returned a bare Task, but its return annotation lists Task only "
            "inside list[...]; return [event] (a batch of one), or add Task to the annotation",
            id="bare-element",
        ),
        pytest.param(
            "not-events",
            "step 'produce' returned a list holding str ('oops'); a fan-out returns a list "
            "of Event instances",
            id="not-events",
        ),
    ],
)
async def test_a_fan_out_returning_the_wrong_shape_fails_the_step(
    returned: str, message: str
) -> None:
    """A bare element or a list of non-events fails the producing step, naming it."""

    class Wrong(Workflow):
        @step
        async def produce(self, ev: StartEvent) -> list[Task]:
            return Task(n=0) if returned == "bare" else ["oops"]  # type: ignore[return-value,list-item]

        @step
        async def work(self, ev: Task) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError) as info:
        await Wrong(timeout=5).run()
    assert str(info.value) == message


@pytest.mark.asyncio
async def test_a_list_from_a_step_not_annotated_with_one_fails_it() -> None:
    """A list return only fans out when the annotation declares list[E]."""

    class NotFanOut(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return [StopEvent(result="x")]  # type: ignore[return-value]

    with pytest.raises(WorkflowRuntimeError, match=r"^step 'start' returned a list \(") as info:
        await NotFanOut(timeout=5).run()
    assert str(info.value).endswith(
        "but its return annotation declares no list[E]; annotate it `-> list[E]` to fan "
        "out, or return one Event"
    )


def test_the_graph_sees_list_elements_as_produced() -> None:
    """Workflow.events lists a list[E] return's E, and an orphan element is reported."""
    assert {Task, Done} <= set(Squares(timeout=5).events)

    class Orphan(Event):
        pass

    class Orphaned(Workflow):
        @step
        async def fan(self, ev: StartEvent) -> list[Orphan] | StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match="Orphan is produced by 'fan' but no step"):
        Orphaned()


# -- which events a join collects ------------------------------------------------------


@pytest.mark.asyncio
async def test_two_joins_of_one_type_each_see_the_whole_batch() -> None:
    """Every join bound to the producer gets every member of the batch."""
    seen: dict[str, list[int]] = {}

    class Twice(Squares):
        @step
        async def join(self, events: list[Done]) -> StopEvent:
            await asyncio.sleep(0.02)
            seen["join"] = sorted(e.n for e in events)
            return StopEvent(result=seen)

        @step
        async def audit(self, events: list[Done]) -> None:
            seen["audit"] = sorted(e.n for e in events)

    assert await Twice(timeout=5).run() == {"audit": [0, 1, 2, 3, 4], "join": [0, 1, 2, 3, 4]}


@pytest.mark.asyncio
async def test_batches_of_two_producers_are_joined_separately() -> None:
    """A join fed by two fan-out steps fires once per batch, never merging them."""

    class Batch(Event):
        nums: list[int]

    class TwoSources(Workflow):
        @step
        async def fan_a(self, ev: StartEvent) -> list[Done]:
            return [Done(n=0), Done(n=1)]

        @step
        async def fan_b(self, ev: StartEvent) -> list[Done]:
            return [Done(n=10), Done(n=11)]

        @step
        async def join(self, events: list[Done]) -> Batch:
            return Batch(nums=sorted(e.n for e in events))

        @step
        async def finish(self, ctx: Context, ev: Batch) -> StopEvent | None:
            both = ctx.collect_events(ev, [Batch, Batch])
            if both is None:
                return None
            return StopEvent(result=sorted(b.nums for b in both if isinstance(b, Batch)))

    assert await TwoSources(timeout=5).run() == [[0, 1], [10, 11]]


@pytest.mark.asyncio
async def test_an_event_sent_in_a_branch_is_not_collected_and_a_warning_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ctx.send_event is not batch membership: the join ignores the sent event, with a warning."""

    class Sends(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(3)]

        @step
        async def work(self, ctx: Context, ev: Task) -> Done | None:
            if ev.n == 0:
                ctx.send_event(Done(n=100))
                return None
            await asyncio.sleep(0.02)
            return Done(n=ev.n)

        @step
        async def join(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=sorted(e.n for e in events))

    with caplog.at_level(logging.WARNING, logger="stepstream"):
        assert await Sends(timeout=5).run() == [1, 2]
    warned = [r.getMessage() for r in caplog.records if "was not collected" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].endswith(
        "Done was not collected by step 'join', because it was not returned inside a "
        "fan-out batch; a list[E] step collects only the events returned inside a fan-out "
        "batch (further such events are not reported)"
    )


@pytest.mark.asyncio
async def test_sending_an_event_to_a_join_step_raises() -> None:
    """send_event(ev, step=<a list[E] step>) is refused: a join only collects a batch."""
    refused: list[str] = []

    class Targets(Squares):
        @step
        async def fan_out(self, ctx: Context, ev: StartEvent) -> list[Task]:  # type: ignore[override]
            try:
                ctx.send_event(Done(n=9), step="join")
            except WorkflowRuntimeError as exc:
                refused.append(str(exc))
            return [Task(n=0)]

    assert await Targets(timeout=5).run() == [0]
    assert refused == [
        (
            "send_event(Done, step='join'): step 'join' takes list[Done], a fan-in that "
            "collects only the events returned inside a fan-out batch; return the event "
            "from a step of the batch instead"
        )
    ]


@pytest.mark.asyncio
async def test_a_branch_recovered_by_catch_error_stays_in_the_batch() -> None:
    """A @catch_error handler works in the failed branch's batch: its event is collected."""

    class Recovers(Workflow):
        @step
        async def start(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(3)]

        @step
        async def work(self, ev: Task) -> Done:
            if ev.n == 1:
                raise RuntimeError("boom on 1")
            return Done(n=ev.n)

        @catch_error(for_steps=["work"])
        async def recover(self, ev: StepFailedEvent) -> Done:
            await asyncio.sleep(0.02)
            return Done(n=1000 + ev.input_event.get("n", -1))

        @step
        async def join(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=sorted(e.n for e in events))

    assert await Recovers(timeout=5).run() == [0, 2, 1001]


@pytest.mark.asyncio
async def test_a_failing_join_reports_the_release_as_its_input_event() -> None:
    """StepFailedEvent.input_event of a failed join is the CollectionReleaseEvent it got."""
    failed: list[StepFailedEvent] = []

    class Fails(Squares):
        @step
        async def join(self, events: list[Done]) -> StopEvent:
            raise ValueError(len(events))

        @catch_error(for_steps=["join"])
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            failed.append(ev)
            return StopEvent(result="recovered")

    assert await Fails(timeout=5).run(start_event=StartEvent(count=2)) == "recovered"
    release = failed[0].input_event
    assert isinstance(release, CollectionReleaseEvent)
    assert sorted(e.n for e in release.events if isinstance(e, Done)) == [0, 1]
    assert (release.stream_id, release.binding_id) == ("fan_out#0", "fan_out->join")


@pytest.mark.asyncio
async def test_a_one_worker_join_takes_overlapping_batches_one_at_a_time() -> None:
    """Releases use the join's worker slots: with num_workers=1 they queue, each whole."""

    class Seed(Event):
        gid: int

    class Leaf(Event):
        gid: int

    class Collected(Event):
        gid: int
        n: int

    active = {"now": 0, "max": 0}

    class Overlap(Workflow):
        @step
        async def seed(self, ev: StartEvent) -> list[Seed]:
            return [Seed(gid=0), Seed(gid=1)]

        @step
        async def fan_inner(self, ev: Seed) -> list[Leaf]:
            return [Leaf(gid=ev.gid) for _ in range(3)]

        @step(num_workers=1)
        async def collect(self, leaves: list[Leaf]) -> Collected:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            await asyncio.sleep(0.05)
            active["now"] -= 1
            return Collected(gid=leaves[0].gid, n=len(leaves))

        @step
        async def finish(self, got: list[Collected]) -> StopEvent:
            return StopEvent(result=sorted((c.gid, c.n) for c in got))

    assert await Overlap(timeout=5).run() == [(0, 3), (1, 3)]
    assert active["max"] == 1


# -- Take(n) and nesting ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_take_one_fires_with_the_first_arrival_and_the_siblings_still_run() -> None:
    """`Collect(Take(1))` fires once with the fastest; the other workers are not cancelled."""
    worked: list[int] = []
    joined: list[list[int]] = []

    class Fastest(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(4)]

        @step(num_workers=4)
        async def work(self, ev: Task) -> Done:
            await asyncio.sleep(0.01 * (4 - ev.n))
            worked.append(ev.n)
            return Done(n=ev.n)

        @step
        async def first(self, events: Annotated[list[Done], Collect(Take(1))]) -> None:
            joined.append([e.n for e in events])

        @step
        async def all_done(self, events: list[Done]) -> StopEvent:
            return StopEvent(result=len(events))

    assert await Fastest(timeout=5).run() == 4
    assert joined == [[3]]
    assert sorted(worked) == [0, 1, 2, 3]


@pytest.mark.asyncio
async def test_take_more_than_arrive_fires_on_close_with_what_arrived() -> None:
    """`Take(5)` of a batch that yields 2 fires when the batch is over, with the 2."""

    class Short(Squares):
        @step
        async def join(self, events: Annotated[list[Done], Collect(Take(5))]) -> StopEvent:
            return StopEvent(result=sorted(e.n for e in events))

    assert await Short(timeout=5).run(start_event=StartEvent(count=3, drop=[1])) == [0, 2]


class Nested(Workflow):
    """Three outer tasks, each fanning out two inner tasks; joins at both levels."""

    @step
    async def outer(self, ev: StartEvent) -> list[Task]:
        return [Task(n=o) for o in range(3)]

    @step
    async def inner(self, ev: Task) -> list[InnerTask]:
        return [InnerTask(outer=ev.n, inner=i) for i in range(2)]

    @step
    async def inner_work(self, ev: InnerTask) -> InnerDone:
        await asyncio.sleep(0.01 * ev.inner)
        return InnerDone(outer=ev.outer, inner=ev.inner)

    @step
    async def per_inner(self, events: list[InnerDone]) -> InnerSummary | None:
        return InnerSummary(outer=events[0].outer, total=len(events))

    @step
    async def per_outer(self, events: list[InnerSummary]) -> StopEvent:
        return StopEvent(result=sorted((s.outer, s.total) for s in events))


@pytest.mark.asyncio
async def test_nested_fan_out_joins_each_inner_batch_then_the_outer_one() -> None:
    """The inner join fires once per outer task, the outer join once over their results."""
    calls: list[int] = []

    class Counted(Nested):
        @step
        async def per_inner(self, events: list[InnerDone]) -> InnerSummary:
            calls.append(events[0].outer)
            return InnerSummary(outer=events[0].outer, total=len(events))

    assert await Counted(timeout=5).run() == [(0, 2), (1, 2), (2, 2)]
    assert sorted(calls) == [0, 1, 2]


@pytest.mark.asyncio
async def test_an_inner_take_releases_per_inner_batch() -> None:
    """`Take(1)` on the inner join fires once per inner batch, with one event each."""

    class Firsts(Nested):
        @step
        async def per_inner(
            self, events: Annotated[list[InnerDone], Collect(Take(1))]
        ) -> InnerSummary:
            return InnerSummary(outer=events[0].outer, total=len(events))

    assert await Firsts(timeout=5).run() == [(0, 1), (1, 1), (2, 1)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("dropped", "result"),
    [
        pytest.param([1], [(0, 2), (2, 2)], id="one-inner-join-drops"),
        pytest.param([0, 1, 2], [], id="every-inner-join-drops"),
    ],
)
async def test_an_inner_join_returning_none_drops_its_branch_of_the_outer_batch(
    dropped: list[int], result: list[tuple[int, int]]
) -> None:
    """The outer join sees the inner joins that returned a summary ([] if none did)."""

    class Drops(Nested):
        @step
        async def per_inner(self, events: list[InnerDone]) -> InnerSummary | None:
            if events[0].outer in dropped:
                return None
            return InnerSummary(outer=events[0].outer, total=len(events))

    assert await Drops(timeout=5).run() == result


@pytest.mark.asyncio
async def test_a_join_that_fans_out_again_opens_a_batch_per_release() -> None:
    """A list[E] step returning a list starts a batch of its own each time it fires."""

    class D(Event):
        o: int
        i: int

    class N(Event):
        o: int
        i: int

    class Total(Event):
        o: int
        count: int

    class Refan(Workflow):
        @step
        async def outer(self, ev: StartEvent) -> list[Task]:
            return [Task(n=k) for k in range(2)]

        @step
        async def inner_fan(self, ev: Task) -> list[D]:
            return [D(o=ev.n, i=j) for j in range(2)]

        @step
        async def collect_and_refan(self, events: list[D]) -> list[N]:
            return [N(o=e.o, i=e.i) for e in events]

        @step
        async def join(self, events: list[N]) -> Total:
            return Total(o=events[0].o, count=len(events))

        @step
        async def total_join(self, events: list[Total]) -> StopEvent:
            return StopEvent(result=sorted((t.o, t.count) for t in events))

    assert await Refan(timeout=5).run() == [(0, 2), (1, 2)]


# -- steps with several event parameters -------------------------------------------------


class Header(Event):
    value: str


class Body(Event):
    value: str


class Footer(Event):
    value: str


@pytest.mark.asyncio
async def test_a_three_parameter_step_fires_once_one_of_each_arrived() -> None:
    """Each parameter gets the event of its type, whatever the order they were sent in."""
    calls: list[str] = []

    class Assemble(Workflow):
        @step
        async def emit(self, ctx: Context, ev: StartEvent) -> Header | Body | Footer | None:
            ctx.send_event(Footer(value="F"))
            ctx.send_event(Header(value="H"))
            ctx.send_event(Body(value="B"))
            return None

        @step
        async def assemble(self, h: Header, ctx: Context, b: Body, *, f: Footer) -> StopEvent:
            calls.append(h.value + b.value + f.value)
            return StopEvent(result=calls[-1])

    assert await Assemble(timeout=5).run() == "HBF"
    assert calls == ["HBF"]


@pytest.mark.asyncio
async def test_repeats_pair_up_first_in_first_out_and_an_odd_one_waits() -> None:
    """h1 h2 b1 b2 h3 make (h1, b1) and (h2, b2); h3 waits for a Body that never comes."""
    pairs: list[tuple[str, str]] = []

    class Go(Event):
        pass

    class Pairs(Workflow):
        @step
        async def emit(self, ctx: Context, ev: StartEvent) -> Header | Body | Go | None:
            for event in [Header(value="h1"), Header(value="h2"), Body(value="b1")]:
                ctx.send_event(event)
            ctx.send_event(Body(value="b2"))
            ctx.send_event(Header(value="h3"))
            await asyncio.sleep(0.05)
            ctx.send_event(Go())
            return None

        @step
        async def pair(self, h: Header, b: Body) -> None:
            pairs.append((h.value, b.value))

        @step
        async def finish(self, ev: Go) -> StopEvent:
            return StopEvent(result=list(pairs))

    assert await Pairs(timeout=5).run() == [("h1", "b1"), ("h2", "b2")]


@pytest.mark.asyncio
async def test_parameters_of_one_type_take_events_in_arrival_order() -> None:
    """`(first: Header, second: Header)` gets the first and the second Header sent."""

    class Same(Workflow):
        @step
        async def emit(self, ctx: Context, ev: StartEvent) -> Header | None:
            ctx.send_event(Header(value="first"))
            ctx.send_event(Header(value="second"))
            return None

        @step
        async def both(self, first: Header, second: Header) -> StopEvent:
            return StopEvent(result=f"{first.value},{second.value}")

    assert await Same(timeout=5).run() == "first,second"


@pytest.mark.asyncio
async def test_a_failing_several_parameter_step_reports_the_last_arrival() -> None:
    """StepFailedEvent.input_event of such a step is the event that completed it."""
    inputs: list[Event] = []

    class Fails(Workflow):
        @step
        async def emit(self, ctx: Context, ev: StartEvent) -> Header | Body | None:
            ctx.send_event(Header(value="h"))
            ctx.send_event(Body(value="b"))
            return None

        @step
        async def assemble(self, h: Header, b: Body) -> StopEvent:
            raise RuntimeError(h.value + b.value)

        @catch_error(for_steps=["assemble"])
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            inputs.append(ev.input_event)
            return StopEvent(result=str(ev.exception))

    assert await Fails(timeout=5).run() == "hb"
    assert inputs == [Body(value="b")]


@pytest.mark.asyncio
async def test_a_pair_join_inside_a_batch_keeps_the_batch_counting() -> None:
    """Inside a fan-out, what a several-parameter step returns is collected by the join."""

    class Left(Event):
        n: int

    class Right(Event):
        n: int

    class Sum(Event):
        n: int

    class Pairs(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(3)]

        @step
        async def left(self, ev: Task) -> Left:
            return Left(n=ev.n)

        @step
        async def right(self, ev: Task) -> Right:
            await asyncio.sleep(0.01)
            return Right(n=10 * ev.n)

        @step
        async def pair(self, a: Left, b: Right) -> Sum:
            return Sum(n=a.n + b.n)

        @step
        async def join(self, events: list[Sum]) -> StopEvent:
            return StopEvent(result=len(events))

    assert await Pairs(timeout=5).run() == 3


# -- stream, telemetry ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_fan_out_run_streams_like_any_other() -> None:
    """The stream of a fan-out run ends with its StopEvent; nothing internal leaks in."""
    events = await drain(Squares(timeout=5).run())
    assert [type(e) for e in events] == [StopEvent]


@pytest.mark.asyncio
async def test_the_join_span_links_to_the_span_that_produced_each_collected_event(
    tel: CapturedTelemetry,
) -> None:
    """The join's step span has a link to every worker span whose Done it collected."""
    assert await Squares(timeout=5).run(start_event=StartEvent(count=3)) == [2, 1, 0]
    workers = tel.named(step_span_name("work"))
    join = tel.one(step_span_name("join"))
    assert sorted(link.context.span_id for link in join.links) == sorted(
        span_id(w) for w in workers
    )
    assert attr(join, attrs.EVENT_IN) == "CollectionReleaseEvent"


# -- saving a run in the middle of a fan-out ---------------------------------------------


class Asks(Workflow):
    """Two tasks finish at once; two ask a human first: the save happens in between."""

    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        return [Task(n=i) for i in range(4)]

    @step(num_workers=4)
    async def work(self, ctx: Context, ev: Task) -> Done:
        if ev.n < 2:
            return Done(n=ev.n)
        answer = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_event=InputRequiredEvent(prefix=str(ev.n)),
            waiter_id=f"ask-{ev.n}",
            requirements={"step": str(ev.n)},
        )
        return Done(n=10 * ev.n + int(answer["response"]))

    @step
    async def join(self, events: list[Done]) -> StopEvent:
        return StopEvent(result=sorted(e.n for e in events))


@pytest.mark.asyncio
async def test_a_run_saved_mid_fan_out_keeps_its_batch_and_what_the_join_collected() -> None:
    """Saved while two branches wait, the continued run's join sees all four results."""
    handler = Asks(timeout=5).run()
    asked = 0
    saved: dict[str, Any] = {}
    async with asyncio.timeout(5):
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                asked += 1
                if asked == 2:
                    saved = json.loads(json.dumps(handler.ctx.to_dict()))
                    await handler.cancel_run()
                    break
    [batch] = saved["batches"]
    assert (batch["batch_id"], batch["producer"]) == ("fan_out#0", "fan_out")
    assert len(batch["buffers"]["join"]) == 2
    assert sorted(tuple(q["scope"]) for q in saved["queue"]) == [("fan_out#0",)] * 2

    wf = Asks(timeout=5)
    resumed = wf.run(ctx=Context.from_dict(wf, saved))
    await resumed.send_event(HumanResponseEvent(response="1", step="2"))
    await resumed.send_event(HumanResponseEvent(response="2", step="3"))
    assert await resumed == [0, 1, 21, 32]


@pytest.mark.asyncio
async def test_a_context_saved_by_the_earlier_format_still_loads() -> None:
    """A version 1 saved context (no batches) is read as before."""
    handler = Asks(timeout=5).run()
    async with asyncio.timeout(5):
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                break
    saved = handler.ctx.to_dict()
    await handler.cancel_run()
    old = {k: v for k, v in saved.items() if k not in {"batches", "batch_seq", "slots"}}
    old["version"] = 1
    old["queue"] = [{"step": q["step"], "event": q["event"]} for q in saved["queue"]]
    assert Context.from_dict(Asks(), old).is_running


@pytest.mark.asyncio
async def test_collect_events_inside_a_batch_returns_into_the_batch() -> None:
    """A step of the batch joining with ctx.collect_events: its result is collected."""

    class Summed(Event):
        total: int

    class Gathers(Workflow):
        @step
        async def fan_out(self, ev: StartEvent) -> list[Task]:
            return [Task(n=i) for i in range(3)]

        @step
        async def gather(self, ctx: Context, ev: Task) -> Summed | None:
            await asyncio.sleep(0.01)
            tasks = ctx.collect_events(ev, [Task] * 3)
            if tasks is None:
                return None
            return Summed(total=sum(t.n for t in tasks if isinstance(t, Task)))

        @step
        async def join(self, events: list[Summed]) -> StopEvent:
            return StopEvent(result=[e.total for e in events])

    assert await Gathers(timeout=5).run() == [3]
