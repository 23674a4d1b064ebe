"""Context semantics: send_event, collect_events, wait_for_event, human input, the store."""

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic import Field

from _helpers import FanOutJobs
from _helpers import HumanLoop
from _helpers import Job
from _helpers import JobDone
from _helpers import SendsJobs
from _helpers import answer_prompts
from _helpers import drain
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowTimeoutError
from stepstream import step

# -- helpers ----------------------------------------------------------------------------


# -- send_event -------------------------------------------------------------------------


class Ping(Event):
    pass


class Pong(Event):
    pass


class Heard(Event):
    by: str


class RouteStart(StartEvent):
    target: str | None = None
    expect: int = 1


class Router(Workflow):
    """Sends one Ping, broadcast or to one step; two steps take Ping, one takes Pong."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.calls: list[str] = []

    @step
    async def start(self, ctx: Context[Any], ev: RouteStart) -> Ping | Pong | None:
        await ctx.store.set("expect", ev.expect)
        ctx.send_event(Ping(), step=ev.target)
        return None

    @step
    async def ping_a(self, ctx: Context[Any], ev: Ping) -> Heard:
        self.calls.append("ping_a")
        return Heard(by="ping_a")

    @step
    async def ping_b(self, ctx: Context[Any], ev: Ping) -> Heard:
        self.calls.append("ping_b")
        return Heard(by="ping_b")

    @step
    async def pong(self, ctx: Context[Any], ev: Pong) -> Heard:
        self.calls.append("pong")
        return Heard(by="pong")

    @step
    async def join(self, ctx: Context[Any], ev: Heard) -> StopEvent | None:
        expect = await ctx.store.get("expect")
        got = ctx.collect_events(ev, [Heard] * expect)
        if got is None:
            return None
        return StopEvent(result=sorted(e.by for e in got if isinstance(e, Heard)))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(None, ["ping_a", "ping_b"], id="broadcast-to-every-taker"),
        pytest.param("ping_a", ["ping_a"], id="targeted-ping_a"),
        pytest.param("ping_b", ["ping_b"], id="targeted-ping_b"),
    ],
)
@pytest.mark.asyncio
async def test_send_event_routes_to_accepting_steps(
    target: str | None, expected: list[str]
) -> None:
    """send_event reaches every step accepting the event, or only the named step."""
    wf = Router()
    result = await wf.run(target=target, expect=len(expected))
    assert result == expected
    assert sorted(wf.calls) == expected


# -- collect_events ---------------------------------------------------------------------


class EvA(Event):
    pass


class EvB(Event):
    pass


class OrderStart(StartEvent):
    b_first: bool


class Joiner(Workflow):
    """Sends one EvA and one EvB in a chosen order to a single-worker join."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.sent: list[Event] = []
        self.arrivals: list[str] = []
        self.returns: list[list[str] | None] = []

    @step
    async def start(self, ctx: Context[Any], ev: OrderStart) -> EvA | EvB | None:
        a, b = EvA(), EvB()
        self.sent = [a, b]
        for e in (b, a) if ev.b_first else (a, b):
            ctx.send_event(e)
        return None

    @step(num_workers=1)
    async def join(self, ctx: Context[Any], ev: EvA | EvB) -> StopEvent | None:
        self.arrivals.append(type(ev).__name__)
        got = ctx.collect_events(ev, [EvA, EvB])
        self.returns.append(None if got is None else [type(e).__name__ for e in got])
        if got is None:
            return None
        return StopEvent(result=got)


@pytest.mark.parametrize(
    ("b_first", "arrivals"),
    [
        pytest.param(True, ["EvB", "EvA"], id="arrive-B-then-A"),
        pytest.param(False, ["EvA", "EvB"], id="arrive-A-then-B"),
    ],
)
@pytest.mark.asyncio
async def test_collect_events_returns_in_expected_order(b_first: bool, arrivals: list[str]) -> None:
    """collect_events gives None until all arrived, then the events in expected order."""
    wf = Joiner()
    result = await wf.run(b_first=b_first)
    assert wf.arrivals == arrivals
    assert wf.returns == [None, ["EvA", "EvB"]]
    assert len(result) == 2
    assert result[0] is wf.sent[0]
    assert result[1] is wf.sent[1]


class Five(SendsJobs):
    """Sends five Job events to a join expecting ``[Job] * 5``."""

    jobs = 5

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.nones = 0

    @step(num_workers=1)
    async def join(self, ctx: Context[Any], ev: Job) -> StopEvent | None:
        got = ctx.collect_events(ev, [Job] * 5)
        if got is None:
            self.nones += 1
            return None
        return StopEvent(result=[e.i for e in got if isinstance(e, Job)])


