"""Events behave as LlamaIndex Workflows' (workflows.events 2.26), through the public API.

The dict-like API sees the dynamic fields only; attribute access sees both kinds;
``model_dump`` nests the dynamic fields under ``"_data"``; StopEvent keeps its result
privately; the terminal events carry the peer's fields. The one deliberate superset
(``ev["declared"]`` and ``ev.get("declared")`` also find declared fields) is listed in
docs/differences.md and pinned here too.
"""

import asyncio
import copy
import pickle
from datetime import UTC
from datetime import datetime
from enum import Enum
from typing import Any

import pydantic
import pytest

from _helpers import Failing
from _helpers import Parked
from _helpers import Returns
from _helpers import Slow
from _helpers import drain
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledEvent
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowTimedOutEvent
from stepstream import step
from stepstream.events import DictLikeModel
from stepstream.events import EventType
from stepstream.events import InternalDispatchEvent
from stepstream.events import SerializableException
from stepstream.events import StepFailedEvent
from stepstream.events import StepState
from stepstream.events import StepStateChanged
from stepstream.events import UnhandledEvent
from stepstream.events import UnreconstructedException
from stepstream.events import WorkflowIdleEvent
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed


class E1(Event):
    x: int


class MyStop(StopEvent):
    foo: str


class OverriddenStop(StopEvent):
    def _get_result(self) -> Any:
        return "from _get_result"


class Boom(Exception):  # noqa: N818 - the peer's verified example names it so
    pass


# -- the dict-like API: dynamic fields only --------------------------------------------


def test_item_access_reads_and_writes_dynamic_fields() -> None:
    """ev["k"] reads a dynamic field and ev["k"] = v adds one, readable as an attribute."""
    ev = E1(x=1, y=2)
    assert ev["y"] == 2
    ev["z"] = 3
    assert ev["z"] == 3
    assert ev.z == 3  # type: ignore[attr-defined]
    assert ev.x == 1


def test_missing_item_raises_key_error() -> None:
    """ev["missing"] raises KeyError."""
    with pytest.raises(KeyError):
        Event(a=1)["missing"]


def test_get_returns_dynamic_field_or_default() -> None:
    """get(k) returns the dynamic field, else the default (None unless given)."""
    ev = Event(a=1)
    assert ev.get("a") == 1
    assert ev.get("missing") is None
    assert ev.get("missing", "fallback") == "fallback"


def test_membership_tests_dynamic_fields() -> None:
    """`k in ev` is True for a dynamic field and False for an absent one."""
    ev = Event(a=1)
    assert "a" in ev
    assert "b" not in ev


def test_keys_values_items_hold_only_dynamic_fields() -> None:
    """keys(), values() and items() list the dynamic fields, never the declared ones."""
    ev = E1(x=1, y=2, z=3)
    assert list(ev.keys()) == ["y", "z"]
    assert list(ev.values()) == [2, 3]
    assert list(ev.items()) == [("y", 2), ("z", 3)]


def test_len_counts_dynamic_fields_only() -> None:
    """len(ev) is the number of dynamic fields: 0 for an event with declared fields only."""
    assert len(E1(x=1)) == 0
    assert len(E1(x=1, y=2)) == 1
    assert len(Event(a=1, b=2, c=3)) == 3


def test_iteration_yields_dynamic_field_names() -> None:
    """Iterating an event yields its dynamic field names; dict(ev) is the dynamic fields."""
    ev = E1(x=1, y=2, z=3)
    assert list(ev) == ["y", "z"]
    assert dict(ev) == {"y": 2, "z": 3}


def test_to_dict_is_the_live_dynamic_field_dict() -> None:
    """to_dict() returns the dynamic fields' own dict: writes through it show on the event."""
    ev = E1(x=1, y=2)
    data = ev.to_dict()
    assert data == {"y": 2}
    data["w"] = 4
    assert ev["w"] == 4
    assert ev.to_dict() is data


def test_event_is_truthy_even_without_dynamic_fields() -> None:
    """bool(ev) is True although len(ev) is 0."""
    assert len(Event()) == 0
    assert bool(Event())
    assert bool(E1(x=1))


def test_item_access_and_get_fall_back_to_declared_fields() -> None:
    """ev["declared"] and ev.get("declared") return the field (a documented superset)."""
    ev = E1(x=1)
    assert ev["x"] == 1
    assert ev.get("x") == 1


def test_membership_does_not_see_declared_fields() -> None:
    """`in` agrees with keys(): a declared field is not `in` the event, as in the peer."""
    ev = E1(x=1, y=2)
    assert "x" not in ev
    assert "x" not in list(ev.keys())
    assert "y" in ev


