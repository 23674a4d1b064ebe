"""Events on the wire: the peer's envelope, encoded once per event, and parsed with clear errors.

An event travels as ``{"value": {...}, "type": "Name", "types": [bases], "qualified_name":
"module.Name"}`` (llama-agents-server's ``EventEnvelopeWithMetadata``). The server encodes
each streamed event once, into a JSON head and its qualified name, so that every frame a
subscriber gets (SSE or NDJSON, with or without ``qualified_name``) is a concatenation of
bytes already made.

Incoming events (a start event, a human's answer) are looked up by name among the
workflow's own event classes, never imported from a name a client sent, and validated by
pydantic; what does not fit is a :class:`BadRequest` naming the field.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from stepstream.events import Event

__all__ = [
    "NDJSON",
    "NDJSON_UNQUALIFIED",
    "SSE",
    "SSE_UNQUALIFIED",
    "BadRequest",
    "EncodedEvent",
    "encode_event",
    "envelope_dict",
    "event_bases",
    "frame_form",
    "parse_event",
    "qualified_name",
]


class BadRequest(Exception):  # noqa: N818 - an HTTP answer (400 and others), not a failure
    """A request the server refuses; ``detail`` says which field and why (HTTP ``status``)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def qualified_name(cls: type[Event]) -> str:
    """``module.ClassName`` of an event class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def event_bases(cls: type[Event]) -> list[str] | None:
    """Names of the Event classes ``cls`` derives from, nearest first, ``Event`` excluded."""
    names = [c.__name__ for c in cls.__mro__[1:] if issubclass(c, Event) and c is not Event]
    return names or None


def _value(event: Event) -> Any:
    """The event's JSON-ready fields; a placeholder naming the reason when it cannot be dumped."""
    try:
        return event.model_dump(mode="json", fallback=repr)
    except Exception as exc:  # noqa: BLE001 - a stream never stops on one odd payload
        return {"unencodable": f"{type(exc).__name__}: {exc}"}


#: The forms of a streamed frame (:meth:`EncodedEvent.frame`): SSE or NDJSON, each with
#: ``qualified_name`` or with it null (``include_qualified_name=false``).
SSE, SSE_UNQUALIFIED, NDJSON, NDJSON_UNQUALIFIED = range(4)


def frame_form(sse: bool, qualified_name: bool) -> int:
    """The frame form a subscriber asked for."""
    return (0 if sse else 2) + (0 if qualified_name else 1)


class EncodedEvent:
    """One streamed event, encoded once: its seq, type and the parts of its envelope JSON.

    While its run goes on, its frames are made on first use, once per form, and shared by
    every subscriber that reads the event in that form (a hundred subscribers cost one
    encoding); the run's log releases them when the run ends (:meth:`release_frames`).
    """

    __slots__ = ("_frames", "head", "qualified", "seq", "type")

    def __init__(self, seq: int, type_name: str, head: bytes, qualified: bytes) -> None:
        self.seq = seq
        self.type = type_name
        self.head = head  # b'{"value":...,"type":...,"types":...,"qualified_name":'
        self.qualified = qualified  # b'"module.Name"'
        self._frames: list[bytes | None] | None = None  # by form, once a subscriber reads

    def envelope(self, with_qualified_name: bool = True) -> bytes:
        """The envelope as JSON (``qualified_name`` null when not wanted, as the peer does)."""
        return self.head + (self.qualified if with_qualified_name else b"null") + b"}"

    def render(self, form: int) -> bytes:
        """The event's frame in ``form`` (:data:`SSE`, ...), made anew.

        SSE: ``id:`` (the seq), ``event:`` (the type) and ``data:`` lines; NDJSON: one line,
        ``seq`` then the envelope's keys.
        """
        envelope = self.envelope(form in {SSE, NDJSON})
        if form <= SSE_UNQUALIFIED:
            return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.seq, self.type.encode(), envelope)
        return b'{"seq":%d,%s\n' % (self.seq, envelope[1:])

    def frame(self, form: int) -> bytes:
        """The event's frame in ``form``, made on the first call and kept for the next ones."""
        frames = self._frames
        if frames is None:
            frames = self._frames = [None, None, None, None]
        made = frames[form]
        if made is None:
            made = frames[form] = self.render(form)
        return made

    def release_frames(self) -> None:
        """Forget the frames made so far (the envelope's parts stay)."""
        self._frames = None


#: What an event class contributes to every envelope (its bases, its qualified name as
#: JSON), worked out once per class: the stream of a run repeats a few classes.
_CLASS_PARTS: weakref.WeakKeyDictionary[type[Event], tuple[list[str] | None, bytes]] = (
    weakref.WeakKeyDictionary()
)


