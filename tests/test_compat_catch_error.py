"""``@catch_error`` and ``StepFailedEvent``, through the public API, as in LlamaIndex Workflows.

A step's final failure (after its retries) goes to the ``@catch_error`` handler covering
it, which gets a ``StepFailedEvent`` and may recover the run; each handler recovers one
chain of events at most ``max_recoveries`` times; a handler's own failure ends the run.
The handlers are checked when the workflow class is instantiated (stepstream checks the
whole graph there; LlamaIndex at ``run()``), the decorator's options when it is applied.
"""

from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from _helpers import BoomError
from _helpers import boom
from _helpers import raise_next
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.decorators import catch_error
from stepstream.errors import WorkflowConfigurationError
from stepstream.errors import WorkflowValidationError
from stepstream.events import StepFailedEvent
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_none
from stepstream.testing import capture_telemetry


class Work(Event):
    n: int = 0


class Covered(Event):
    pass


class Uncovered(Event):
    pass


class OtherError(Exception):
    pass


class HandlerBrokeError(Exception):
    pass


class Recovering(Workflow):
    """``work`` fails all three attempts; the bare @catch_error handler recovers the run."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.sent: list[Work] = []
        self.raised: list[BoomError] = []
        self.failures: list[StepFailedEvent] = []

    @step
    async def start(self, ev: StartEvent) -> Work:
        work = Work(n=7)
        self.sent.append(work)
        return work

    @step(retry_policy=retry_policy(wait=wait_none(), stop=stop_after_attempt(3)))
    async def work(self, ev: Work) -> StopEvent:
        raise_next(self.raised)

    @catch_error
    async def on_error(self, ev: StepFailedEvent) -> StopEvent:
        self.failures.append(ev)
        return StopEvent(result=f"recovered {ev.step_name}")


class Scoped(Workflow):
    """The handler covers ``covered`` only; ``uncovered`` fails on its own."""

    @step
    async def start(self, ev: StartEvent) -> Covered | Uncovered:
        return Covered() if ev.get("which") == "covered" else Uncovered()

    @step
    async def covered(self, ev: Covered) -> StopEvent:
        raise boom(1)

    @step
    async def uncovered(self, ev: Uncovered) -> StopEvent:
        msg = "uncovered failed"
        raise OtherError(msg)

    @catch_error(for_steps=["covered"])
    async def on_error(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result=f"recovered {ev.step_name}")


class Looping(Workflow):
    """``work`` always fails; the handler of a subclass sends a Work back into it."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.raised: list[BoomError] = []
        self.recovered: list[str] = []

    @step
    async def start(self, ev: StartEvent) -> Work:
        return Work()

    @step
    async def work(self, ev: Work) -> StopEvent:
        raise_next(self.raised)


def resend(ev: StepFailedEvent) -> Work:
    """The failed step's input event, to send back into it."""
    assert isinstance(ev.input_event, Work)
    return ev.input_event


class LoopingOnce(Looping):
    @catch_error(max_recoveries=1)
    async def on_error(self, ev: StepFailedEvent) -> Work:
        self.recovered.append(str(ev.exception))
        return resend(ev)


class LoopingTwice(Looping):
    @catch_error(max_recoveries=2)
    async def on_error(self, ev: StepFailedEvent) -> Work:
        self.recovered.append(str(ev.exception))
        return resend(ev)


