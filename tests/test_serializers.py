"""Serializers: JsonSerializer's shapes and class resolution, PickleSerializer's fallback."""

import base64
import json
import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import BaseModel

import stepstream.context
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream.context import BaseSerializer
from stepstream.context import JsonSerializer
from stepstream.context import PickleSerializer
from stepstream.context.serializers import JsonPickleSerializer
from stepstream.context.state_store import DictState
from stepstream.context.state_store import InMemoryStateStore


class Point(BaseModel):
    x: int
    y: int = 0


class Shape(BaseModel):
    name: str
    corners: list[Point]


class Component:
    """A LlamaIndex-style component: ``class_name``, ``to_dict`` and ``from_dict``."""

    def __init__(self, label: str) -> None:
        self.label = label

    @classmethod
    def class_name(cls) -> str:
        """The component's name."""
        return "Component"

    def to_dict(self) -> dict[str, Any]:
        """The component as data."""
        return {"label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Component":
        """Rebuild a component from its data."""
        return cls(data["label"])


class Opaque:
    """A plain object JSON cannot hold (picklable: defined at module level)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)


def local_model() -> type[BaseModel]:
    """A model class defined inside a function (not importable by name)."""

    class Local(BaseModel):
        n: int = 0

    return Local


PAYLOAD_FOR_POINT = {"__is_pydantic": True, "value": {"x": 1, "y": 2}, "qualified_name": ""}


# -- the package ---------------------------------------------------------------------------


def test_context_package_exports_the_peer_names() -> None:
    """stepstream.context exports Context and the three serializers, like workflows.context."""
    assert sorted(stepstream.context.__all__) == [
        "BaseSerializer",
        "Context",
        "JsonSerializer",
        "PickleSerializer",
    ]
    assert JsonPickleSerializer is PickleSerializer


def test_base_serializer_is_abstract() -> None:
    """BaseSerializer cannot be instantiated without serialize and deserialize."""
    with pytest.raises(TypeError):
        BaseSerializer()  # type: ignore[abstract]


def test_base_validation_context_is_a_no_op() -> None:
    """The base validation_context() is a context manager that does nothing."""
    with JsonSerializer().validation_context():
        pass


# -- JsonSerializer: shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(3, id="int"),
        pytest.param(2.5, id="float"),
        pytest.param("text", id="str"),
        pytest.param(True, id="bool"),
        pytest.param({"a": [1, {"b": None}]}, id="nested"),
    ],
)
def test_json_round_trips_plain_data(value: Any) -> None:
    """Plain JSON data serializes to its JSON text and reads back equal."""
    s = JsonSerializer()
    assert s.serialize(value) == json.dumps(value)
    assert s.deserialize(s.serialize(value)) == value


def test_json_tags_a_model_with_its_qualified_name() -> None:
    """A pydantic model is written as __is_pydantic, its JSON dump and module.ClassName."""
    s = JsonSerializer()
    assert json.loads(s.serialize(Point(x=1, y=2))) == {
        "__is_pydantic": True,
        "value": {"x": 1, "y": 2},
        "qualified_name": f"{__name__}.Point",
    }
    assert s.deserialize(s.serialize(Point(x=1, y=2))) == Point(x=1, y=2)


def test_json_walks_dicts_and_lists_for_models() -> None:
    """Models inside dicts and lists are tagged and rebuilt in place."""
    s = JsonSerializer()
    value = {"shapes": [Shape(name="t", corners=[Point(x=1)])], "p": Point(x=2)}
    data = json.loads(s.serialize(value))
    assert data["p"]["__is_pydantic"] is True
    assert data["shapes"][0]["qualified_name"] == f"{__name__}.Shape"
    assert s.deserialize(s.serialize(value)) == value


def test_json_writes_events_and_reads_them_back() -> None:
    """stepstream events (extra fields included) round-trip through JsonSerializer."""
    s = JsonSerializer()
    event = StartEvent(topic="x", n=2)
    back = s.deserialize(s.serialize(event))
    assert isinstance(back, StartEvent)
    assert back == event
    assert back.get("topic") == "x"


def test_json_writes_components_with_to_dict() -> None:
    """An object with class_name and to_dict is written as __is_component, rebuilt by from_dict."""
    s = JsonSerializer()
    data = json.loads(s.serialize(Component("c1")))
    assert data == {
        "__is_component": True,
        "value": {"label": "c1"},
        "qualified_name": f"{__name__}.Component",
    }
    back = s.deserialize(s.serialize(Component("c1")))
    assert isinstance(back, Component)
    assert back.label == "c1"


def test_json_serialize_failure_names_the_type_and_the_way_out() -> None:
    """A value JSON cannot hold raises ValueError naming its type and pointing at pickle."""
    with pytest.raises(ValueError, match="cannot serialize a value of type set to JSON") as info:
        JsonSerializer().serialize({1, 2})
    assert "PickleSerializer()" in str(info.value)
    with pytest.raises(ValueError, match=f"of type {__name__}.Opaque to JSON"):
        JsonSerializer().serialize(Opaque(1))
    with pytest.raises(ValueError, match="type dict to JSON \\(Object of type Opaque is not"):
        JsonSerializer().serialize({"k": Opaque(1)})


# -- JsonSerializer: resolving classes -----------------------------------------------------


def test_unrestricted_serializer_imports_classes_by_name() -> None:
    """With allowed_types=None, resolve_class imports any module.Class."""
    assert JsonSerializer().resolve_class(f"{__name__}.Point") is Point
    assert JsonSerializer().resolve_class("json.JSONDecoder") is json.JSONDecoder


def test_allowed_classes_resolve_without_import() -> None:
    """A class in allowed_types is rebuilt from the registry, even one defined in a function."""
    local = local_model()
    payload = JsonSerializer().serialize(local(n=4))
    with pytest.raises(AttributeError, match="has no attribute 'Local'"):
        JsonSerializer().deserialize(payload)
    back = JsonSerializer(allowed_types=[local]).deserialize(payload)
    assert isinstance(back, local)
    assert back.model_dump() == {"n": 4}


def test_allowed_types_refuses_other_classes() -> None:
    """A payload naming a class outside allowed_types raises ValueError naming it."""
    payload = JsonSerializer().serialize(Point(x=1))
    with pytest.raises(ValueError, match=rf"class {__name__}\.Point is not in the serializer's"):
        JsonSerializer(allowed_types=[Shape]).deserialize(payload)


def test_allowed_type_strings_allow_the_import() -> None:
    """A 'module.Class' string in allowed_types lets that class be imported."""
    payload = JsonSerializer().serialize(Point(x=1))
    s = JsonSerializer(allowed_types=[f"{__name__}.Point"])
    assert s.deserialize(payload) == Point(x=1)


def test_framework_types_always_resolve() -> None:
    """stepstream's own events resolve even with an empty allowlist."""
    s = JsonSerializer(allowed_types=[])
    assert s.resolve_class("stepstream.events.StopEvent") is StopEvent
    event = s.deserialize(JsonSerializer().serialize(StopEvent(result=3)))
    assert isinstance(event, StopEvent)
    assert event.result == 3


def test_registered_class_wins_over_import() -> None:
    """resolve_class looks in allowed_types first: a registered class shadows an importable one."""
    local = local_model()
    s = JsonSerializer(allowed_types=[local, f"{__name__}.Point"])
    assert s.resolve_class(f"{local.__module__}.Local") is local
    assert s.resolve_class(f"{__name__}.Point") is Point


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(Point(x=1), id="instance"),
        pytest.param(Any, id="Any"),
        pytest.param(list[int], id="generic-alias"),
        pytest.param(3, id="number"),
    ],
)
def test_allowed_types_entries_must_be_classes(entry: Any) -> None:
    """An allowed_types entry that is not a class or a string raises TypeError naming it."""
    with pytest.raises(
        TypeError, match=r"allowed_types entries must be classes or 'module\.Class'"
    ):
        JsonSerializer(allowed_types=[entry])


