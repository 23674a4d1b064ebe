"""Serializers: how the state store (and a saved context) turns values into strings and back.

:class:`JsonSerializer` writes JSON. A pydantic model is written with the name of its
class, ``{"__is_pydantic": true, "value": <model_dump(mode="json")>, "qualified_name":
"module.Class"}``, so reading it back rebuilds the model; dicts and lists are walked.
``allowed_types`` restricts which classes a payload may name. :class:`PickleSerializer`
writes JSON when it can and base64-encoded pickle otherwise (read only trusted payloads
with it: unpickling runs code).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import pickle
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from stepstream._text import error_text, safe_repr
from stepstream.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

__all__ = ["BaseSerializer", "JsonPickleSerializer", "JsonSerializer", "PickleSerializer"]

# Classes of stepstream itself that a saved run may name: they always resolve, whatever
# ``allowed_types`` says (the state store adds DictState).
_FRAMEWORK_TYPES: dict[str, type[Any]] = {}


def _serialized_names(cls: type[Any]) -> tuple[str, ...]:
    """The names a payload may use for ``cls``: written with ``__name__``, allowed by both."""
    return tuple(dict.fromkeys((f"{cls.__module__}.{cls.__name__}", _qualname(cls))))


def _qualname(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _register_framework_types(*classes: type[Any]) -> None:
    """Make stepstream's own ``classes`` resolve under every serializer."""
    for cls in classes:
        for name in _serialized_names(cls):
            _FRAMEWORK_TYPES[name] = cls


_register_framework_types(
    Event,
    StartEvent,
    StopEvent,
    InputRequiredEvent,
    HumanResponseEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
    WorkflowCancelledEvent,
)


class BaseSerializer(ABC):
    """Turns values into strings and back; the interface of every serializer."""

    @contextmanager
    def validation_context(self) -> Iterator[None]:
        """Run a block (a model's validation) with this serializer selected; a no-op here.

        Serializers that resolve classes their own way override it, so the models they
        rebuild can reach them while validating.
        """
        yield

    @abstractmethod
    def serialize(self, value: Any) -> str:
        """Encode ``value`` as a string; raise ValueError when it cannot be encoded."""

    @abstractmethod
    def deserialize(self, value: str) -> Any:
        """Rebuild the value that :meth:`serialize` encoded as ``value``."""


