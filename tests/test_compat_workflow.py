"""Workflow's LlamaIndex-compatible options and members, through the public API."""

import asyncio
from typing import Any

import pytest

from _helpers import FirstEvent
from _helpers import HumanLoop
from _helpers import Middle
from _helpers import Minimal
from _helpers import MyWorkflow
from _helpers import SecondEvent
from _helpers import Unconsumed
from stepstream import Context
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.testing import CapturedTelemetry

ORPHAN_PROBLEM = (
    "event type Leftover is produced by 'start' but no step accepts it; add a step that takes "
    "Leftover, or remove it from the return annotation"
)


def test_workflow_name_defaults_to_the_qualified_class_name() -> None:
    """workflow_name is module.QualName unless given."""
    assert Minimal().workflow_name == "_helpers.Minimal"
    assert Minimal(workflow_name="simple").workflow_name == "simple"


@pytest.mark.asyncio
async def test_an_explicit_workflow_name_names_the_run_in_telemetry(tel: CapturedTelemetry) -> None:
    """A run of Minimal(workflow_name=...) is recorded under that name."""
    await Minimal(workflow_name="checkout").run()
    span = tel.one("invoke_workflow checkout")
    assert span.attributes is not None
    assert span.attributes["stepstream.workflow"] == "checkout"
    assert {line["workflow"] for line in tel.logs} == {"checkout"}


def test_events_and_start_and_stop_classes() -> None:
    """events lists every accepted or returned type; the start and stop classes are found."""
    wf = MyWorkflow()
    assert set(wf.events) == {StartEvent, FirstEvent, SecondEvent, StopEvent}
    assert wf.start_event_class is StartEvent
    assert wf.stop_event_class is StopEvent


def test_validate_tells_whether_the_workflow_asks_for_human_input() -> None:
    """validate() is True for a human-in-the-loop workflow and False otherwise."""
    assert HumanLoop().validate() is True
    assert Minimal().validate() is False


@pytest.mark.asyncio
async def test_disable_validation_lets_a_flow_problem_through() -> None:
    """disable_validation=True constructs and runs a workflow with an orphan event."""
    with pytest.raises(WorkflowValidationError) as info:
        Unconsumed()
    assert info.value.problems == (ORPHAN_PROBLEM,)
    wf = Unconsumed(disable_validation=True)
    assert await wf.run() == "ran"
    with pytest.raises(WorkflowValidationError) as again:
        wf.validate()
    assert again.value.problems == (ORPHAN_PROBLEM,)


def test_skip_graph_checks_skips_the_named_check() -> None:
    """skip_graph_checks={'terminal_event'} skips the produced-but-never-consumed check."""
    wf = Unconsumed(skip_graph_checks={"terminal_event"})
    assert wf.validate() is False


def test_invalid_options_are_listed_together() -> None:
    """Bad num_concurrent_runs, a runtime and unknown check names are reported at once."""
    with pytest.raises(WorkflowValidationError) as info:
        Minimal(num_concurrent_runs=0, runtime=object(), skip_graph_checks={"nope"})
    assert str(info.value).splitlines()[0] == "Minimal(...) options are invalid"
    assert info.value.problems == (
        "num_concurrent_runs must be an integer greater than 0 or None, got 0",
        "runtime= takes a durable runtime (stepstream.durable.DBOSRuntime) or None, got object",
        (
            "unknown graph check name(s) in skip_graph_checks: nope; valid names are dead_end, "
            "reachability, terminal_event"
        ),
    )


@pytest.mark.parametrize("bad", [pytest.param(True, id="bool"), pytest.param(1.5, id="float")])
def test_num_concurrent_runs_must_be_a_positive_int(bad: object) -> None:
    """num_concurrent_runs rejects booleans and non-integers."""
    with pytest.raises(WorkflowValidationError, match="num_concurrent_runs must be an integer"):
        Minimal(num_concurrent_runs=bad)  # type: ignore[arg-type]


class Gate(Workflow):
    """Counts how many of its runs are inside the step at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inside = 0
        self.most = 0

    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(0.02)
        self.inside -= 1
        return StopEvent(result=ev.get("n"))


@pytest.mark.asyncio
async def test_num_concurrent_runs_bounds_runs_in_flight() -> None:
    """With num_concurrent_runs=2, six runs all finish with at most two at a time."""
    wf = Gate(num_concurrent_runs=2)
    results = await asyncio.gather(*(wf.run(n=i) for i in range(6)))
    assert results == list(range(6))
    assert wf.most == 2


def test_add_step_attaches_a_decorated_free_function() -> None:
    """add_step() attaches a @step function; a missing decorator or a duplicate is refused."""

    class Base(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Middle:
            return Middle()

    async def finish(ev: Middle) -> StopEvent:
        return StopEvent()

    with pytest.raises(WorkflowValidationError) as missing:
        Base.add_step(finish)
    assert str(missing.value) == (
        "Base.add_step(finish): finish is missing the @step decorator; decorate it with @step first"
    )
    Base.add_step(step(finish))
    assert set(Base().steps) == {"start", "finish"}
    with pytest.raises(WorkflowValidationError) as duplicate:
        Base.add_step(finish)
    assert str(duplicate.value) == (
        "Base.add_step(finish): workflow Base already has a step named 'finish'; rename the "
        "function"
    )


@pytest.mark.asyncio
async def test_positional_arguments_follow_the_llamaindex_order() -> None:
    """Workflow(timeout, disable_validation, verbose) positionally, as in LlamaIndex."""
    wf = Unconsumed(10, True, False)
    assert wf.timeout == 10
    assert await wf.run() == "ran"


@pytest.mark.asyncio
async def test_run_accepts_ctx_first_and_start_event_keyword() -> None:
    """run(start_event=...) still works with ctx as the first parameter."""

    class Start(StartEvent):
        n: int

    class Typed(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: Start) -> StopEvent:
            return StopEvent(result=ev.n)

    assert await Typed().run(start_event=Start(n=3)) == 3
