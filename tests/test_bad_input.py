"""Bad input: each misuse raises a stepstream error whose message names what is at fault."""

import asyncio
from typing import Any

import pytest

from _helpers import BadReturnAnnotation
from _helpers import JobStart
from _helpers import JobWorkflow
from _helpers import Middle
from _helpers import Minimal
from _helpers import MissingKey
from _helpers import NonEvent
from _helpers import Other
from _helpers import Returns
from _helpers import StrAnnotated
from _helpers import Targeted
from _helpers import Unannotated
from _helpers import UnionAnnotated
from _helpers import Unresolvable
from _helpers import Unrouted
from _helpers import drain
from stepstream import ConstantDelayRetryPolicy
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowError
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowTimeoutError
from stepstream import WorkflowValidationError
from stepstream import step


async def fails_with(
    workflow: Workflow,
    match: str,
    *,
    error: type[Exception] = WorkflowRuntimeError,
    **start: Any,
) -> None:
    """Check that a run of ``workflow`` fails with an ``error`` matching ``match``."""
    with pytest.raises(error, match=match):
        await workflow.run(**start)


# --- the error classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "builtin"),
    [
        pytest.param(WorkflowValidationError, ValueError, id="validation-is-ValueError"),
        pytest.param(WorkflowRuntimeError, RuntimeError, id="runtime-is-RuntimeError"),
        pytest.param(WorkflowTimeoutError, TimeoutError, id="timeout-is-TimeoutError"),
        pytest.param(WorkflowCancelledError, Exception, id="cancelled-is-Exception"),
    ],
)
def test_error_classes_derive_from_workflow_error_and_a_builtin(
    error_type: type[Exception], builtin: type[Exception]
) -> None:
    """Every stepstream error is a WorkflowError and also the builtin a caller would catch."""
    assert issubclass(error_type, WorkflowError)
    assert issubclass(error_type, builtin)


def test_workflow_error_is_an_exception() -> None:
    """WorkflowError is an ordinary Exception, so `except Exception` catches every error."""
    assert issubclass(WorkflowError, Exception)
    assert not issubclass(WorkflowCancelledError, asyncio.CancelledError)


def test_validation_error_lists_its_problems() -> None:
    """WorkflowValidationError keeps its problems and lists each one under the summary."""
    err = WorkflowValidationError("summary", ["first problem", "second problem"])
    assert err.problems == ("first problem", "second problem")
    assert str(err) == "summary\n  - first problem\n  - second problem"


# --- a step's result ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param("not an event", "str", id="str"),
        pytest.param({"result": 1}, "dict", id="dict"),
        pytest.param(42, "int", id="int"),
    ],
)
@pytest.mark.asyncio
async def test_step_returning_a_non_event_fails_the_run(value: object, type_name: str) -> None:
    """A step returning a non-Event fails the run with an error naming the step and the type."""
    handler = Returns(timeout=5).run(value=value)
    streamed = await drain(handler)
    expected = rf"step 'produce' returned {type_name} .*must return an Event instance or None"
    with pytest.raises(WorkflowRuntimeError, match=expected):
        await handler
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert terminal.step == "produce"
    assert terminal.exception_type == "WorkflowRuntimeError"
    assert f"returned {type_name}" in terminal.message


@pytest.mark.asyncio
async def test_step_returning_an_event_no_step_accepts_fails_the_run() -> None:
    """A step returning an event that no step accepts fails the run naming the event type."""

    class StrayReturn(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Middle:
            return Other()  # type: ignore[return-value]

        @step
        async def finish(self, ev: Middle) -> StopEvent:
            return StopEvent()

    await fails_with(StrayReturn(timeout=5), "no step of workflow StrayReturn accepts Other")


# --- send_event / write_event_to_stream ----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(
            "finish",
            r"send_event\(Other, step='finish'\): step 'finish' does not accept Other "
            r"\(it accepts Middle\)",
            id="step-does-not-accept-event",
        ),
        pytest.param(
            "nope",
            r"workflow Targeted has no step 'nope'; its steps are start, finish",
            id="unknown-step",
        ),
    ],
)
@pytest.mark.asyncio
async def test_targeted_send_event_to_wrong_step_is_rejected(target: str, expected: str) -> None:
    """send_event(ev, step=...) to a step that cannot take ev raises naming step and event."""
    await fails_with(Targeted(timeout=5), expected, target=target)


@pytest.mark.asyncio
async def test_untargeted_send_event_nobody_accepts_is_rejected() -> None:
    """send_event of an event type no step accepts raises naming the workflow and event type."""
    expected = r"no step of workflow Unrouted accepts Other and no step is waiting for it"
    await fails_with(Unrouted(timeout=5), expected)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("send_event", id="send_event"),
        pytest.param("write_event_to_stream", id="write_event_to_stream"),
    ],
)
@pytest.mark.asyncio
async def test_passing_a_non_event_to_the_context_is_rejected(method: str) -> None:
    """ctx.send_event / ctx.write_event_to_stream with a non-Event raise naming the method."""
    expected = rf"{method} takes an Event instance, got dict"
    await fails_with(NonEvent(timeout=5), expected, method=method)