def test_two_allowed_classes_with_one_name_are_refused() -> None:
    """Two classes written under the same module.Class name raise ValueError naming it."""
    with pytest.raises(ValueError, match=rf"two classes written under the name {__name__}\.Local"):
        JsonSerializer(allowed_types=[local_model(), local_model()])


def test_with_types_adds_to_a_restricted_serializer() -> None:
    """with_types returns a new serializer allowing more classes and keeps the original."""
    narrow = JsonSerializer(allowed_types=[Shape])
    wider = narrow.with_types(Point)
    payload = JsonSerializer().serialize(Point(x=1))
    assert wider is not narrow
    assert wider.deserialize(payload) == Point(x=1)
    with pytest.raises(ValueError, match="not in the serializer's allowed types"):
        narrow.deserialize(payload)


def test_with_types_keeps_string_entries() -> None:
    """with_types carries the original's string entries over."""
    wider = JsonSerializer(allowed_types=[f"{__name__}.Point"]).with_types(Shape)
    assert wider.deserialize(JsonSerializer().serialize(Point(x=1))) == Point(x=1)


def test_with_types_on_an_unrestricted_serializer_is_itself() -> None:
    """with_types returns the serializer itself when it allows every class already."""
    s = JsonSerializer()
    assert s.with_types(Point) is s


