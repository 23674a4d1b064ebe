"""Events: the typed pydantic messages that flow between steps and to the stream.

As in LlamaIndex Workflows, an event has *declared* fields (pydantic fields of its
class, validated) and *dynamic* fields: any other keyword argument, kept in a dict.
Attribute access reads and writes both kinds (``Event(msg="hi").msg``); the dict-like
API (``ev["k"]``, ``ev.get``, ``in``, ``keys``/``values``/``items``, ``len``,
iteration, ``to_dict``) works on the dynamic fields. ``model_dump()`` returns the
declared fields plus ``"_data": {...}`` holding the dynamic ones when there are any.

One superset of LlamaIndex's behaviour (docs/differences.md): ``ev["k"]`` and
``ev.get("k")`` fall back to a declared field ``k`` where LlamaIndex raises KeyError or
returns the default. ``in``, ``keys()``, ``len`` and iteration see dynamic fields only.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, TypeAlias

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    SerializationInfo,
    SerializeAsAny,
)
from pydantic.fields import FieldInfo

from stepstream._text import error_text, safe_text
from stepstream.errors import WorkflowValidationError

__all__ = [
    "CollectionReleaseEvent",
    "DictLikeModel",
    "Event",
    "EventType",
    "EventsDroppedEvent",
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
]

_FLAT_KEY = "stepstream.flat_dynamic_fields"
# Serialisation context that dumps dynamic fields beside the declared ones instead of
# under "_data": the shape of stepstream's telemetry payloads ({"msg": "hi"}).
_FLAT_CONTEXT: Final[Mapping[str, bool]] = MappingProxyType({_FLAT_KEY: True})


def _private(model: BaseModel) -> dict[str, Any]:
    """``model``'s private state (pydantic's ``__pydantic_private__``), created if absent."""
    private = model.__pydantic_private__
    if private is None:
        private = {}
        object.__setattr__(model, "__pydantic_private__", private)
    return private


def _dynamic(model: BaseModel) -> dict[str, Any]:
    """The dict holding ``model``'s dynamic fields (its private ``_data``)."""
    private = model.__pydantic_private__
    if private is not None:
        data: dict[str, Any] | None = private.get("_data")
        if data is not None:
            return data
    data = _private(model)["_data"] = {}
    return data


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _peek(model: BaseModel) -> Mapping[str, Any]:
    """``model``'s dynamic fields for reading (an empty mapping when it has none)."""
    private = model.__pydantic_private__
    data = private.get("_data") if private is not None else None
    return data if data is not None else _EMPTY


def _set_private(model: BaseModel) -> dict[str, Any]:
    """``model``'s private state without empty entries (for equality)."""
    private = model.__pydantic_private__ or {}
    return {k: v for k, v in private.items() if v is not None and v != {}}


def _is_alias(fields: Mapping[str, FieldInfo], key: str) -> bool:
    return any(key in (f.alias, f.validation_alias) for f in fields.values())


