"""Porting is a change of imports: every public name of the LlamaIndex modules exists here."""

import importlib
from typing import Any

import pytest

import stepstream
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.collect import All
from stepstream.collect import Collect
from stepstream.collect import Take
from stepstream.events import StepStateChanged
from stepstream.testing import WorkflowTestRunner

# The public names of each module of llama-index-workflows 2.26 (workflows.<module>),
# as stepstream.<module>.
PEER_MODULES: dict[str, tuple[str, ...]] = {
    "stepstream": ("Context", "Workflow", "catch_error", "step"),
    "stepstream.events": (
        "CollectionReleaseEvent",
        "DictLikeModel",
        "Event",
        "EventType",
        "HumanResponseEvent",
        "IdleReleasedEvent",
        "InputRequiredEvent",
        "InternalDispatchEvent",
        "SerializableEvent",
        "SerializableException",
        "StartEvent",
        "StepFailedEvent",
        "StepState",
        "StepStateChanged",
        "StopEvent",
        "UnhandledEvent",
        "UnreconstructedException",
        "WorkflowCancelledEvent",
        "WorkflowFailedEvent",
        "WorkflowIdleEvent",
        "WorkflowTimedOutEvent",
    ),
    "stepstream.errors": (
        "ContextSerdeError",
        "ContextStateError",
        "WorkflowCancelledByUser",
        "WorkflowConfigurationError",
        "WorkflowDone",
        "WorkflowRuntimeError",
        "WorkflowStepDoesNotExistError",
        "WorkflowTimeoutError",
        "WorkflowValidationError",
    ),
    "stepstream.decorators": ("catch_error", "step"),
    "stepstream.workflow": ("Workflow",),
    "stepstream.handler": ("WorkflowHandler",),
    "stepstream.context": ("BaseSerializer", "Context", "JsonSerializer", "PickleSerializer"),
    "stepstream.context.serializers": (
        "BaseSerializer",
        "JsonPickleSerializer",
        "JsonSerializer",
        "PickleSerializer",
    ),
    "stepstream.context.state_store": (
        "DictState",
        "InMemoryStateStore",
        "MAX_DEPTH",
        "StateStore",
        "UnserializableKeyWarning",
    ),
    "stepstream.retry_policy": (
        "ConstantDelayRetryPolicy",
        "ExponentialBackoffRetryPolicy",
        "RetryInfo",
        "RetryPolicy",
        "retry_policy",
        "stop_after_attempt",
        "wait_exponential",
        "retry_if_exception_type",
    ),
    "stepstream.resource": (
        "Resource",
        "ResourceConfig",
        "ResourceDefinition",
        "ResourceDescriptor",
        "ResourceManager",
    ),
    "stepstream.testing": ("WorkflowTestResult", "WorkflowTestRunner"),
    "stepstream.collect": ("All", "Cardinality", "Collect", "Take"),
}

# What llama_index.core.workflow re-exports from workflows: importable from stepstream.
LLAMA_INDEX_CORE_WORKFLOW = (
    "Context",
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "JsonPickleSerializer",
    "JsonSerializer",
    "StartEvent",
    "StopEvent",
    "Workflow",
    "WorkflowRuntimeError",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "step",
)


@pytest.mark.parametrize(
    ("module", "names"), [pytest.param(m, n, id=m) for m, n in PEER_MODULES.items()]
)
def test_each_peer_module_has_its_public_names(module: str, names: tuple[str, ...]) -> None:
    """stepstream.<module> binds every public name of workflows.<module> and exports it."""
    mod = importlib.import_module(module)
    assert [n for n in names if not hasattr(mod, n)] == []
    assert [n for n in names if n not in mod.__all__] == []


def test_llama_index_core_workflow_names_import_from_stepstream() -> None:
    """Every name llama_index.core.workflow re-exports is importable from stepstream."""
    assert [n for n in LLAMA_INDEX_CORE_WORKFLOW if not hasattr(stepstream, n)] == []


class Progress(Event):
    n: int


class Counting(Workflow):
    @step
    async def count(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        for n in range(int(ev.get("upto", 2))):
            ctx.write_event_to_stream(Progress(n=n))
        return StopEvent(result="counted")


@pytest.mark.asyncio
async def test_workflow_test_runner_collects_the_stream_with_internal_events() -> None:
    """WorkflowTestRunner.run returns the streamed events, their counts and the result."""
    result = await WorkflowTestRunner(Counting()).run(StartEvent(upto=3))
    assert result.result == "counted"
    assert result.event_types == {StepStateChanged: 2, Progress: 3, StopEvent: 1}
    assert [type(ev) for ev in result.collected][-1] is StopEvent
    assert isinstance(result.ctx, Context)


@pytest.mark.asyncio
async def test_workflow_test_runner_excludes_and_hides_on_request() -> None:
    """exclude_events drops exact types; expose_internal=False hides internal events."""
    result = await WorkflowTestRunner(Counting()).run(
        expose_internal=False, exclude_events=[StopEvent]
    )
    assert result.event_types == {Progress: 2}


@pytest.mark.parametrize("bad", [pytest.param(0, id="zero"), pytest.param(True, id="bool")])
def test_take_requires_a_positive_integer(bad: int) -> None:
    """collect.Take(n) refuses n < 1 and non-integers, as in LlamaIndex."""
    with pytest.raises(ValueError, match=r"^Take\(n\) requires an integer n >= 1, got "):
        Take(bad)
    assert Collect(Take(2)).cardinality == Take(2)
    assert Collect().cardinality == All()
