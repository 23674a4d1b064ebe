"""Errors: an ``except`` clause written for LlamaIndex Workflows catches what stepstream raises.

Every name of ``workflows.errors`` exists in ``stepstream.errors``. Where stepstream finds
a problem earlier than the peer (the whole graph at construction) or names it with its
own class (``WorkflowCancelledError``, ``WorkflowStepDoesNotExistError``), the class
stepstream raises is also an instance of the peer's class for that situation.
"""

import asyncio
from typing import Any

import pytest

import stepstream.errors
from _helpers import Middle
from _helpers import Minimal
from _helpers import NoStart
from _helpers import NoStop
from _helpers import Parked
from _helpers import Raises
from _helpers import Targeted
from _helpers import TwoStarts
from _helpers import Unconsumed
from stepstream import HumanResponseEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.errors import ContextSerdeError
from stepstream.errors import ContextStateError
from stepstream.errors import WorkflowCancelledByUser
from stepstream.errors import WorkflowCancelledError
from stepstream.errors import WorkflowConfigurationError
from stepstream.errors import WorkflowDone
from stepstream.errors import WorkflowError
from stepstream.errors import WorkflowRuntimeError
from stepstream.errors import WorkflowStepDoesNotExistError
from stepstream.errors import WorkflowTimeoutError
from stepstream.errors import WorkflowValidationError

PEER_ERRORS = (
    "WorkflowValidationError",
    "WorkflowTimeoutError",
    "WorkflowRuntimeError",
    "WorkflowDone",
    "WorkflowCancelledByUser",
    "WorkflowStepDoesNotExistError",
    "WorkflowConfigurationError",
    "ContextSerdeError",
    "ContextStateError",
)


# -- the names and the hierarchy --------------------------------------------------------


@pytest.mark.parametrize("name", PEER_ERRORS)
def test_every_peer_error_name_exists_and_is_exported(name: str) -> None:
    """Each class of workflows.errors is in stepstream.errors and its __all__, a WorkflowError."""
    assert name in stepstream.errors.__all__
    cls = getattr(stepstream.errors, name)
    assert issubclass(cls, WorkflowError)
    assert issubclass(cls, Exception)


def test_hierarchy_keeps_the_builtin_mixins() -> None:
    """Each error is also the builtin a caller would catch, as the module docstring draws."""
    assert issubclass(WorkflowValidationError, ValueError)
    assert issubclass(WorkflowConfigurationError, WorkflowValidationError)
    assert issubclass(WorkflowRuntimeError, RuntimeError)
    assert issubclass(WorkflowStepDoesNotExistError, WorkflowRuntimeError)
    assert issubclass(ContextStateError, WorkflowRuntimeError)
    assert issubclass(ContextSerdeError, ValueError)
    assert issubclass(WorkflowTimeoutError, TimeoutError)
    assert issubclass(WorkflowCancelledError, WorkflowCancelledByUser)
    assert issubclass(WorkflowDone, WorkflowError)


def test_configuration_error_keeps_the_problem_list() -> None:
    """WorkflowConfigurationError takes a summary and problems like WorkflowValidationError."""
    error = WorkflowConfigurationError("bad", ["one", "two"])
    assert error.problems == ("one", "two")
    assert str(error) == "bad\n  - one\n  - two"


# -- configuration errors at construction ------------------------------------------------------


def test_bare_workflow_raises_configuration_error() -> None:
    """Workflow() without steps raises WorkflowConfigurationError, as the peer's does."""
    with pytest.raises(WorkflowConfigurationError, match="has no steps"):
        Workflow()


def test_workflow_without_start_step_raises_configuration_error() -> None:
    """No step accepting StartEvent raises WorkflowConfigurationError at instantiation."""
    with pytest.raises(WorkflowConfigurationError, match="no step accepts StartEvent"):
        NoStart()


def test_workflow_without_start_step_is_also_a_validation_error() -> None:
    """The same error is caught by `except WorkflowValidationError` (and ValueError)."""
    with pytest.raises(WorkflowValidationError) as caught:
        NoStart()
    assert isinstance(caught.value, ValueError)


def test_two_start_event_types_raise_configuration_error() -> None:
    """More than one StartEvent type raises WorkflowConfigurationError at instantiation."""
    with pytest.raises(WorkflowConfigurationError, match="more than one StartEvent type"):
        TwoStarts()


def test_workflow_without_stop_step_raises_configuration_error() -> None:
    """No step returning a StopEvent raises WorkflowConfigurationError at instantiation."""
    with pytest.raises(WorkflowConfigurationError, match="no step can return a StopEvent"):
        NoStop()