@pytest.mark.asyncio
async def test_collect_events_waits_for_repeated_types() -> None:
    """collect_events with [Job] * 5 returns None four times, then all five events."""
    wf = Five()
    assert await wf.run() == [0, 1, 2, 3, 4]
    assert wf.nones == 4


FAN = 10_000


class FanIn(FanOutJobs):
    """Fans 10,000 events out through an 8-worker step and back in with one join."""

    jobs = FAN

    @step(num_workers=8)
    async def worker(self, ctx: Context[Any], ev: Job) -> JobDone:
        return JobDone(i=ev.i)


@pytest.mark.asyncio
async def test_large_fan_in_completes_with_every_event() -> None:
    """A 10,000-event fan-in through num_workers=8 collects every event exactly once."""
    result = await FanIn(timeout=30).run()
    assert result == list(range(FAN))


# -- wait_for_event ---------------------------------------------------------------------


class Asker(Workflow):
    """Waits mid-step for ada's HumanResponseEvent, counting entries into its body."""

    def __init__(self, wait_timeout: float | None = 2) -> None:
        super().__init__(timeout=5)
        self.wait_timeout = wait_timeout
        self.entries = 0

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        self.entries += 1
        answer = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_event=InputRequiredEvent(prefix="Your name? ", user="ada"),
            requirements={"user": "ada"},
            timeout=self.wait_timeout,
        )
        return StopEvent(result=answer["response"])


@pytest.mark.asyncio
async def test_wait_for_event_resumes_the_step_with_the_answer() -> None:
    """The waiter event is streamed; the caller's answer resumes the step without re-running it."""
    wf = Asker()
    handler = wf.run()
    events = await answer_prompts(handler, HumanResponseEvent(user="ada", response="Ada"))
    assert await handler == "Ada"
    assert wf.entries == 1
    prompts = [ev for ev in events if isinstance(ev, InputRequiredEvent)]
    assert len(prompts) == 1
    assert prompts[0]["prefix"] == "Your name? "
    assert type(events[-1]) is StopEvent


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param({"user": "bob"}, id="other-value"),
        pytest.param({}, id="field-missing"),
    ],
)
@pytest.mark.asyncio
async def test_wait_for_event_requirements_filter_events(wrong: dict[str, str]) -> None:
    """An answer failing the requirements is refused with a message naming them; a match resumes."""
    wf = Asker()
    handler = wf.run()
    refused: list[str] = []
    async with asyncio.timeout(2):
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                with pytest.raises(WorkflowRuntimeError) as info:
                    handler.ctx.send_event(HumanResponseEvent(response="wrong", **wrong))
                refused.append(str(info.value))
                handler.ctx.send_event(HumanResponseEvent(user="ada", response="right"))
    assert await handler == "right"
    assert wf.entries == 1
    assert refused == [
        (
            "HumanResponseEvent does not meet the requirements of the step waiting for it "
            "(user='ada') and no step of workflow Asker accepts it; send a HumanResponseEvent "
            "whose fields match"
        )
    ]


@pytest.mark.asyncio
async def test_wait_for_event_timeout_names_step_and_event_type() -> None:
    """An unanswered wait times out with WorkflowTimeoutError naming the step and event type."""
    wf = Asker(wait_timeout=0.05)
    handler = wf.run()
    events = await drain(handler)
    assert any(isinstance(ev, InputRequiredEvent) for ev in events)
    last = events[-1]
    assert isinstance(last, WorkflowFailedEvent)
    assert last.step == "ask"
    assert last.exception_type == "WorkflowTimeoutError"
    with pytest.raises(WorkflowTimeoutError) as exc_info:
        await handler
    message = str(exc_info.value)
    assert "ask" in message
    assert "HumanResponseEvent" in message
    assert wf.entries == 1


# -- human in the loop, the classic pattern ---------------------------------------------


@pytest.mark.asyncio
async def test_human_in_the_loop_classic_pattern() -> None:
    """A returned InputRequiredEvent is streamed; the caller's HumanResponseEvent ends the run."""
    handler = HumanLoop(timeout=5).run()
    events = await answer_prompts(handler, HumanResponseEvent(response="yes"))
    assert await handler == "yes"
    assert len(events) == 2
    assert isinstance(events[0], InputRequiredEvent)
    assert events[0]["prefix"] == "name?"
    assert type(events[1]) is StopEvent


# -- the store --------------------------------------------------------------------------