def test_a_dynamic_field_shadows_a_declared_one_for_item_access_only() -> None:
    """ev["x"] = v on a declared name stores a dynamic field: ev["x"] reads it, ev.x does not."""
    ev = E1(x=1)
    ev["x"] = 5
    assert ev["x"] == 5
    assert ev.x == 1
    assert ev.model_dump() == {"x": 1, "_data": {"x": 5}}


# -- attribute access --------------------------------------------------------------------


def test_attribute_reads_declared_and_dynamic_fields() -> None:
    """ev.k reads declared fields and dynamic fields alike."""
    ev = E1(x=1, y=2)
    assert ev.x == 1
    assert ev.y == 2  # type: ignore[attr-defined]


def test_missing_attribute_raises_attribute_error_naming_the_class() -> None:
    """A missing attribute raises AttributeError("'Event' object has no attribute 'k'")."""
    with pytest.raises(AttributeError) as caught:
        _ = Event().k  # type: ignore[attr-defined]
    assert str(caught.value) == "'Event' object has no attribute 'k'"


def test_setting_an_attribute_writes_a_declared_field_or_a_dynamic_one() -> None:
    """Assigning a declared name sets the field; any other name becomes a dynamic field."""
    ev = E1(x=1)
    ev.x = 7
    ev.extra = "e"
    assert ev.x == 7
    assert ev.to_dict() == {"extra": "e"}
    assert ev.model_dump() == {"x": 7, "_data": {"extra": "e"}}


def test_start_event_keeps_keyword_arguments_as_dynamic_fields() -> None:
    """StartEvent(a=1) stores a dynamically: ev.a, ev.get("a") and dict(ev) all see it."""
    ev = StartEvent(a=1)
    assert ev.a == 1  # type: ignore[attr-defined]
    assert ev.get("a") == 1
    assert dict(ev) == {"a": 1}


def test_declared_fields_are_still_validated() -> None:
    """Declared fields go through pydantic validation; dynamic ones are kept as given."""
    marker = object()
    ev = E1(x="3", y=marker)
    assert ev.x == 3
    assert ev["y"] is marker
    with pytest.raises(pydantic.ValidationError, match="x"):
        E1(x="three")


# -- dumps and repr ---------------------------------------------------------------------


def test_model_dump_nests_dynamic_fields_under_data() -> None:
    """model_dump() gives the declared fields plus "_data" holding the dynamic ones."""
    assert E1(x=1, y=2).model_dump() == {"x": 1, "_data": {"y": 2}}
    assert E1(x=1, y=2).model_dump_json() == '{"x":1,"_data":{"y":2}}'


def test_model_dump_has_no_data_key_without_dynamic_fields() -> None:
    """An event without dynamic fields dumps its declared fields only."""
    assert E1(x=1).model_dump() == {"x": 1}
    assert Event().model_dump() == {}


def test_repr_shows_declared_fields_only() -> None:
    """repr(ev) is pydantic's: the declared fields, not the dynamic ones."""
    assert repr(E1(x=1, y=2)) == "E1(x=1)"


def test_events_with_equal_fields_are_equal() -> None:
    """Equality compares declared and dynamic fields."""
    assert E1(x=1, y=2) == E1(x=1, y=2)
    assert E1(x=1, y=2) != E1(x=1, y=3)


def test_validated_copied_and_pickled_events_keep_their_fields() -> None:
    """model_validate, deepcopy and pickle give events equal to the original."""
    assert E1.model_validate({"x": 1}) == E1(x=1)
    ev = E1(x=1, y=[2])
    copied = copy.deepcopy(ev)
    assert copied == ev
    assert copied["y"] is not ev["y"]
    assert pickle.loads(pickle.dumps(ev)) == ev  # noqa: S301 - our own bytes
    stop = pickle.loads(pickle.dumps(StopEvent(result=5, k=1)))  # noqa: S301
    assert (stop.result, stop["k"]) == (5, 1)


# -- StopEvent ----------------------------------------------------------------------------


def test_stop_event_dumps_result_only_when_not_none() -> None:
    """StopEvent(result=5) dumps {'result': 5}; StopEvent() dumps {}."""
    assert StopEvent(result=5).model_dump() == {"result": 5}
    assert StopEvent().model_dump() == {}
    assert StopEvent(result=None).model_dump() == {}


def test_stop_event_result_is_not_a_declared_field() -> None:
    """result is a property over private state, not a pydantic field."""
    assert "result" not in StopEvent.model_fields
    payload = {"answer": [4, 2]}
    assert StopEvent(result=payload).result is payload
    assert StopEvent().result is None