class RestartingOnce(Workflow):
    """The start step always fails; the handler starts the run over with a new StartEvent."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.raised: list[BoomError] = []

    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        raise_next(self.raised)

    @catch_error(max_recoveries=1)
    async def on_error(self, ev: StepFailedEvent) -> StartEvent:
        return StartEvent()


class HandlerRaises(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        raise boom(1)

    @catch_error
    async def on_error(self, ev: StepFailedEvent) -> StopEvent:
        msg = f"handler broke on {ev.exception}"
        raise HandlerBrokeError(msg)


def is_aware_utc(moment: datetime) -> bool:
    """Tell whether ``moment`` carries a timezone whose offset is zero."""
    return moment.tzinfo is not None and moment.utcoffset() == timedelta(0)


# -- the handler recovers ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_handler_gets_a_step_failed_event_and_its_stop_event_ends_the_run() -> None:
    """A bare handler gets the step, its input, the live exception, attempts and times."""
    wf = Recovering()
    before = datetime.now(UTC)
    result = await wf.run()
    after = datetime.now(UTC)
    assert result == "recovered work"
    assert [str(e) for e in wf.raised] == ["boom 1", "boom 2", "boom 3"]
    [failed] = wf.failures
    assert type(failed) is StepFailedEvent
    assert failed.step_name == "work"
    assert failed.input_event == wf.sent[0]
    assert isinstance(failed.input_event, Work)
    assert failed.input_event.n == 7
    assert failed.exception is wf.raised[-1]
    assert failed.exception.__traceback__ is not None
    assert failed.attempts == 3
    assert failed.elapsed_seconds >= 0
    assert is_aware_utc(failed.failed_at)
    assert before <= failed.failed_at <= after


@pytest.mark.asyncio
async def test_for_steps_covers_only_the_named_steps() -> None:
    """for_steps=['covered'] recovers that step only; another step's failure ends the run."""
    assert await Scoped().run(which="covered") == "recovered covered"
    with pytest.raises(OtherError) as info:
        await Scoped().run(which="uncovered")
    assert str(info.value) == "uncovered failed"


# -- max_recoveries ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_max_recoveries_1_lets_the_second_failure_on_the_chain_end_the_run() -> None:
    """With max_recoveries=1 the handler recovers once; the step's second failure fails the run."""
    wf = LoopingOnce()
    with pytest.raises(BoomError) as info:
        await wf.run()
    assert [str(e) for e in wf.raised] == ["boom 1", "boom 2"]
    assert info.value is wf.raised[-1]
    assert wf.recovered == ["boom 1"]


@pytest.mark.asyncio
async def test_a_new_start_event_from_the_handler_is_on_the_same_chain() -> None:
    """A handler re-emitting StartEvent into the failing start step recovers it once only."""
    wf = RestartingOnce()
    with pytest.raises(BoomError) as info:
        await wf.run()
    assert [str(e) for e in wf.raised] == ["boom 1", "boom 2"]
    assert info.value is wf.raised[-1]


@pytest.mark.asyncio
async def test_max_recoveries_2_lets_the_third_failure_on_the_chain_end_the_run() -> None:
    """With max_recoveries=2 the handler recovers twice; the step's third failure fails the run."""
    wf = LoopingTwice()
    with pytest.raises(BoomError) as info:
        await wf.run()
    assert [str(e) for e in wf.raised] == ["boom 1", "boom 2", "boom 3"]
    assert info.value is wf.raised[-1]
    assert wf.recovered == ["boom 1", "boom 2"]


@pytest.mark.asyncio
async def test_a_handler_that_raises_ends_the_run_with_its_own_exception() -> None:
    """A handler's own failure is not caught again: the run fails with the handler's exception."""
    with pytest.raises(HandlerBrokeError) as info:
        await HandlerRaises().run()
    assert str(info.value) == "handler broke on boom 1"


# -- checks when the workflow is instantiated ----------------------------------------------


def configuration_problems(workflow: type[Workflow]) -> tuple[str, ...]:
    """The problems of the WorkflowConfigurationError that instantiating ``workflow`` raises."""
    with pytest.raises(WorkflowConfigurationError) as info:
        workflow()
    assert isinstance(info.value, WorkflowValidationError)
    assert str(info.value).splitlines()[0] == (
        f"workflow {workflow.__name__} is invalid ({len(info.value.problems)} problem(s)):"
    )
    return info.value.problems