def test_unimportable_module_raises_import_error() -> None:
    """A payload naming a module that does not exist raises ImportError naming it."""
    payload = json.dumps({**PAYLOAD_FOR_POINT, "qualified_name": "no_such_mod_x.Point"})
    with pytest.raises(ImportError, match="cannot import module 'no_such_mod_x'"):
        JsonSerializer().deserialize(payload)


def test_a_name_that_is_not_a_class_is_refused() -> None:
    """A payload naming a function raises ValueError instead of calling it."""
    payload = json.dumps({**PAYLOAD_FOR_POINT, "qualified_name": "json.dumps"})
    with pytest.raises(ValueError, match=r"json\.dumps named by a payload is a function"):
        JsonSerializer().deserialize(payload)


def test_subclass_validation_context_is_entered_while_rebuilding() -> None:
    """deserialize rebuilds models inside the serializer's validation_context()."""
    entered: list[str] = []

    class Tracking(JsonSerializer):
        @contextmanager
        def validation_context(self) -> Iterator[None]:
            entered.append("in")
            yield

    Tracking().deserialize(JsonSerializer().serialize([Point(x=1), Point(x=2)]))
    assert entered == ["in", "in"]


# -- PickleSerializer ------------------------------------------------------------------------


def test_pickle_serializer_writes_json_when_it_can() -> None:
    """PickleSerializer writes the same JSON as JsonSerializer for JSON-able values."""
    value = {"p": Point(x=1), "n": [1, 2]}
    assert PickleSerializer().serialize(value) == JsonSerializer().serialize(value)
    assert PickleSerializer().deserialize(PickleSerializer().serialize(value)) == value


def test_pickle_serializer_falls_back_to_base64_pickle() -> None:
    """A value JSON cannot hold is written as base64 pickle and read back equal."""
    value = {"o": Opaque(3), "tags": {1, 2}}
    text = PickleSerializer().serialize(value)
    assert pickle.loads(base64.b64decode(text)) == value  # noqa: S301 - our own payload
    assert PickleSerializer().deserialize(text) == value


def test_pickle_serializer_reads_plain_json() -> None:
    """PickleSerializer.deserialize falls back to JSON for text that is not a pickle."""
    assert PickleSerializer().deserialize('{"a": [1, 2]}') == {"a": [1, 2]}
    assert PickleSerializer().deserialize("1234") == 1234


def test_pickle_serializer_failure_names_the_type() -> None:
    """A value neither JSON nor picklable raises ValueError naming its type."""
    with pytest.raises(ValueError, match=r"of type _thread\.lock: it is not JSON data"):
        PickleSerializer().serialize(threading.Lock())


# -- an error whose text cannot be printed still gives a clear message -------------------


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class _Hostile(BaseModel):
    """A model whose dump raises an error that cannot be turned into text."""

    x: int = 0

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        raise _UnprintableError


class _UnpicklableHostile:
    def __reduce__(self) -> Any:
        raise _UnprintableError


def test_json_serializer_reports_an_unprintable_error_by_its_type() -> None:
    """The message names the value's type and says the error could not be printed."""
    with pytest.raises(ValueError, match="cannot serialize a value of type") as info:
        JsonSerializer().serialize(_Hostile())
    assert "<unprintable" in str(info.value)


def test_pickle_serializer_reports_an_unprintable_error_by_its_type() -> None:
    """Neither JSON's nor pickle's failure text may break the message."""
    with pytest.raises(ValueError, match="cannot be pickled") as info:
        PickleSerializer().serialize(_UnpicklableHostile())
    assert "<unprintable" in str(info.value)


def test_state_key_error_with_unprintable_text_names_the_key() -> None:
    """A state key whose value fails with an unprintable error is still named."""
    store = InMemoryStateStore(DictState(_data={"bad": _UnpicklableHostile()}))
    with pytest.raises(ValueError, match="cannot serialize state key 'bad'") as info:
        store.to_dict(PickleSerializer())
    assert "<unprintable" in str(info.value)
