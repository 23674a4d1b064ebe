"""Graph validation: every problem of a workflow is reported when it is instantiated."""

import re
from typing import Any

import pytest

from _helpers import AcceptsStop
from _helpers import Empty
from _helpers import HumanLoop
from _helpers import Leftover
from _helpers import ListParam
from _helpers import Minimal
from _helpers import NoEventParam
from _helpers import NoReturn
from _helpers import NoStart
from _helpers import NoStop
from _helpers import Orphan
from _helpers import TwoStarts
from _helpers import Unconsumed
from _helpers import Unproduced
from _helpers import answer_prompts
from _helpers import drain
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import step


class Progress(Event):
    msg: str


class AskEvent(InputRequiredEvent):
    question: str


class AnswerEvent(HumanResponseEvent):
    answer: str


# --- one problem per workflow --------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow_cls", "problem"),
    [
        pytest.param(NoStart, r"no step accepts StartEvent", id="no-start-step"),
        pytest.param(NoStop, r"no step can return a StopEvent", id="no-stop-step"),
        pytest.param(
            Unconsumed,
            r"event type Leftover is produced by 'start' but no step accepts it",
            id="produced-never-consumed",
        ),
        pytest.param(
            Unproduced,
            r"event type Orphan is accepted by step 'extra' but no step produces it",
            id="consumed-never-produced",
        ),
        pytest.param(
            NoEventParam, r"step 'lonely' has no event parameter", id="no-event-parameter"
        ),
        pytest.param(
            TwoStarts,
            r"more than one StartEvent type is accepted \(StartA by first; StartB by second\)",
            id="two-start-event-types",
        ),
        pytest.param(
            AcceptsStop,
            r"step 'after' accepts StopEvent, a StopEvent",
            id="step-accepts-stop-event",
        ),
        pytest.param(NoReturn, r"step 'start' has no return annotation", id="no-return-annotation"),
        pytest.param(
            ListParam,
            r"step 'start': parameter 'items' is a list\[E\] fan-in, which must be the step's "
            r"only event parameter",
            id="list-beside-another-event-parameter",
        ),
        pytest.param(Empty, r"workflow Empty has no steps", id="no-steps"),
    ],
)
def test_single_problem_is_reported_at_instantiation(
    workflow_cls: type[Workflow], problem: str
) -> None:
    """A workflow with exactly one problem raises WorkflowValidationError describing it."""
    with pytest.raises(WorkflowValidationError, match=problem) as info:
        workflow_cls()
    assert len(info.value.problems) == 1
    assert f"workflow {workflow_cls.__name__} is invalid (1 problem(s))" in str(info.value)


# --- several problems in one error ----------------------------------------------------------


class BrokenGraph(Workflow):
    """No start step, no stop step; Leftover is never consumed and Orphan never produced."""

    @step
    async def orphan(self, ev: Orphan) -> Leftover:
        return Leftover()


class BrokenEverywhere(BrokenGraph):
    """BrokenGraph's problems, and a step without an event parameter."""

    @step
    async def lonely(self, ctx: Context[Any]) -> None:
        return None