def test_stop_event_subclass_dump_puts_result_after_declared_fields() -> None:
    """MyStop(foo="a", result=3) dumps {'foo': 'a', 'result': 3}, dynamic fields last."""
    assert MyStop(foo="a", result=3).model_dump() == {"foo": "a", "result": 3}
    assert list(MyStop(foo="a", result=3, k=1).model_dump()) == ["foo", "result", "_data"]


def test_stop_event_str_is_str_of_result() -> None:
    """str(StopEvent(result=5)) is "5"; without a result it is "None"."""
    assert str(StopEvent(result=5)) == "5"
    assert str(StopEvent()) == "None"
    assert str(MyStop(foo="a", result=[1])) == "[1]"


def test_stop_event_repr_lists_its_dumped_fields() -> None:
    """repr(MyStop(foo="a", result=3)) is "MyStop(foo='a', result=3)"."""
    assert repr(MyStop(foo="a", result=3)) == "MyStop(foo='a', result=3)"
    assert repr(StopEvent(result="r")) == "StopEvent(result='r')"
    assert repr(StopEvent()) == "StopEvent()"


def test_stop_event_repr_shows_each_dynamic_field_once() -> None:
    """A dynamic field appears once, after the declared fields and the result."""
    assert repr(MyStop(foo="a", result=3, extra="x")) == "MyStop(foo='a', result=3, extra='x')"
    assert repr(StopEvent(extra=1)) == "StopEvent(extra=1)"


def test_stop_event_result_can_be_overridden_with_get_result() -> None:
    """A subclass overriding _get_result changes .result; str() still shows the given result."""
    ev = OverriddenStop(result=1)
    assert ev.result == "from _get_result"
    assert str(ev) == "1"


@pytest.mark.asyncio
async def test_awaiting_a_plain_stop_event_run_returns_the_result() -> None:
    """await handler returns .result when the run ends with exactly StopEvent."""
    assert await Returns(timeout=5).run(value=StopEvent(result={"v": 1})) == {"v": 1}


@pytest.mark.asyncio
async def test_awaiting_a_stop_event_subclass_run_returns_the_event() -> None:
    """await handler returns the StopEvent subclass instance itself, with its overridden result."""
    out = await Returns(timeout=5).run(value=OverriddenStop(result=1))
    assert isinstance(out, OverriddenStop)
    assert out.result == "from _get_result"


# -- terminal events from real runs ----------------------------------------------------------


@pytest.mark.asyncio
async def test_failed_run_ends_with_workflow_failed_event_carrying_the_peer_fields() -> None:
    """A step failing 3 attempts ends the stream with step_name, exception, attempts, elapsed."""

    class Failing(Workflow):
        @step(retry_policy=retry_policy(wait=wait_fixed(0.01), stop=stop_after_attempt(3)))
        async def explode(self, ev: StartEvent) -> StopEvent:
            msg = "boom3"
            raise Boom(msg)

    handler = Failing(timeout=5).run()
    streamed = await drain(handler)
    with pytest.raises(Boom, match="boom3") as caught:
        await handler
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert terminal.step_name == "explode"
    assert terminal.exception is caught.value
    assert terminal.attempts == 3
    assert terminal.elapsed_seconds is not None
    assert 0.02 <= terminal.elapsed_seconds < 5
    dumped = terminal.model_dump()
    assert dumped["exception"] == {
        "exception_type": f"{__name__}.Boom",
        "exception_message": "boom3",
    }
    assert set(dumped) == {"step_name", "exception", "attempts", "elapsed_seconds"}


@pytest.mark.asyncio
async def test_failed_event_of_a_step_without_retries_counts_one_attempt() -> None:
    """Without a retry policy the failure happens on attempt 1; builtins dump as builtins.X."""
    handler = Failing(timeout=5).run()
    streamed = await drain(handler)
    with pytest.raises(ValueError, match="boom"):
        await handler
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert terminal.attempts == 1
    assert terminal.model_dump()["exception"] == {
        "exception_type": "builtins.ValueError",
        "exception_message": "boom",
    }


@pytest.mark.asyncio
async def test_timed_out_run_ends_with_timeout_and_active_steps() -> None:
    """A run exceeding its timeout ends with WorkflowTimedOutEvent(timeout, active_steps)."""
    handler = Slow(timeout=0.1).run()
    streamed = await drain(handler)
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowTimedOutEvent)
    assert terminal.timeout == 0.1
    assert terminal.active_steps == ["dawdle"]
    assert "timed out" in terminal.message
    assert terminal.result is None


@pytest.mark.asyncio
async def test_cancelled_run_ends_with_workflow_cancelled_event() -> None:
    """cancel_run() ends the stream with a WorkflowCancelledEvent, a StopEvent without result."""
    handler = Parked(timeout=5).run()
    await asyncio.sleep(0.01)
    await handler.cancel_run()
    streamed = await drain(handler)
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowCancelledEvent)
    assert isinstance(terminal, StopEvent)
    assert terminal.result is None