class JsonSerializer(BaseSerializer):
    """JSON, with pydantic models (and objects with ``class_name``/``to_dict``) tagged by class.

    Args:
        allowed_types: The classes a payload may name, as classes or ``"module.Class"``
            strings; None (the default) allows any class that can be imported. A class
            given here is rebuilt without importing anything (so a class defined inside a
            function works); a string is imported. stepstream's own event and state
            classes always resolve.

    Raises:
        TypeError: An ``allowed_types`` entry is neither a class nor a string.
        ValueError: Two allowed classes would be written under the same name.
    """

    def __init__(self, *, allowed_types: Iterable[type[Any] | str] | None = None) -> None:
        self._registered: dict[str, type[Any]] = {}
        self._allowed: frozenset[str] | None = None
        if allowed_types is None:
            return
        names: set[str] = set()
        for entry in allowed_types:
            if isinstance(entry, str):
                names.add(entry)
                continue
            _check_allowed_entry(entry)
            for name in _serialized_names(entry):
                claimed = self._registered.get(name)
                if claimed is not None and claimed is not entry:
                    msg = (
                        f"allowed_types has two classes written under the name {name}: "
                        f"{claimed!r} and {entry!r}; a payload cannot tell them apart, so "
                        "allow only one of them (or rename or move the other)"
                    )
                    raise ValueError(msg)
                self._registered[name] = entry
                names.add(name)
        self._allowed = frozenset(names)

    def with_types(self, *classes: type[Any]) -> JsonSerializer:
        """Return a serializer that also allows ``classes``; ``self`` when unrestricted."""
        if self._allowed is None:
            return self
        registered = tuple(dict.fromkeys(self._registered.values()))
        names = tuple(sorted(self._allowed - self._registered.keys()))
        return type(self)(allowed_types=(*registered, *names, *classes))

    def resolve_class(self, qualified_name: str) -> type[Any]:
        """Return the class a payload names: allowed classes, stepstream's, then by import.

        Raises:
            ValueError: The name is outside ``allowed_types``, or names something that
                is not a class.
            ImportError: Its module cannot be imported.
            AttributeError: Its module has no such attribute.
        """
        registered = self._registered.get(qualified_name)
        if registered is not None:
            return registered
        framework = _FRAMEWORK_TYPES.get(qualified_name)
        if framework is not None:
            return framework
        if self._allowed is not None and qualified_name not in self._allowed:
            msg = (
                f"class {qualified_name} is not in the serializer's allowed types, so a "
                "payload naming it is refused; allow it with "
                f"JsonSerializer(allowed_types=[..., {qualified_name.rsplit('.', 1)[-1]}]) "
                "(the class, or the string "
                f"{qualified_name!r}), or use JsonSerializer() to resolve classes by import"
            )
            raise ValueError(msg)
        return _import_class(qualified_name)

    def serialize_value(self, value: Any) -> Any:
        """Return ``value`` as JSON data: models and components tagged, containers walked."""
        if hasattr(value, "class_name") and callable(getattr(value, "to_dict", None)):
            return {
                "__is_component": True,
                "value": value.to_dict(),
                "qualified_name": _written_name(value),
            }
        if isinstance(value, BaseModel):
            return {
                "__is_pydantic": True,
                "value": value.model_dump(mode="json"),
                "qualified_name": _written_name(value),
            }
        if isinstance(value, dict):
            return {k: self.serialize_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.serialize_value(v) for v in value]
        return value

    def serialize(self, value: Any) -> str:
        """Encode ``value`` as a JSON string.

        Raises:
            ValueError: ``value`` (or something inside it) is not JSON data or a model.
        """
        try:
            return json.dumps(self.serialize_value(value))
        except Exception as exc:
            msg = (
                f"cannot serialize a value of type {_type_name(value)} to JSON ({error_text(exc)}; "
                f"value: {safe_repr(value, 80)}); store JSON data (dict, list, str, int, float, "
                "bool, None) or a pydantic model, or use PickleSerializer() for any "
                "picklable object"
            )
            raise ValueError(msg) from exc

    def deserialize_value(self, data: Any) -> Any:
        """Rebuild a value from JSON data written by :meth:`serialize_value`."""
        if isinstance(data, dict):
            name = data.get("qualified_name")
            if data.get("__is_pydantic") and name:
                cls = self.resolve_class(name)
                with self.validation_context():
                    return cls.model_validate(data["value"])
            if data.get("__is_component") and name:
                cls = self.resolve_class(name)
                with self.validation_context():
                    return cls.from_dict(data["value"])
            return {k: self.deserialize_value(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.deserialize_value(v) for v in data]
        return data

    def deserialize(self, value: str) -> Any:
        """Rebuild the value a JSON string written by :meth:`serialize` holds."""
        return self.deserialize_value(json.loads(value))


class PickleSerializer(JsonSerializer):
    """JSON when possible, base64-encoded pickle otherwise; reads pickle first, then JSON.

    Unpickling runs code named by the payload: read only payloads you wrote.
    """

    def serialize(self, value: Any) -> str:
        """Encode ``value`` as JSON, or as base64 pickle when JSON cannot hold it.

        Raises:
            ValueError: ``value`` is neither JSON-serializable nor picklable.
        """
        try:
            return super().serialize(value)
        except ValueError as json_error:
            try:
                return base64.b64encode(pickle.dumps(value)).decode("ascii")
            except Exception as exc:
                msg = (
                    f"cannot serialize a value of type {_type_name(value)}: it is not JSON "
                    f"data ({error_text(json_error.__cause__ or json_error)}) and cannot be "
                    f"pickled ({error_text(exc)}); store "
                    "plain data or a pydantic model instead, or leave it out of the state"
                )
                raise ValueError(msg) from exc

    def deserialize(self, value: str) -> Any:
        """Rebuild a value: unpickle base64 data, or else read it as JSON."""
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return super().deserialize(value)
        try:
            return pickle.loads(raw)  # noqa: S301 - documented: trusted payloads only
        except Exception:  # noqa: BLE001 - not a pickle: it is JSON (or an error there)
            return super().deserialize(value)


JsonPickleSerializer = PickleSerializer
"""The former name of :class:`PickleSerializer`, kept as in LlamaIndex."""


def _check_allowed_entry(entry: object) -> None:
    generic = isinstance(entry, types.GenericAlias) or typing.get_origin(entry) is not None
    if generic or not isinstance(entry, type) or entry is Any:
        msg = (
            f"allowed_types entries must be classes or 'module.Class' strings, got "
            f"{entry!r} ({type(entry).__name__}); pass the class itself, e.g. "
            "JsonSerializer(allowed_types=[MyState])"
        )
        raise TypeError(msg)


def _written_name(value: Any) -> str:
    """The class name a payload records for ``value``: ``module.ClassName``."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__name__}"


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else _qualname(cls)


def _import_class(qualified_name: str) -> type[Any]:
    module_name, _, attr = qualified_name.rpartition(".")
    if not module_name:
        msg = f"cannot resolve class {qualified_name!r} named by a payload: expected 'module.Class'"
        raise ValueError(msg)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"cannot import module {module_name!r} to rebuild {qualified_name} named by a "
            f"payload ({error_text(exc)}); make that module importable where the payload "
            "is read, or "
            "pass the class in JsonSerializer(allowed_types=[...])"
        )
        raise ImportError(msg) from exc
    try:
        found = getattr(module, attr)
    except AttributeError as exc:
        msg = (
            f"module {module_name!r} has no attribute {attr!r}, so {qualified_name} named by "
            "a payload cannot be rebuilt; a class defined inside a function cannot be "
            "imported: define it at module level, or pass the class in "
            "JsonSerializer(allowed_types=[...])"
        )
        raise AttributeError(msg) from exc
    if not isinstance(found, type):
        msg = (
            f"{qualified_name} named by a payload is a {type(found).__name__}, not a class; "
            "only classes are rebuilt"
        )
        raise ValueError(msg)  # noqa: TRY004 - ValueError, as in LlamaIndex
    return found