# --- start input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"name": "x"},
            r"JobWorkflow\.run\(\): the arguments do not fit JobStart\n"
            r"  - field 'size': Field required",
            id="missing-required-field",
        ),
        pytest.param(
            {"name": "x", "size": "big"},
            r"JobWorkflow\.run\(\): the arguments do not fit JobStart\n"
            r"  - field 'size': Input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            {"name": "x", "size": 1, "colour": "red"},
            r"JobWorkflow\.run\(\): JobStart has no field\(s\) 'colour'\n"
            r"  - known fields: name, size",
            id="unknown-field",
        ),
        pytest.param(
            {"start_event": StartEvent()},
            r"JobWorkflow\.run\(\): start_event must be a JobStart, got StartEvent",
            id="start-event-of-wrong-type",
        ),
        pytest.param(
            {"start_event": JobStart(name="x", size=1), "name": "y"},
            r"JobWorkflow\.run\(\): pass either start_event= or keyword fields, not both "
            r"\(got name\)",
            id="start-event-and-fields",
        ),
    ],
)
@pytest.mark.asyncio
async def test_bad_start_arguments_are_rejected_by_run(
    kwargs: dict[str, Any], expected: str
) -> None:
    """run() validates its arguments against the custom StartEvent and names the field at fault."""
    with pytest.raises(WorkflowValidationError, match=expected):
        JobWorkflow(timeout=5).run(**kwargs)


@pytest.mark.asyncio
async def test_good_start_arguments_are_validated_and_coerced() -> None:
    """run() builds the custom StartEvent from valid keyword fields, coercing as pydantic does."""
    assert await JobWorkflow(timeout=5).run(name="x", size="3") == ("x", 3)


def test_run_outside_an_event_loop_is_rejected() -> None:
    """Calling run() with no running event loop raises saying it needs a running loop."""
    with pytest.raises(
        WorkflowRuntimeError, match=r"Minimal\.run\(\) needs a running asyncio event loop"
    ):
        Minimal(timeout=5).run()


# --- the stream and the store ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_iterating_a_fully_consumed_stream_is_rejected() -> None:
    """Iterating stream_events() again after its StopEvent raises 'already consumed'."""
    handler = Minimal(timeout=5).run()
    streamed = await drain(handler)
    assert [type(ev) for ev in streamed] == [StopEvent]
    assert await handler == "ok"
    with pytest.raises(WorkflowRuntimeError, match="already consumed"):
        await anext(handler.stream_events())


@pytest.mark.asyncio
async def test_missing_store_key_without_default_names_the_key() -> None:
    """ctx.store.get(key) for a key never set, without default, raises naming the key."""
    expected = (
        r"path 'api_key' not found in the state: the state has no key 'api_key' "
        r"\(keys: 'other'\)"
    )
    await fails_with(MissingKey(timeout=5), expected, error=ValueError)


# --- step definitions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow_cls", "expected"),
    [
        pytest.param(
            Unannotated,
            r"step 'start': parameter 'ev' has no type annotation",
            id="no-event-annotation",
        ),
        pytest.param(
            StrAnnotated,
            r"step 'start': parameter 'ev' is annotated with str, which is not an Event type",
            id="str-annotation",
        ),
        pytest.param(
            UnionAnnotated,
            r"step 'start': parameter 'ev' is annotated with .*int.*, which is not an Event type",
            id="union-with-non-event",
        ),
        pytest.param(
            BadReturnAnnotation,
            r"step 'start': return annotation str includes str, which is not an Event type",
            id="non-event-return-annotation",
        ),
        pytest.param(
            Unresolvable,
            r"step 'start': cannot resolve an annotation \(name 'NoSuchEvent' is not defined\)",
            id="unresolvable-annotation",
        ),
    ],
)
def test_bad_step_signature_is_rejected_naming_step_and_parameter(
    workflow_cls: type[Workflow], expected: str
) -> None:
    """An unusable step signature makes instantiation raise naming the step and parameter."""
    with pytest.raises(WorkflowValidationError, match=expected):
        workflow_cls()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"num_workers": 0}, r"num_workers must be an int >= 1, got 0", id="workers"),
        pytest.param({"timeout": 0}, r"timeout must be a positive number .*got 0", id="timeout"),
        pytest.param(
            {"retry_policy": object()},
            r"retry_policy must have a next\(elapsed_time, attempts, error\) method, got object",
            id="retry-policy",
        ),
    ],
)
def test_bad_step_options_are_rejected_at_decoration(
    options: dict[str, Any], expected: str
) -> None:
    """@step with an invalid option raises at once, naming the step and the option."""

    async def work(ev: StartEvent) -> StopEvent:
        return StopEvent()

    summary = r"@step options for step 'work' are invalid\n  - "
    with pytest.raises(WorkflowValidationError, match=summary + expected):
        step(**options)(work)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"delay": "soon"},
            r"ConstantDelayRetryPolicy\(delay=\.\.\.\) must be a number of seconds or a "
            r"timedelta, got 'soon'",
            id="delay-not-a-number",
        ),
        pytest.param(
            {"maximum_attempts": None},
            r"ConstantDelayRetryPolicy\(maximum_attempts=\.\.\.\) must be a number, got None",
            id="attempts-not-a-number",
        ),
    ],
)
def test_bad_retry_policy_arguments_are_rejected(kwargs: dict[str, Any], expected: str) -> None:
    """ConstantDelayRetryPolicy warns it is deprecated, then rejects values that cannot work."""
    with (
        pytest.deprecated_call(),
        pytest.raises(WorkflowValidationError, match=expected),
    ):
        ConstantDelayRetryPolicy(**kwargs)