def _class_parts(cls: type[Event]) -> tuple[list[str] | None, bytes]:
    parts = _CLASS_PARTS.get(cls)
    if parts is None:
        parts = _CLASS_PARTS[cls] = (event_bases(cls), orjson.dumps(qualified_name(cls)))
    return parts


def encode_event(seq: int, event: Event) -> EncodedEvent:
    """Encode ``event`` (stream position ``seq``) once for every subscriber."""
    cls = type(event)
    bases, qualified = _class_parts(cls)
    body = {"value": _value(event), "type": cls.__name__, "types": bases}
    try:
        raw = orjson.dumps(body, default=repr)
    except TypeError as exc:  # e.g. a dict with non-string keys from a custom serializer
        body["value"] = {"unencodable": f"{type(exc).__name__}: {exc}"}
        raw = orjson.dumps(body)
    head = raw[:-1] + b',"qualified_name":'
    return EncodedEvent(seq, cls.__name__, head, qualified)


def envelope_dict(event: Event) -> dict[str, Any]:
    """The envelope of ``event`` as a dict (a handler's ``result``)."""
    encoded = encode_event(0, event)
    value: dict[str, Any] = orjson.loads(encoded.envelope())
    return value


# -- parsing --------------------------------------------------------------------------------


def _is_envelope(data: Mapping[str, Any]) -> bool:
    # The peer's rule: a bare dict of fields unless it has a value, or a type and a name.
    return "value" in data or ("type" in data and "qualified_name" in data) or "data" in data


def _errors(exc: ValidationError, where: str, cls: type[Event]) -> str:
    problems = []
    for err in exc.errors()[:10]:
        path = ".".join(str(part) for part in (where, *err["loc"]))
        problems.append(f"{path}: {err['msg']}")
    more = len(exc.errors()) - 10
    tail = f" (and {more} more)" if more > 0 else ""
    return f"{'; '.join(problems)}{tail} (validating {cls.__name__})"


def _lookup(
    envelope: Mapping[str, Any], registry: Mapping[str, type[Event]], where: str
) -> type[Event]:
    type_name = envelope.get("type")
    if type_name is not None:
        if not isinstance(type_name, str):
            msg = f"{where}.type: must be an event class name (a string), got {type_name!r}"
            raise BadRequest(msg)
        cls = registry.get(type_name)
        if cls is None:
            known = ", ".join(sorted(registry)) or "none"
            msg = f"{where}.type: unknown event type {type_name!r}; this workflow takes {known}"
            raise BadRequest(msg)
        return cls
    name = envelope.get("qualified_name")
    if isinstance(name, str):
        for cls in registry.values():
            if qualified_name(cls) == name:
                return cls
        known = ", ".join(sorted(qualified_name(c) for c in registry.values())) or "none"
        msg = f"{where}.qualified_name: unknown event {name!r}; this workflow takes {known}"
        raise BadRequest(msg)
    msg = (
        f'{where}: name the event class with "type" (e.g. {{"type": "MyEvent", "value": {{...}}}})'
    )
    raise BadRequest(msg)


def parse_event(
    data: Any,
    registry: Mapping[str, type[Event]],
    *,
    where: str,
    bare_as: type[Event] | None = None,
) -> Event:
    """Build the event a client sent as ``data`` (an envelope, or a JSON string of one).

    ``registry`` maps the class names the workflow accepts to their classes. With
    ``bare_as``, a dict that is not an envelope is the fields of that class (the start
    event of ``/run``). Raises BadRequest naming the field at fault (``where`` first).
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            msg = f"{where}: a string must hold a JSON object (an event envelope)"
            raise BadRequest(msg) from None
    if not isinstance(data, dict):
        msg = (
            f'{where}: must be a JSON object such as {{"type": "MyEvent", "value": {{...}}}}, '
            f"got {type(data).__name__}"
        )
        raise BadRequest(msg)
    value: Any
    if bare_as is not None and not _is_envelope(data):
        cls, value, value_where = bare_as, data, where
    else:
        cls = _lookup(data, registry, where)
        value = data.get("value", data.get("data")) or {}
        value_where = f"{where}.value"
    if not isinstance(value, dict):
        kind = type(value).__name__
        msg = f"{value_where}: must be a JSON object of the event's fields, got {kind}"
        raise BadRequest(msg)
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        raise BadRequest(_errors(exc, value_where, cls)) from None
    except (TypeError, ValueError) as exc:
        msg = f"{value_where}: {exc} (validating {cls.__name__})"
        raise BadRequest(msg) from None