class Stored(Event):
    pass


class KeyStart(StartEvent):
    value: str = "hello"


class StoreFlow(Workflow):
    """One step sets keys, the next reads them back, with and without defaults."""

    @step
    async def put(self, ctx: Context[Any], ev: KeyStart) -> Stored:
        await ctx.store.set("greeting", ev.value)
        await ctx.store.set("count", 3)
        return Stored()

    @step
    async def take(self, ctx: Context[Any], ev: Stored) -> StopEvent:
        return StopEvent(
            result=(
                await ctx.store.get("greeting"),
                await ctx.store.get("count"),
                await ctx.store.get("absent", default="fallback"),
                await ctx.store.get("absent", default=None),
            )
        )


class MissingKey(Workflow):
    """Reads a key nobody set."""

    @step
    async def read(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        return StopEvent(result=await ctx.store.get("nope"))


@pytest.mark.asyncio
async def test_store_set_and_get_across_steps() -> None:
    """Values set in one step are read in another; defaults cover absent keys."""
    assert await StoreFlow(timeout=5).run() == ("hello", 3, "fallback", None)


@pytest.mark.asyncio
async def test_each_run_has_its_own_store() -> None:
    """Two runs of one workflow keep separate stores."""
    wf = StoreFlow(timeout=5)
    first, second = wf.run(value="one"), wf.run(value="two")
    assert await first == ("one", 3, "fallback", None)
    assert await second == ("two", 3, "fallback", None)
    assert await first.ctx.store.get("greeting") == "one"
    assert await second.ctx.store.get("greeting") == "two"


@pytest.mark.asyncio
async def test_store_get_of_a_missing_key_raises_naming_it() -> None:
    """Getting a key that was never set, without default, raises ValueError naming it."""
    handler = MissingKey(timeout=5).run()
    with pytest.raises(ValueError, match="path 'nope' not found in the state"):
        await handler


class Tally(BaseModel):
    count: int = 0
    visited: list[str] = Field(default_factory=list)


class Middle(Event):
    pass


class Last(Event):
    pass


async def visit(ctx: Context[Tally], name: str) -> None:
    """Count a visit of the step ``name`` in the typed state."""
    async with ctx.store.edit_state() as state:
        state.count += 1
        state.visited.append(name)


class Stateful(Workflow):
    """Three steps each edit the typed state; the last returns it."""

    @step
    async def first(self, ctx: Context[Tally], ev: StartEvent) -> Middle:
        await visit(ctx, "first")
        return Middle()

    @step
    async def second(self, ctx: Context[Tally], ev: Middle) -> Last:
        await visit(ctx, "second")
        return Last()

    @step
    async def third(self, ctx: Context[Tally], ev: Last) -> StopEvent:
        await visit(ctx, "third")
        return StopEvent(result=await ctx.store.get_state())


@pytest.mark.asyncio
async def test_typed_state_is_shared_across_steps() -> None:
    """Edits of the typed state in several steps accumulate in one Tally; get_state() copies it."""
    handler = Stateful(timeout=5).run()
    state = await handler
    assert isinstance(state, Tally)
    assert state.count == 3
    assert state.visited == ["first", "second", "third"]
    after = await handler.ctx.store.get_state()
    assert after == state
    assert after is not state  # get_state() returns a copy


class Bump(Event):
    pass


class Bumped(Event):
    pass


BUMPS = 20


class ConcurrentEdits(Workflow):
    """Twenty concurrent read-modify-writes of the typed state, each yielding mid-edit."""

    @step
    async def start(self, ctx: Context[Tally], ev: StartEvent) -> Bump | None:
        for _ in range(BUMPS):
            ctx.send_event(Bump())
        return None

    @step(num_workers=8)
    async def bump(self, ctx: Context[Tally], ev: Bump) -> Bumped:
        async with ctx.store.edit_state() as state:
            current = state.count
            await asyncio.sleep(0)
            state.count = current + 1
        return Bumped()

    @step
    async def join(self, ctx: Context[Tally], ev: Bumped) -> StopEvent | None:
        if ctx.collect_events(ev, [Bumped] * BUMPS) is None:
            return None
        state = await ctx.store.get_state()
        return StopEvent(result=state.count)


@pytest.mark.asyncio
async def test_edit_state_serialises_concurrent_edits() -> None:
    """Concurrent edit_state blocks lose no update, and each run starts from fresh state."""
    wf = ConcurrentEdits(timeout=5)
    assert await wf.run() == BUMPS
    assert await wf.run() == BUMPS