def test_graph_problems_the_peer_finds_at_run_are_caught_as_validation_errors() -> None:
    """An event produced but never consumed (the peer: at run()) raises here at construction,
    and `except WorkflowValidationError` catches it as it would the peer's."""
    with pytest.raises(WorkflowValidationError, match="no step accepts it"):
        Unconsumed()


def test_step_option_errors_stay_plain_validation_errors() -> None:
    """@step(num_workers=0) raises WorkflowValidationError, not a configuration error."""

    async def work(ev: StartEvent) -> StopEvent:
        return StopEvent()

    with pytest.raises(WorkflowValidationError) as caught:
        step(num_workers=0)(work)
    assert not isinstance(caught.value, WorkflowConfigurationError)


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelled_run_is_caught_as_workflow_cancelled_by_user() -> None:
    """await handler after cancel_run() raises what `except WorkflowCancelledByUser` catches."""
    handler = Parked(timeout=5).run()
    await asyncio.sleep(0.01)
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser) as caught:
        await handler
    assert isinstance(caught.value, WorkflowCancelledError)
    assert str(caught.value) == "the run was cancelled with cancel_run()"


@pytest.mark.asyncio
async def test_cancelled_task_is_caught_as_workflow_cancelled_by_user() -> None:
    """A run whose awaiting task was cancelled raises WorkflowCancelledByUser on a later await."""
    handler = Parked(timeout=5).run()

    async def wait() -> Any:
        return await handler

    waiting = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    with pytest.raises(WorkflowCancelledByUser):
        async with asyncio.timeout(5):
            await handler


# -- timeouts and step failures ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_timeout_raises_workflow_timeout_error() -> None:
    """A run past its timeout raises WorkflowTimeoutError, also a TimeoutError."""
    with pytest.raises(WorkflowTimeoutError) as caught:
        await Parked(timeout=0.05).run()
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.active_steps == ("park",)


@pytest.mark.asyncio
async def test_step_exception_is_raised_itself() -> None:
    """await handler raises the step's own exception object, not a wrapper."""
    error = KeyError("k")
    with pytest.raises(KeyError) as caught:
        await Raises(timeout=5).run(error=error)
    assert caught.value is error


# -- send_event to a step -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_send_event_to_unknown_step_is_caught_by_either_class() -> None:
    """send_event(step="nope") raises an error both except clauses catch, with our message."""
    handler = Parked(timeout=5).run()
    await asyncio.sleep(0.01)
    try:
        with pytest.raises(WorkflowStepDoesNotExistError) as caught:
            handler.ctx.send_event(HumanResponseEvent(), step="nope")
        assert isinstance(caught.value, WorkflowRuntimeError)
        assert str(caught.value) == (
            "send_event(..., step='nope'): workflow Parked has no step 'nope'; its steps are park"
        )
        with pytest.raises(WorkflowRuntimeError):
            handler.ctx.send_event(HumanResponseEvent(), step="nope")
    finally:
        await handler.cancel_run()


@pytest.mark.asyncio
async def test_send_event_from_a_step_to_unknown_step_fails_the_run_with_it() -> None:
    """Inside a step, send_event(step="nope") raises WorkflowStepDoesNotExistError (uncaught: the
    run fails with it)."""
    with pytest.raises(WorkflowStepDoesNotExistError, match="has no step 'nope'"):
        await Targeted(timeout=5).run(target="nope")


@pytest.mark.asyncio
async def test_send_event_to_a_step_not_accepting_it_is_a_plain_runtime_error() -> None:
    """A known step that does not accept the event raises WorkflowRuntimeError, not 'no step'."""
    handler = Parked(timeout=5).run()
    await asyncio.sleep(0.01)
    try:
        with pytest.raises(WorkflowRuntimeError) as caught:
            handler.ctx.send_event(Middle(), step="park")
        assert not isinstance(caught.value, WorkflowStepDoesNotExistError)
    finally:
        await handler.cancel_run()


@pytest.mark.asyncio
async def test_send_event_after_the_run_ended_reports_the_end() -> None:
    """Once the run has ended, any send_event raises the 'has ended' WorkflowRuntimeError."""
    handler = Minimal(timeout=5).run()
    await handler
    with pytest.raises(WorkflowRuntimeError, match="has ended") as caught:
        handler.ctx.send_event(HumanResponseEvent(), step="nope")
    assert not isinstance(caught.value, WorkflowStepDoesNotExistError)
