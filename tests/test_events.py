"""Events: pydantic models with typed fields, dict-style access and the built-in types."""

from typing import Any

import pydantic
import pytest

from _helpers import Returns
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledEvent
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowTimedOutEvent
from stepstream import step


class Greeting(Event):
    name: str
    count: int = 1


class Outcome(StopEvent):
    score: float


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param(Event, id="Event"),
        pytest.param(StartEvent, id="StartEvent"),
        pytest.param(StopEvent, id="StopEvent"),
        pytest.param(InputRequiredEvent, id="InputRequiredEvent"),
        pytest.param(HumanResponseEvent, id="HumanResponseEvent"),
        pytest.param(WorkflowFailedEvent, id="WorkflowFailedEvent"),
        pytest.param(WorkflowTimedOutEvent, id="WorkflowTimedOutEvent"),
        pytest.param(WorkflowCancelledEvent, id="WorkflowCancelledEvent"),
        pytest.param(Greeting, id="user-subclass"),
    ],
)
def test_every_event_type_is_a_pydantic_model_deriving_from_event(event_type: type[Any]) -> None:
    """Every built-in and user event type is a pydantic model and an Event subclass."""
    assert issubclass(event_type, pydantic.BaseModel)
    assert issubclass(event_type, Event)


def test_terminal_events_are_stop_events() -> None:
    """The failed, timed-out and cancelled terminal events are StopEvent subclasses."""
    for terminal in (WorkflowFailedEvent, WorkflowTimedOutEvent, WorkflowCancelledEvent):
        assert issubclass(terminal, StopEvent)


def test_subclass_fields_are_typed_and_defaulted() -> None:
    """A subclass's declared fields are set from keywords, defaults apply, and dumps show them."""
    ev = Greeting(name="Ada")
    assert ev.name == "Ada"
    assert ev.count == 1
    assert ev.model_dump() == {"name": "Ada", "count": 1}
    assert set(type(ev).model_fields) == {"name", "count"}


def test_subclass_field_values_are_validated_and_coerced() -> None:
    """Declared fields are validated: a numeric string becomes an int, garbage is rejected."""
    assert Greeting(name="Ada", count="3").count == 3
    with pytest.raises(pydantic.ValidationError, match="count"):
        Greeting(name="Ada", count="many")


def test_subclass_missing_required_field_is_rejected() -> None:
    """Omitting a required declared field raises a validation error naming the field."""
    with pytest.raises(pydantic.ValidationError, match="name"):
        Greeting()  # type: ignore[call-arg]


def test_start_event_accepts_arbitrary_keyword_fields() -> None:
    """StartEvent takes any keyword arguments and exposes them as attributes and items."""
    ev = StartEvent(first_input="x", n=3)
    assert ev.first_input == "x"  # type: ignore[attr-defined]
    assert ev.n == 3  # type: ignore[attr-defined]
    assert ev["first_input"] == "x"
    assert "n" in ev


@pytest.mark.asyncio
async def test_run_keyword_arguments_become_start_event_fields() -> None:
    """wf.run(first_input="x") delivers a StartEvent whose first_input attribute is "x"."""
    seen: list[StartEvent] = []

    class EchoWorkflow(Workflow):
        @step
        async def echo(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            seen.append(ev)
            return StopEvent(result=(ev.first_input, ev["other"]))  # type: ignore[attr-defined]

    result = await EchoWorkflow(timeout=5).run(first_input="x", other=2)
    assert result == ("x", 2)
    assert len(seen) == 1
    assert type(seen[0]) is StartEvent


def test_stop_event_result_defaults_to_none_and_holds_any_value() -> None:
    """StopEvent has a result field defaulting to None that keeps any object as given."""
    payload = {"answer": [4, 2]}
    assert StopEvent().result is None
    assert StopEvent(result=payload).result is payload


@pytest.mark.asyncio
async def test_awaiting_handler_returns_stop_event_result() -> None:
    """Awaiting the handler of a run ending with a plain StopEvent returns its result."""
    assert await Returns(timeout=5).run(value=StopEvent(result={"value": 42})) == {"value": 42}


@pytest.mark.asyncio
async def test_awaiting_handler_returns_stop_event_subclass_itself() -> None:
    """Awaiting the handler of a run ending with a StopEvent subclass returns that event."""
    out = await Returns(timeout=5).run(value=Outcome(score=0.5, result="r"))
    assert isinstance(out, Outcome)
    assert out.score == 0.5
    assert out.result == "r"


def test_base_event_extra_field_reads_as_attribute_item_and_membership() -> None:
    """Event(msg="hi") gives ev.msg, ev["msg"] and "msg" in ev."""
    ev = Event(msg="hi")
    assert ev.msg == "hi"  # type: ignore[attr-defined]
    assert ev["msg"] == "hi"
    assert "msg" in ev
    assert "other" not in ev


def test_declared_fields_read_by_item_but_not_members() -> None:
    """A subclass's declared fields are readable with ev[...]; `in` sees dynamic fields only."""
    ev = Greeting(name="Ada", count=2)
    assert ev["name"] == "Ada"
    assert ev["count"] == 2
    assert "name" not in ev
    assert "count" not in ev


def test_subclass_keeps_extra_keyword_fields() -> None:
    """A subclass also accepts undeclared keyword fields, readable by item and attribute."""
    ev = Greeting(name="Ada", mood="happy")
    assert ev["mood"] == "happy"
    assert ev.mood == "happy"  # type: ignore[attr-defined]
    assert "mood" in ev


@pytest.mark.parametrize(
    ("event", "type_name"),
    [
        pytest.param(Event(msg="hi"), "Event", id="base-event"),
        pytest.param(Greeting(name="Ada"), "Greeting", id="subclass"),
        pytest.param(StartEvent(a=1), "StartEvent", id="start-event"),
    ],
)
def test_missing_key_raises_key_error_naming_event_type(event: Event, type_name: str) -> None:
    """ev["missing"] raises KeyError whose message names the event type and the key."""
    with pytest.raises(KeyError, match=rf"{type_name} has no field 'missing'"):
        event["missing"]


def test_membership_of_non_string_key_is_false() -> None:
    """A non-string key is never `in` an event, and asking does not raise."""
    ev = Event(msg="hi")
    assert 1 not in ev
    assert None not in ev


def test_get_returns_value_or_default() -> None:
    """ev.get(key, default) returns the field when present and the default otherwise."""
    ev = Greeting(name="Ada", extra_field=0)
    assert ev.get("name") == "Ada"
    assert ev.get("extra_field", 5) == 0
    assert ev.get("missing") is None
    assert ev.get("missing", "fallback") == "fallback"


def test_terminal_event_fields() -> None:
    """WorkflowFailedEvent carries the step and the exception; step, type and message read too."""
    error = ValueError("boom")
    ev = WorkflowFailedEvent(step_name="s", exception=error)
    assert (ev.step_name, ev.exception, ev.attempts, ev.elapsed_seconds) == ("s", error, None, None)
    assert (ev.step, ev.exception_type, ev.message, ev.result) == ("s", "ValueError", "boom", None)
