"""The run's state: one pydantic model shared by the steps, read and written by dot path.

With ``ctx: Context[MyState]`` in a step's signature the state is a ``MyState`` (built
with no arguments when the run starts); otherwise it is a :class:`DictState`, a
dict-like model. ``await ctx.store.get("user.name")`` and ``await ctx.store.set(...)``
follow dot paths through dict keys, DictState keys, list indexes and attributes.

Writes are serialized by one lock per store and never change the committed state in
place: ``set`` copies the containers along its path, ``edit_state`` hands out a deep copy
and commits it when the block exits. Reads take no lock and see the committed state.
"""

from __future__ import annotations

import asyncio
import copy
import json
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, KeysView, ValuesView
from collections.abc import ItemsView as ItemsViewABC
from collections.abc import Sequence as SequenceABC
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, cast, runtime_checkable

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic_core import to_jsonable_python
from typing_extensions import TypeVar

from stepstream._text import error_text
from stepstream.context.serializers import BaseSerializer, _register_framework_types

__all__ = [
    "KNOWN_UNSERIALIZABLE_KEYS",
    "MAX_DEPTH",
    "MODEL_T",
    "DictState",
    "InMemoryStateStore",
    "StateStore",
    "UnserializableKeyWarning",
]

#: The most segments a path may have.
MAX_DEPTH = 1000

#: DictState keys whose values may fail to serialize (live objects such as an agent's
#: memory): ``to_dict`` leaves them out with an :class:`UnserializableKeyWarning`.
KNOWN_UNSERIALIZABLE_KEYS: tuple[str, ...] = ("memory",)

_DATA = "_data"


class UnserializableKeyWarning(Warning):
    """A known-unserializable state key was left out of a snapshot (``to_dict``)."""