class DictLikeModel(BaseModel):
    """A pydantic model that also keeps undeclared keyword fields, dict-style.

    ``__init__`` validates the declared fields, sets private attributes given by name,
    and keeps every other keyword in the dynamic-field dict (``to_dict()``, also the
    private attribute ``_data``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # Private state kept in pydantic's __pydantic_private__ (so copies and pickling
    # include it) without declaring PrivateAttr, and made only when first written:
    # pydantic's initialisation of private attributes (or a model_post_init) would cost
    # more than the rest of building an event, and events are built on the hot path.
    _own_private: ClassVar[frozenset[str]] = frozenset({"_data"})

    def __init__(self, **params: Any) -> None:
        cls = type(self)
        fields = cls.__pydantic_fields__
        if params.keys() <= fields.keys():  # the common case: declared fields only
            # What BaseModel.__init__ does, minus a frame: events are built on the hot path.
            cls.__pydantic_validator__.validate_python(params, self_instance=self)
            return
        declared: dict[str, Any] = {}
        private: dict[str, Any] = {}
        dynamic: dict[str, Any] = {}
        for key, value in params.items():
            if key in fields:
                declared[key] = value
            elif key in cls._own_private or key in cls.__private_attributes__:
                private[key] = value
            elif fields and _is_alias(fields, key):
                declared[key] = value
            else:
                dynamic[key] = value
        super().__init__(**declared)
        for key, value in private.items():
            setattr(self, key, value)
        if dynamic:
            _dynamic(self).update(dynamic)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseModel):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.__dict__ == other.__dict__
            and _set_private(self) == _set_private(other)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as every pydantic model

    @property
    def _data(self) -> dict[str, Any]:
        return _dynamic(self)

    if not TYPE_CHECKING:
        # Hidden from type checkers (as pydantic's own): they keep flagging misspelt
        # declared fields; read dynamic fields with ev["key"] or ev.get("key").

        def __getattr__(self, name: str) -> Any:
            try:
                private = object.__getattribute__(self, "__pydantic_private__")
                return private["_data"][name]
            except (AttributeError, KeyError, TypeError):
                pass  # not a dynamic field, or not initialised yet (copy, unpickling)
            return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        if name in cls._own_private:
            _private(self)[name] = value
        elif (
            name in cls.__pydantic_fields__
            or name in cls.__private_attributes__
            or (name.startswith("__") and name.endswith("__"))
        ):
            super().__setattr__(name, value)
        else:
            _dynamic(self)[name] = value

    # -- the dict-like API: dynamic fields --------------------------------------------

    def __getitem__(self, key: str) -> Any:
        """Return the dynamic field ``key`` (else a declared field); KeyError if neither."""
        data = _peek(self)
        if key in data:
            return data[key]
        if key in type(self).__pydantic_fields__:
            return getattr(self, key)
        msg = f"{type(self).__name__} has no field {key!r}"
        raise KeyError(msg)

    def __setitem__(self, key: str, value: Any) -> None:
        """Set the dynamic field ``key``."""
        _dynamic(self)[key] = value

    def __contains__(self, key: object) -> bool:
        """Tell whether ``key`` is a dynamic field (as ``key in ev.keys()``)."""
        return key in _peek(self)

    def get(self, key: str, default: Any = None) -> Any:
        """Return ``ev[key]`` (a dynamic, else a declared field), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> KeysView[str]:
        """The names of the dynamic fields."""
        return _peek(self).keys()

    def values(self) -> ValuesView[Any]:
        """The values of the dynamic fields."""
        return _peek(self).values()

    def items(self) -> ItemsView[str, Any]:
        """The (name, value) pairs of the dynamic fields."""
        return _peek(self).items()

    def __len__(self) -> int:
        return len(_peek(self))

    def __iter__(self) -> Iterator[str]:  # type: ignore[override] # the dynamic field names
        return iter(_peek(self))

    def __bool__(self) -> bool:
        return True  # an event without dynamic fields is still an event

    def to_dict(self) -> dict[str, Any]:
        """The dynamic fields: the model's own dict, not a copy."""
        return _dynamic(self)

    # -- serialisation ------------------------------------------------------------------

    def _dumped_private(self) -> dict[str, Any]:
        """Private state a subclass adds to its dump (after the declared fields)."""
        return {}

    def _dump_extra(self, context: object) -> dict[str, Any]:
        """What a dump adds to the declared fields: private state, dynamic fields."""
        extra = self._dumped_private()
        data = _peek(self)
        if data:
            if isinstance(context, Mapping) and context.get(_FLAT_KEY):
                extra.update(data)
            else:
                extra["_data"] = dict(data)
        return extra

    # Dumps add the extra keys in Python only when there are any: a model_serializer
    # would put every dump of every event through Python (the per-event telemetry path).
    # Events nested in another model's fields dump their declared fields only.

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """Dump the declared fields, then the private state and dynamic fields (``_data``)."""
        dumped = super().model_dump(**kwargs)
        if self.__pydantic_private__ is None:
            return dumped
        extra = self._dump_extra(kwargs.get("context"))
        if extra:
            if kwargs.get("mode") == "json":
                extra = pydantic_core.to_jsonable_python(
                    extra, fallback=kwargs.get("fallback"), serialize_unknown=True
                )
            dumped.update(extra)
        return dumped

    def model_dump_json(self, **kwargs: Any) -> str:
        """``model_dump`` as JSON (pydantic's own encoder, with its options)."""
        # No private state at all (the common case): nothing to add, no Python work.
        if self.__pydantic_private__ is None:
            return super().model_dump_json(**kwargs)
        extra = self._dump_extra(kwargs.get("context"))
        if not extra:
            return super().model_dump_json(**kwargs)
        indent = kwargs.pop("indent", None)
        fallback = kwargs.get("fallback")
        dumped = super().model_dump(mode="json", **kwargs)
        dumped.update(
            pydantic_core.to_jsonable_python(extra, fallback=fallback, serialize_unknown=True)
        )
        # NaN and infinity as null, as pydantic's encoder writes declared fields (its
        # ser_json_inf_nan default): the result stays JSON.
        return pydantic_core.to_json(
            dumped, indent=indent, fallback=fallback, inf_nan_mode="null"
        ).decode()