def test_terminal_events_build_with_the_peer_arguments_only() -> None:
    """The terminal events build from the peer's fields alone; our message has a default."""
    assert WorkflowCancelledEvent().message
    timed_out = WorkflowTimedOutEvent(timeout=1.5, active_steps=["a"])
    assert (timed_out.timeout, timed_out.active_steps) == (1.5, ["a"])
    failed = WorkflowFailedEvent(step_name="s", exception=Boom("x"))
    assert (failed.attempts, failed.elapsed_seconds) == (None, None)
    for terminal in (WorkflowFailedEvent, WorkflowTimedOutEvent, WorkflowCancelledEvent):
        assert issubclass(terminal, StopEvent)


# -- exceptions as fields ------------------------------------------------------------------


class WithException(pydantic.BaseModel):
    error: SerializableException


def test_serializable_exception_dumps_type_and_message() -> None:
    """An exception field dumps as {"exception_type": qualified name, "exception_message": str}."""
    dumped = WithException(error=Boom("b")).model_dump(mode="json")
    assert dumped == {"error": {"exception_type": f"{__name__}.Boom", "exception_message": "b"}}


def test_serializable_exception_rebuilds_known_classes() -> None:
    """Validating the dump rebuilds builtins and classes of imported modules as cls(message)."""
    for error in (ValueError("v"), Boom("b")):
        rebuilt = WithException.model_validate(WithException(error=error).model_dump()).error
        assert type(rebuilt) is type(error)
        assert str(rebuilt) == str(error)


def test_serializable_exception_falls_back_to_unreconstructed_exception() -> None:
    """An unknown class name gives an UnreconstructedException with the original type."""
    data = {"error": {"exception_type": "no_such_module.Gone", "exception_message": "m"}}
    rebuilt = WithException.model_validate(data).error
    assert isinstance(rebuilt, UnreconstructedException)
    assert rebuilt.original_type == "no_such_module.Gone"
    assert str(rebuilt) == "m"


def test_unreconstructed_exception_str_and_repr() -> None:
    """str() is the message; repr() shows original_type then the message."""
    error = UnreconstructedException("msg", original_type="x.Y")
    assert str(error) == "msg"
    assert repr(error) == "UnreconstructedException(original_type='x.Y', 'msg')"
    assert isinstance(error, Exception)


# -- the other public events (defined, not emitted yet) --------------------------------------


def test_step_failed_event_has_the_peer_fields() -> None:
    """StepFailedEvent holds step_name, input_event, exception, attempts, elapsed, failed_at."""
    failed_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    ev = StepFailedEvent(
        step_name="s",
        input_event=E1(x=1),
        exception=Boom("b"),
        attempts=2,
        elapsed_seconds=0.5,
        failed_at=failed_at,
    )
    dumped = ev.model_dump()
    assert dumped["step_name"] == "s"
    assert dumped["input_event"] == {"x": 1}
    assert dumped["exception"] == {"exception_type": f"{__name__}.Boom", "exception_message": "b"}
    assert dumped["attempts"] == 2
    assert dumped["elapsed_seconds"] == 0.5
    assert dumped["failed_at"] == failed_at
    assert set(StepFailedEvent.model_fields) == {
        "step_name",
        "input_event",
        "exception",
        "attempts",
        "elapsed_seconds",
        "failed_at",
    }


def test_internal_dispatch_events_and_step_state() -> None:
    """StepStateChanged, WorkflowIdleEvent and UnhandledEvent are InternalDispatchEvents."""
    assert issubclass(StepState, Enum)
    assert [s.value for s in StepState] == ["preparing", "running", "not_running"]
    changed = StepStateChanged(
        name="s", step_state=StepState.RUNNING, worker_id="0", input_event_name="StartEvent"
    )
    assert changed.output_event_name is None
    unhandled = UnhandledEvent(event_type="A", qualified_name="m.A", idle=False)
    assert unhandled.step_name is None
    assert WorkflowIdleEvent().model_dump() == {}
    for cls in (StepStateChanged, WorkflowIdleEvent, UnhandledEvent):
        assert issubclass(cls, InternalDispatchEvent)
    assert issubclass(InternalDispatchEvent, Event)


def test_event_type_alias_and_dict_like_base() -> None:
    """EventType is type[Event]; Event derives from DictLikeModel, a pydantic model."""
    assert EventType == type[Event]
    assert issubclass(Event, DictLikeModel)
    assert issubclass(DictLikeModel, pydantic.BaseModel)