class DictState(BaseModel):
    """The default state: a pydantic model that behaves like a dict.

    Keys are read and written as items (``state["k"]``) or attributes (``state.k``);
    ``keys()``, ``values()``, ``items()``, ``get()``, ``len()``, ``in`` and iteration
    work on them. Subclasses may declare fields too: attributes reach the declared fields
    first, the mapping methods only the dynamic keys. ``model_dump()`` holds the declared
    fields plus ``"_data"`` (the keys) when there are any.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _data: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init__(self, **params: Any) -> None:
        fields = type(self).model_fields
        private = type(self).__private_attributes__
        super().__init__(**{k: v for k, v in params.items() if k in fields})
        for key, value in params.items():
            if key in private:
                super().__setattr__(key, value)
            elif key not in fields:
                self._data[key] = value

    @model_validator(mode="wrap")
    @classmethod
    def _keep_dynamic_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Validation (``model_validate``) restores the keys that ``model_dump`` wrote."""
        if not isinstance(data, dict):
            return handler(data)
        fields = cls.model_fields
        dynamic = dict(data.get(_DATA) or {})
        dynamic.update({k: v for k, v in data.items() if k not in fields and k != _DATA})
        state = handler({k: v for k, v in data.items() if k in fields})
        if dynamic and isinstance(state, DictState):
            state._data.update(dynamic)  # noqa: SLF001 - the instance this validator built
        return state

    @model_serializer(mode="wrap")
    def _dump_dynamic_keys(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        if self._data:
            data = dict(self._data)
            dumped[_DATA] = to_jsonable_python(data) if info.mode_is_json() else data
        return dumped

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        private = self.__pydantic_private__ or {}
        if name in private:
            return private[name]
        data = private.get(_DATA)
        if isinstance(data, dict) and name in data:
            return data[name]
        msg = f"'{type(self).__name__}' object has no attribute '{name}'"
        raise AttributeError(msg)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).model_fields or name in type(self).__private_attributes__:
            super().__setattr__(name, value)
        else:
            self._data[name] = value

    def __delattr__(self, name: str) -> None:
        if name in self._data:
            del self._data[name]
        else:
            super().__delattr__(name)

    def __copy__(self) -> Self:
        clone = super().__copy__()
        clone._data = dict(self._data)  # noqa: SLF001 - a copy owns its own keys
        return clone

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override] # a dict iterates keys
        return iter(self._data)

    def __bool__(self) -> bool:
        return True

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` when absent."""
        return self._data.get(key, default)

    def keys(self) -> KeysView[str]:
        """The dynamic keys."""
        return self._data.keys()

    def values(self) -> ValuesView[Any]:
        """The values of the dynamic keys."""
        return self._data.values()

    def items(self) -> ItemsViewABC[str, Any]:
        """The dynamic ``(key, value)`` pairs."""
        return self._data.items()

    def to_dict(self) -> dict[str, Any]:
        """The dynamic keys as the dict that holds them (not a copy)."""
        return self._data


_register_framework_types(DictState)

MODEL_T = TypeVar("MODEL_T", bound=BaseModel, default=DictState)
"""The state model of a store (and of ``Context[MODEL_T]``); DictState when not given."""


@runtime_checkable
class StateStore(Protocol[MODEL_T]):
    """What ``ctx.store`` offers: the state model, read and written whole or by path."""

    @property
    def state_type(self) -> type[MODEL_T]:
        """The class of the state the store was created with."""
        ...

    async def get_state(self) -> MODEL_T:
        """Return a copy of the committed state."""
        ...

    async def set_state(self, state: MODEL_T) -> None:
        """Replace the state, or merge a parent-type instance into it."""
        ...

    async def get(self, path: str, default: Any = ...) -> Any:
        """Return the value at dot-separated ``path``."""
        ...

    async def set(self, path: str, value: Any) -> None:
        """Set the value at dot-separated ``path``."""
        ...

    async def clear(self) -> None:
        """Reset the state to a default instance of its type."""
        ...

    def edit_state(self) -> AbstractAsyncContextManager[MODEL_T]:
        """Edit a copy of the state, committed when the block exits."""
        ...

    def to_dict(self, serializer: BaseSerializer) -> dict[str, Any]:
        """Serialize the state with ``serializer``."""
        ...


class InMemoryStateStore(Generic[MODEL_T]):
    """The state of one run (``ctx.store``), kept in memory.

    Args:
        initial_state: The state to start from; its class is :attr:`state_type`.
    """

    def __init__(self, initial_state: MODEL_T) -> None:
        self._state = initial_state
        self._state_type: type[MODEL_T] = type(initial_state)
        # Created by the first writer: a store may be built outside a running loop.
        self._lock: asyncio.Lock | None = None
        self._writer: asyncio.Task[Any] | None = None

    @property
    def state_type(self) -> type[MODEL_T]:
        """The class of the state the store was created with."""
        return self._state_type

    # -- reads (no lock: they see the committed state) -----------------------------------

    async def get_state(self) -> MODEL_T:
        """Return a (shallow) copy of the committed state."""
        return self._state.model_copy()

    async def get(self, path: str, default: Any = ...) -> Any:
        """Return the value at dot-separated ``path`` (``""``: a copy of the whole state).

        Each segment is a dict key, a DictState key, a list index or an attribute.

        Raises:
            ValueError: Nothing is at ``path`` and no ``default`` was given (the message
                names the segment that failed), or the path is longer than MAX_DEPTH.
        """
        state = self._state
        if isinstance(state, DictState) and "." not in path:  # the common case: a plain key
            data = state._data  # noqa: SLF001 - DictState is this module's own
            if path in data:
                return data[path]
        segments = _split(path)
        if not segments:
            return state.model_copy()
        value: Any = state
        for i, segment in enumerate(segments):
            value = _child(value, segment)
            if isinstance(value, _Miss):
                if default is not ...:
                    return default
                msg = (
                    f"path {path!r} not found in the state: {_where(segments, i)} "
                    f"{value.reason}; check the path, set it first with "
                    f"`await ctx.store.set({path!r}, value)`, or pass `default=`"
                )
                raise ValueError(msg)
        return value

    # -- writes (one at a time; never in place) --------------------------------------------

    async def set(self, path: str, value: Any) -> None:
        """Set the value at dot-separated ``path``, creating missing dicts along the way.

        Only the containers along the path are copied; the new state is committed at once.

        Raises:
            ValueError: ``path`` is empty or too long, or a segment cannot be written
                (the message names it).
        """
        segments = _split(path)
        if not segments:
            msg = (
                "path cannot be empty: ctx.store.set(path, value) needs a dot-separated "
                "path such as 'count' or 'user.name'; use set_state(...) to replace the "
                "whole state"
            )
            raise ValueError(msg)
        async with self._writing():
            self._state = _with_value_at(self._state, segments, value, path)

    async def set_state(self, state: BaseModel) -> None:
        """Replace the state with ``state``, or merge it in when it is of a parent type.

        A ``state`` of the store's current type (or a subclass) replaces it; one of a
        parent type has its fields copied over the current state's.

        Raises:
            ValueError: ``state`` is of an unrelated type.
        """
        async with self._writing():
            current = self._state
            current_type = type(current)
            if isinstance(state, current_type):
                self._state = state.model_copy()
            elif isinstance(state, BaseModel) and issubclass(current_type, type(state)):
                merged = {**current.model_dump(), **state.model_dump()}
                self._state = current_type.model_validate(merged)
            else:
                msg = (
                    f"set_state got a {type(state).__name__}, but the state is a "
                    f"{current_type.__name__}; pass a {current_type.__name__} (or an "
                    "instance of one of its parent classes, whose fields are merged in)"
                )
                raise ValueError(msg)  # noqa: TRY004 - ValueError, as in LlamaIndex

    async def clear(self) -> None:
        """Reset the state to a default instance of its current type.

        Raises:
            ValueError: The type has fields without defaults.
        """
        async with self._writing():
            self._state = _default_instance(type(self._state))

    @asynccontextmanager
    async def edit_state(self) -> AsyncIterator[MODEL_T]:
        """Edit a deep copy of the state, committed when the block exits without error.

        Other writers wait for the block; readers see the state from before it until
        the commit. Calling a writer (``set``, ``set_state``, ``clear``, ``edit_state``)
        inside the block raises RuntimeError: change the yielded state instead.
        """
        async with self._writing():
            draft = _isolated_copy(self._state)
            yield draft
            self._state = draft

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if self._writer is not None and self._writer is task:
            msg = "writer called inside edit_state: mutate the yielded state instead"
            raise RuntimeError(msg)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._writer = task
            try:
                yield
            finally:
                self._writer = None

    # -- snapshots --------------------------------------------------------------------------

    def to_dict(self, serializer: BaseSerializer) -> dict[str, Any]:
        """Serialize the committed state with ``serializer``.

        Returns ``{"store_type": "in_memory", "state_type": <class name>, "state_module":
        <module>, "state_data": ...}``: for a DictState ``{"_data": {key: <string>}}``
        (each value serialized on its own), for a typed state one string.

        Raises:
            ValueError: A value cannot be serialized (a DictState key in
                KNOWN_UNSERIALIZABLE_KEYS is left out with a warning instead).
        """
        state = self._state
        data: Any
        if isinstance(state, DictState):
            data = {_DATA: _serialize_keys(state, serializer)}
        else:
            try:
                data = serializer.serialize(state)
            except ValueError as exc:
                msg = f"cannot serialize the state ({type(state).__name__}): {error_text(exc)}"
                raise ValueError(msg) from exc
        return {
            "store_type": "in_memory",
            "state_type": type(state).__name__,
            "state_module": type(state).__module__,
            "state_data": data,
        }

    @classmethod
    def from_dict(
        cls, payload: dict[str, Any], serializer: BaseSerializer
    ) -> InMemoryStateStore[Any]:
        """Rebuild a store from what :meth:`to_dict` returned (empty: a DictState).

        The state's class comes from the serialized data itself (checked by the
        serializer's ``allowed_types``), never from ``state_type``/``state_module``.

        Raises:
            ValueError: The payload is not an in-memory state, or a value cannot be read.
        """
        if not payload:
            return cls(cast("MODEL_T", DictState()))
        store_type = payload.get("store_type", "in_memory")
        if store_type != "in_memory":
            msg = (
                f"cannot restore an InMemoryStateStore from store_type {store_type!r}; "
                "pass the payload to the from_dict() of the store that wrote it"
            )
            raise ValueError(msg)
        return cls(cast("MODEL_T", _decode_state(payload.get("state_data"), serializer)))


# -- paths ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Miss:
    """A segment that leads nowhere: ``reason`` completes "<where> ..."; ``fix`` says what to do."""

    reason: str
    fix: str = "check the path"


def _split(path: str) -> list[str]:
    segments = path.split(".") if path else []
    if len(segments) > MAX_DEPTH:
        msg = (
            f"path has {len(segments)} segments, more than MAX_DEPTH ({MAX_DEPTH}); "
            "use a shorter path"
        )
        raise ValueError(msg)
    return segments


def _where(segments: list[str], i: int) -> str:
    return f"'{'.'.join(segments[:i])}'" if i else "the state"


def _no_key(segment: str, keys: Iterable[Any]) -> _Miss:
    listed = ", ".join(repr(k) for k in sorted(keys, key=str))
    return _Miss(f"has no key {segment!r} " + (f"(keys: {listed})" if listed else "(it is empty)"))


def _no_field(obj: BaseModel, segment: str) -> _Miss:
    name = type(obj).__name__
    fields = ", ".join(map(repr, type(obj).model_fields)) or "none"
    return _Miss(
        f"({name}) has no field {segment!r} (fields: {fields})",
        f"check the path, or add the field to {name}",
    )


def _index(segment: str) -> int | None:
    try:
        return int(segment)
    except ValueError:
        return None


def _declared(obj: DictState, segment: str) -> bool:
    cls = type(obj)
    return (
        segment in cls.model_fields
        or segment in cls.model_computed_fields
        or isinstance(getattr(cls, segment, None), property)
    )


def _item(seq: SequenceABC[Any], segment: str) -> Any:
    index = _index(segment)
    if index is None:
        return _Miss(f"is a {type(seq).__name__}: use an integer index, not {segment!r}")
    try:
        return seq[index]
    except IndexError:
        return _Miss(f"has no index {index} (length {len(seq)})")


def _child(obj: Any, segment: str) -> Any:
    """Follow one segment into ``obj``: the value there, or a :class:`_Miss`."""
    if isinstance(obj, dict):
        return obj[segment] if segment in obj else _no_key(segment, obj)
    if isinstance(obj, DictState):
        # Dynamic keys first; mapping methods (items, keys, ...) are never values.
        if segment in obj:
            return obj[segment]
        return getattr(obj, segment) if _declared(obj, segment) else _no_key(segment, obj)
    if isinstance(obj, SequenceABC) and not isinstance(obj, str | bytes):
        return _item(obj, segment)
    return _attribute(obj, segment)


def _attribute(obj: Any, segment: str) -> Any:
    try:
        return getattr(obj, segment)
    except AttributeError:
        if isinstance(obj, BaseModel):
            return _no_field(obj, segment)
        return _Miss(f"({type(obj).__name__}) has no attribute {segment!r}")


def _assign(obj: Any, segment: str, value: Any) -> _Miss | None:
    """Write one segment of ``obj`` (a fresh copy); a :class:`_Miss` when it cannot."""
    if isinstance(obj, dict):
        obj[segment] = value
    elif isinstance(obj, DictState):
        if segment in type(obj).model_fields:
            setattr(obj, segment, value)
        else:
            obj[segment] = value  # a dynamic key, even one named like an attribute
    elif isinstance(obj, list):
        found = _item(obj, segment)
        if isinstance(found, _Miss):
            return _Miss(found.reason, "to add an item, set the whole list (or check the path)")
        obj[int(segment)] = value
    else:
        try:
            setattr(obj, segment, value)
        except (AttributeError, TypeError, ValueError) as exc:
            if isinstance(obj, BaseModel) and segment not in type(obj).model_fields:
                return _no_field(obj, segment)
            return _Miss(f"({type(obj).__name__}) cannot take {segment!r}: {error_text(exc)}")
    return None


def _shallow(obj: Any) -> Any:
    """A copy of one container along a written path (the object itself if uncopyable)."""
    try:
        return copy.copy(obj)
    except Exception:  # noqa: BLE001 - a live object: written in place
        return obj


def _with_value_at(state: MODEL_T, segments: list[str], value: Any, path: str) -> MODEL_T:
    """A new state equal to ``state`` with ``value`` at ``segments`` (copy on write)."""
    root = _shallow(state)
    parent: Any = root
    for i, segment in enumerate(segments):
        if i == len(segments) - 1:
            child = value
        else:
            found = _child(parent, segment)
            child = {} if isinstance(found, _Miss) else _shallow(found)
        miss = _assign(parent, segment, child)
        if miss is not None:
            msg = f"cannot set path {path!r}: {_where(segments, i)} {miss.reason}; {miss.fix}"
            raise ValueError(msg)
        parent = child
    return cast("MODEL_T", root)


# -- copies and defaults -------------------------------------------------------------------


def _copy_or_share(value: Any) -> Any:
    """A deep copy of ``value``, or ``value`` itself when it cannot be copied (live objects)."""
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - a lock, a client, a socket: shared, not isolated
        return value


def _isolated_copy(state: MODEL_T) -> MODEL_T:
    """The copy ``edit_state`` hands out: changes to it do not reach the committed state."""
    if isinstance(state, DictState):
        draft = copy.copy(state)
        draft._data = {k: _copy_or_share(v) for k, v in state.items()}  # noqa: SLF001
        for name in type(state).model_fields:
            object.__setattr__(draft, name, _copy_or_share(getattr(state, name)))
        return cast("MODEL_T", draft)
    try:
        return state.model_copy(deep=True)
    except Exception:  # noqa: BLE001 - a field holds a live object
        return state.model_copy()


def _default_instance(state_type: type[MODEL_T]) -> MODEL_T:
    try:
        return state_type()
    except ValidationError as exc:
        required = [n for n, f in state_type.model_fields.items() if f.is_required()]
        msg = (
            f"cannot reset the state: {state_type.__name__}() fails without arguments "
            f"(required fields: {', '.join(map(repr, required)) or 'none'}; {exc.error_count()} "
            "error(s)); give every field of the state model a default"
        )
        raise ValueError(msg) from exc


# -- serialization -------------------------------------------------------------------------


def _serialize_keys(state: DictState, serializer: BaseSerializer) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in state.items():
        try:
            out[key] = serializer.serialize(value)
        except Exception as exc:
            if key in KNOWN_UNSERIALIZABLE_KEYS:
                warnings.warn(
                    f"state key {key!r} cannot be serialized and is left out of the "
                    f"snapshot ({error_text(exc)}); set it again after restoring the state",
                    UnserializableKeyWarning,
                    stacklevel=3,
                )
                continue
            msg = (
                f"cannot serialize state key {key!r}: {error_text(exc)}"
                if isinstance(exc, ValueError)
                else (
                    f"cannot serialize state key {key!r} ({type(value).__name__}): "
                    f"{error_text(exc)}"
                )
            )
            raise ValueError(msg) from exc
    return out


def _deserialize_keys(data: dict[str, Any], serializer: BaseSerializer) -> DictState:
    values: dict[str, Any] = {}
    for key, text in (data.get(_DATA) or {}).items():
        try:
            values[key] = serializer.deserialize(text)
        except Exception as exc:
            msg = (
                f"cannot deserialize state key {key!r}: {error_text(exc)}; read the snapshot "
                "with the serializer that wrote it"
            )
            raise ValueError(msg) from exc
    return DictState(_data=values)


def _decode_state(data: Any, serializer: BaseSerializer) -> BaseModel:
    """The state model a snapshot's ``state_data`` holds, dispatched on its shape."""
    if data is None:
        return DictState()
    if isinstance(data, BaseModel):
        return data
    if isinstance(data, dict) and _DATA in data:
        return _deserialize_keys(data, serializer)
    if isinstance(data, str):
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and _DATA in parsed:
            return _deserialize_keys(parsed, serializer)
        value = serializer.deserialize(data)
    else:
        rebuild = getattr(serializer, "deserialize_value", None)
        value = rebuild(data) if callable(rebuild) else data
    if isinstance(value, BaseModel):
        return value
    msg = (
        f"cannot restore the state: its data holds a {type(value).__name__}, not a state "
        "model; pass the 'state' dict that InMemoryStateStore.to_dict() returned"
    )
    raise ValueError(msg)