class BadSignatures(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def no_event(self, ctx: Context[Any]) -> StopEvent:
        return StopEvent()

    @step
    async def wrong_type(self, ev: int) -> StopEvent:
        return StopEvent()

    @step
    async def no_return(self, ev: StartEvent):  # type: ignore[no-untyped-def]  # noqa: ANN201
        return None


#: What BrokenGraph gets wrong, as its error says it.
GRAPH_PROBLEMS = (
    "no step accepts StartEvent",
    "no step can return a StopEvent",
    "event type Leftover is produced by 'orphan' but no step accepts it",
    "event type Orphan is accepted by step 'orphan' but no step produces it",
)


def validation_error(workflow_cls: type[Workflow]) -> WorkflowValidationError:
    """The WorkflowValidationError that instantiating ``workflow_cls`` raises."""
    with pytest.raises(WorkflowValidationError) as info:
        workflow_cls()
    return info.value


def test_every_graph_problem_is_listed_in_one_error() -> None:
    """No start step, no stop step, an unconsumed and an unproduced event appear in one message."""
    error = validation_error(BrokenGraph)
    message = str(error)
    assert "workflow BrokenGraph is invalid (4 problem(s))" in message
    for problem in GRAPH_PROBLEMS:
        assert problem in message
    assert len(error.problems) == 4
    assert all(f"  - {p}" in message for p in error.problems)


def test_signature_problems_of_every_step_are_listed_in_one_error() -> None:
    """Bad signatures in several steps are all reported together, each naming its step."""
    message = str(validation_error(BadSignatures))
    assert "(3 problem(s))" in message
    assert "step 'no_event' has no event parameter" in message
    assert "step 'wrong_type': parameter 'ev' is annotated with int" in message
    assert "step 'no_return' has no return annotation" in message


def test_signature_and_graph_problems_are_listed_in_one_error() -> None:
    """A step without an event parameter is reported together with the graph's own problems."""
    message = str(validation_error(BrokenEverywhere))
    assert "step 'lonely' has no event parameter" in message
    for problem in GRAPH_PROBLEMS:
        assert problem in message


def test_invalid_workflow_fails_on_every_instantiation() -> None:
    """An invalid workflow class raises each time it is instantiated, not only the first time."""
    for _ in range(2):
        with pytest.raises(WorkflowValidationError, match="no step can return a StopEvent"):
            NoStop()


# --- exemptions and valid shapes ------------------------------------------------------------


def test_input_required_and_human_response_subclasses_are_exempt() -> None:
    """An unconsumed InputRequiredEvent and an unproduced HumanResponseEvent are not problems."""

    class AskHuman(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> AskEvent:
            return AskEvent(question="continue?")

        @step
        async def answer(self, ev: AnswerEvent) -> StopEvent:
            return StopEvent(result=ev.answer)

    assert set(AskHuman().steps) == {"ask", "answer"}


@pytest.mark.asyncio
async def test_human_in_the_loop_workflow_is_valid_and_runs() -> None:
    """A workflow emitting InputRequiredEvent and taking HumanResponseEvent validates and runs."""

    handler = HumanLoop(timeout=5).run()
    events = await answer_prompts(handler, HumanResponseEvent(response="Ada"))
    assert len([ev for ev in events if isinstance(ev, InputRequiredEvent)]) == 1
    assert await handler == "Ada"


@pytest.mark.asyncio
async def test_stream_only_events_need_no_consumer() -> None:
    """An event only written to the stream needs no step to consume or produce it."""

    class Streaming(Workflow):
        @step
        async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Progress(msg="working"))
            return StopEvent(result="done")

    handler = Streaming(timeout=5).run()
    streamed = await drain(handler)
    assert await handler == "done"
    assert [ev.msg for ev in streamed if isinstance(ev, Progress)] == ["working"]


def test_several_steps_may_accept_the_same_start_event_type() -> None:
    """Two steps accepting the same StartEvent type is a single start event type, and valid."""

    class FanOutStart(Workflow):
        @step
        async def one(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def two(self, ev: StartEvent) -> None:
            return None

    assert set(FanOutStart().steps) == {"one", "two"}


# --- Workflow(timeout=...) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param(0, id="zero"),
        pytest.param(0.0, id="zero-float"),
        pytest.param(-1, id="negative"),
    ],
)
def test_non_positive_workflow_timeout_is_rejected(timeout: float) -> None:
    """Workflow(timeout=...) must be positive: zero or negative raises WorkflowValidationError."""
    expected = rf"Minimal\(timeout=\.\.\.\) must be a positive .*, got {re.escape(repr(timeout))}$"
    with pytest.raises(WorkflowValidationError, match=expected):
        Minimal(timeout=timeout)


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param(None, id="none"),
        pytest.param(0.5, id="fraction"),
        pytest.param(30, id="int"),
    ],
)
def test_positive_or_none_workflow_timeout_is_accepted(timeout: float | None) -> None:
    """Workflow(timeout=...) accepts a positive number or None and keeps it."""
    assert Minimal(timeout=timeout).timeout == timeout