class TwoWildcards(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @catch_error
    async def first(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error
    async def second(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


class UnknownTarget(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @catch_error(for_steps=["nope"])
    async def on_error(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


class CoversAHandler(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @catch_error
    async def fallback(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error(for_steps=["fallback"])
    async def on_error(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


class ClaimedTwice(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @catch_error(for_steps=["start"])
    async def first(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error(for_steps=["start"])
    async def second(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


class WrongEvent(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Work:
        return Work()

    @step
    async def work(self, ev: Work) -> StopEvent:
        return StopEvent()

    @catch_error
    async def on_error(self, ev: Work) -> StopEvent:
        return StopEvent()


def test_two_wildcard_handlers_are_refused() -> None:
    """Only one handler without for_steps is allowed per workflow."""
    assert configuration_problems(TwoWildcards) == (
        (
            "only one @catch_error handler without for_steps is allowed per workflow, found 2: "
            "first, second; name the steps of the others with for_steps=[...]"
        ),
    )


def test_an_unknown_step_in_for_steps_is_refused() -> None:
    """for_steps must name steps of the workflow."""
    assert configuration_problems(UnknownTarget) == (
        (
            "@catch_error handler 'on_error' lists unknown step 'nope' in for_steps; the "
            "workflow's steps are on_error, start"
        ),
    )


def test_a_handler_cannot_cover_another_handler() -> None:
    """A handler's own failure ends the run, so no handler may cover it."""
    assert configuration_problems(CoversAHandler) == (
        (
            "@catch_error handler 'on_error' cannot cover another handler step 'fallback'; a "
            "handler's own failure ends the run"
        ),
    )


def test_a_step_claimed_by_two_handlers_is_refused() -> None:
    """A step may be named in the for_steps of one handler only."""
    assert configuration_problems(ClaimedTwice) == (
        (
            "step 'start' is claimed by two @catch_error handlers: 'first' and 'second'; keep it "
            "in one for_steps"
        ),
    )


def test_a_handler_must_accept_step_failed_event() -> None:
    """A handler whose event parameter is not StepFailedEvent is refused."""
    assert configuration_problems(WrongEvent) == (
        (
            "@catch_error handler 'on_error' must accept StepFailedEvent as its event parameter; "
            "annotate it `ev: StepFailedEvent`"
        ),
    )


# -- checks when the decorator is applied --------------------------------------------------


async def handler_fn(ctx: Context[Any], ev: StepFailedEvent) -> StopEvent:
    """A handler function for the decorator checks below."""
    return StopEvent()


def decoration_problems(options: dict[str, Any]) -> tuple[str, ...]:
    """The problems of the WorkflowValidationError that ``@catch_error(**options)`` raises."""
    with pytest.raises(WorkflowValidationError) as info:
        catch_error(**options)(handler_fn)
    assert str(info.value).splitlines()[0] == (
        "@catch_error options for step 'handler_fn' are invalid"
    )
    return info.value.problems


@pytest.mark.parametrize(
    ("value", "shown"), [(0, "0"), (True, "True"), ("1", "'1'")], ids=["zero", "bool", "str"]
)
def test_max_recoveries_must_be_an_integer_of_at_least_1(value: object, shown: str) -> None:
    """max_recoveries=0, True or '1' is refused when the decorator is applied."""
    assert decoration_problems({"max_recoveries": value}) == (
        f"max_recoveries must be an integer >= 1, got {shown}",
    )


@pytest.mark.parametrize(
    ("value", "shown"), [("a", "'a'"), ([1], "[1]")], ids=["str", "list-of-int"]
)
def test_for_steps_must_be_a_list_of_step_names(value: object, shown: str) -> None:
    """for_steps='a' or [1] is refused when the decorator is applied."""
    assert decoration_problems({"for_steps": value}) == (
        f"for_steps must be None or a list of step names, got {shown}",
    )


# -- telemetry -----------------------------------------------------------------------------


class Telemetered(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Work:
        return Work()

    @step
    async def work(self, ev: Work) -> StopEvent:
        raise boom(1)

    @catch_error
    async def on_error(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result="recovered")


@pytest.mark.asyncio
async def test_a_recovered_failure_is_traced_and_logged() -> None:
    """The failed span is ERROR and logged, the handler's span links to it, the run is ok."""
    with capture_telemetry() as tel:
        assert await Telemetered().run() == "recovered"
    failed = tel.one("run_step work")
    assert failed.status.status_code.name == "ERROR"
    assert failed.status.description == "BoomError: boom 1"
    [line] = tel.lines("step_failed")
    assert line["step"] == "work"
    assert line["level"] == "error"
    assert line["error_type"] == "BoomError"
    assert line["error"] == "boom 1"
    handler_span = tel.one("run_step on_error")
    assert failed.context is not None
    assert [link.context for link in handler_span.links] == [failed.context]
    run_span = tel.one("invoke_workflow Telemetered")
    assert run_span.attributes is not None
    assert run_span.attributes["stepstream.run.status"] == "ok"
    assert run_span.status.status_code.name != "ERROR"