class Event(DictLikeModel):
    """Base of every event.

    Subclasses declare typed fields. Any other keyword argument is a dynamic field
    (``Event(msg="hi").msg``, ``ev["msg"]``, ``"msg" in ev``).

    ``class Login(Event, telemetry_payload=False)`` keeps the payload of ``Login`` events
    (and of its subclasses, unless they say ``telemetry_payload=True``) out of every
    telemetry signal: span events and log lines record their type and seq only.
    """

    # Read once per streamed event by the telemetry sink: a plain class attribute.
    _telemetry_payload: ClassVar[bool] = True

    def __init_subclass__(cls, *, telemetry_payload: bool | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        given: object = telemetry_payload  # checked: a class statement is not type-checked
        if given is None:
            return
        if not isinstance(given, bool):
            msg = (
                f"class {cls.__name__}(Event, telemetry_payload=...) must be True or False, "
                f"got {given!r}"
            )
            raise WorkflowValidationError(msg)
        cls._telemetry_payload = given


EventType: TypeAlias = type[Event]
"""An event class."""


class StartEvent(Event):
    """Starts a run; ``wf.run(**kwargs)`` puts the keyword arguments on it as fields."""


class StopEvent(Event):
    """Ends a run; ``await handler`` returns ``result`` (or the event, for subclasses).

    ``result`` is not a declared field: it is kept privately, dumped as ``"result"``
    when not None, and read through ``_get_result()``, which subclasses may override.
    """

    _own_private: ClassVar[frozenset[str]] = frozenset({"_data", "_result"})

    def __init__(self, result: Any = None, **params: Any) -> None:
        super().__init__(**params)
        if result is not None:
            _private(self)["_result"] = result

    @property
    def _result(self) -> Any:
        """The ``result=`` given (what ``_get_result()`` returns by default)."""
        private = self.__pydantic_private__
        return private.get("_result") if private is not None else None

    def _get_result(self) -> Any:
        """What ``result`` returns (the ``result=`` given, by default)."""
        return self._result

    @property
    def result(self) -> Any:
        """The run's result (``StopEvent(result=...)``)."""
        return self._get_result()

    def _dumped_private(self) -> dict[str, Any]:
        return {} if self._result is None else {"result": self._result}

    def __str__(self) -> str:
        return str(self._result)

    def __repr__(self) -> str:
        # Declared fields, the result, then the dynamic fields: each once (the dump
        # carries the dynamic ones again under ``_data``).
        fields = self.model_dump()
        fields.pop("_data", None)
        fields.update(_peek(self))
        inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"{type(self).__name__}({inner})"


class InputRequiredEvent(Event):
    """Asks the caller for input; it always appears in the stream."""


class HumanResponseEvent(Event):
    """The caller's answer, sent with ``handler.ctx.send_event(...)``."""


# -- exceptions as event fields ---------------------------------------------------------


class UnreconstructedException(Exception):  # noqa: N818 - LlamaIndex Workflows' name
    """Stands for a serialised exception whose class could not be rebuilt.

    ``str()`` is the original message; ``original_type`` its class's qualified name.
    """

    def __init__(self, message: str, *, original_type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.original_type = original_type

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(original_type={self.original_type!r}, {self.message!r})"


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _serialize_exception(exc: BaseException, info: SerializationInfo) -> dict[str, str]:
    # Dumping an event never fails because of the exception it holds: an unprintable
    # one is described, and JSON gets its text with lone surrogates escaped.
    kind = _qualified_name(type(exc))
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - str() raising: a placeholder naming the failure
        message = error_text(exc)
    if info.mode_is_json():
        kind, message = safe_text(kind), safe_text(message)
    return {"exception_type": kind, "exception_message": message}


def _resolve(qualified: str) -> object:
    """The object named ``module.Qual.Name``, from builtins or an imported module."""
    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        found: object = module
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    return getattr(builtins, qualified)


def _deserialize_exception(value: Any) -> BaseException:
    if isinstance(value, BaseException):
        return value
    if not (
        isinstance(value, Mapping)
        and isinstance(value.get("exception_type"), str)
        and "exception_message" in value
    ):
        msg = 'expected an exception or {"exception_type": ..., "exception_message": ...}'
        raise ValueError(msg)
    message = str(value["exception_message"])
    qualified: str = value["exception_type"]
    try:
        cls = _resolve(qualified)
        rebuilt = cls(message) if isinstance(cls, type) and issubclass(cls, Exception) else None
    except Exception:  # noqa: BLE001 - whatever does not rebuild becomes the stand-in below
        rebuilt = None
    if rebuilt is None:
        return UnreconstructedException(message, original_type=qualified)
    return rebuilt


SerializableException: TypeAlias = Annotated[
    BaseException,
    PlainValidator(_deserialize_exception),
    PlainSerializer(_serialize_exception, return_type=dict[str, str]),
]
"""An exception field: the live exception in process, dumped as
``{"exception_type": "<module>.<qualname>", "exception_message": str(exc)}``.

Validating that dict rebuilds ``cls(message)`` when the class is a builtin or in a module
already imported, else an :class:`UnreconstructedException`.
"""


# -- terminal events ----------------------------------------------------------------------


class WorkflowFailedEvent(StopEvent):
    """Terminal stream event of a run that failed: which step raised what.

    ``attempts`` and ``elapsed_seconds`` (since the first attempt) are None when the
    failure is not a step's (an internal error of the runtime). ``step``,
    ``exception_type`` (the class name) and ``message`` read the same as properties.
    """

    step_name: str
    exception: SerializableException
    attempts: int | None = None
    elapsed_seconds: float | None = None

    @property
    def step(self) -> str:
        """The failed step's name (``step_name``)."""
        return self.step_name

    @property
    def exception_type(self) -> str:
        """The exception's class name, e.g. ``"ValueError"``."""
        return type(self.exception).__name__

    @property
    def message(self) -> str:
        """The exception's message, ``str(exception)``."""
        return str(self.exception)


class WorkflowTimedOutEvent(StopEvent):
    """Terminal stream event of a run that timed out (the run's or a step's timeout)."""

    timeout: float | None
    active_steps: list[str]
    message: str = "the run timed out"


class WorkflowCancelledEvent(StopEvent):
    """Terminal stream event of a run that was cancelled."""

    message: str = "the run was cancelled"


# -- error handling and internal dispatch (defined for compatibility; not emitted) ---------


class StepFailedEvent(Event):
    """A step failed after its retries (what a ``@catch_error`` handler receives)."""

    step_name: str
    input_event: SerializeAsAny[Event]
    exception: SerializableException
    attempts: int
    elapsed_seconds: float
    failed_at: datetime


#: An event field that dumps as the event's own class (not as the declared base).
SerializableEvent: TypeAlias = SerializeAsAny[Event]


class IdleReleasedEvent(StopEvent):
    """LlamaIndex's result of a run released while idle by a durable runtime (not streamed)."""


class CollectionReleaseEvent(Event):
    """The events a fan-in released together (LlamaIndex's ``list[E]`` steps)."""

    events: list[SerializableEvent] = []
    stream_id: str = ""
    binding_id: str = ""


class EventsDroppedEvent(Event):
    """Stands in the stream for unread events dropped by ``Workflow(stream_limit=...)``.

    With ``stream_overflow="drop_oldest"``, a run whose caller does not keep up drops
    its oldest unread events; this marker takes their place, once per gap, saying how
    many were dropped. Telemetry still records every event.
    """

    dropped: int
    stream_limit: int


class InternalDispatchEvent(Event):
    """Base of the runtime's internal events, hidden from the stream by default."""


class StepState(Enum):
    """What a step's worker is doing."""

    PREPARING = "preparing"
    RUNNING = "running"
    NOT_RUNNING = "not_running"


class StepStateChanged(InternalDispatchEvent):
    """A step's worker changed state (queued, started, finished)."""

    name: str
    step_state: StepState
    worker_id: str
    input_event_name: str
    output_event_name: str | None = None


class WorkflowIdleEvent(InternalDispatchEvent):
    """The run has no queued or running work and at least one step waits for an event."""


class UnhandledEvent(InternalDispatchEvent):
    """An event matched no waiter and no step (stepstream holds a caller's for a waiter)."""

    event_type: str
    qualified_name: str
    step_name: str | None = None
    idle: bool
