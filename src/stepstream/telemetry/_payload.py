"""Event payloads for span events and log lines: fast when they can be, never failing.

An ordinary event is dumped by pydantic's JSON encoder in one call (the hot path, as
before). Only when that raises does the slow path run: a payload whose only problem
is a lone surrogate is dumped again with the surrogates escaped; anything else (a
cycle, invalid UTF-8 bytes, very deep nesting, a serializer or ``__repr__`` that
raises) becomes a placeholder naming the reason, a JSON string
``"<unserialisable: Type: message>"``. The event's type and seq are recorded as usual.

A run with a ``redact`` hook (``Workflow(redact=...)``, ``configure_telemetry(redact=...)``)
uses :func:`redacting_encoder` instead; a class declared with
``telemetry_payload=False`` records no payload at all (None).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import pydantic_core

from stepstream._instrument import Redactor
from stepstream._text import error_text, safe_repr, safe_text, type_name
from stepstream.events import _FLAT_CONTEXT, Event
from stepstream.telemetry import attributes as attrs

__all__ = ["Encoder", "encode_payload", "redacting_encoder", "safe_json"]

#: Encodes an event's payload as JSON text; None when its class keeps it out of telemetry.
Encoder = Callable[[Event], str | None]

# Nesting deeper than this is not walked on the slow path (the result is a placeholder).
_MAX_DEPTH = 200
# The reason in a placeholder is cut to this many characters.
_REASON_LIMIT = 200


def encode_payload(event: Event) -> str | None:
    """Return ``event`` as JSON (never raising); None for a ``telemetry_payload=False`` class.

    Dynamic fields appear beside the declared ones (``{"msg": "hi"}``), not under the
    ``"_data"`` key of ``model_dump()``; values pydantic cannot serialise are rendered
    by ``repr``.
    """
    if not type(event)._telemetry_payload:  # noqa: SLF001 - the class's own opt-out
        return None
    try:
        return event.model_dump_json(fallback=repr, warnings=False, context=_FLAT_CONTEXT)
    except Exception:  # noqa: BLE001 - the slow path: telemetry must record it anyway
        return _salvage(event)


def redacting_encoder(redactors: Sequence[Redactor]) -> Encoder:
    """An encoder that passes each payload (a fresh dict) through ``redactors`` in turn.

    A hook returning None records type and seq only; a hook that raises records the
    placeholder ``"<redact failed: Type>"`` (its message might hold what it was
    removing, so it is left out), never the payload it failed on.
    """
    hooks = tuple(redactors)

    def encode(event: Event) -> str | None:
        if not type(event)._telemetry_payload:  # noqa: SLF001 - the class's own opt-out
            return None
        try:
            payload: Mapping[str, Any] = _data(event)
        except Exception as exc:  # noqa: BLE001 - named by its type only: redaction is on
            return _placeholder(attrs.UNSERIALISABLE_MARKER, type_name(exc))
        for hook in hooks:
            try:
                redacted = hook(event, dict(payload))
            except Exception as exc:  # noqa: BLE001 - a broken hook must not leak the payload
                return _placeholder(attrs.REDACT_FAILED_MARKER, type_name(exc))
            if redacted is None:
                return None
            payload = redacted
        return safe_json(payload)

    return encode


def safe_json(value: Any) -> str:
    """``value`` as compact JSON text that every encoder downstream accepts; never raises.

    orjson first; on failure (lone surrogates, integers beyond 64 bits, keys that are
    not strings, objects it does not know) the value is cleaned and dumped again.
    """
    try:
        return orjson.dumps(value, default=safe_repr).decode()
    except Exception:  # noqa: BLE001, S110 - the slow path follows
        pass
    try:
        cleaned = _clean(value, lenient=True)
        return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001 - e.g. nesting too deep: say so instead
        return _placeholder(attrs.UNSERIALISABLE_MARKER, _reason(exc))


def _dump(event: Event, mode: str) -> dict[str, Any]:
    """The payload as Python data (JSON-ready in ``json`` mode; strings not yet made safe)."""
    return event.model_dump(mode=mode, fallback=repr, warnings=False, context=_FLAT_CONTEXT)


def _data(event: Event) -> dict[str, Any]:
    """The payload as JSON-ready data; raises where the fast path's encoder would.

    The ``python`` mode dump, cleaned, is the second try: pydantic's ``json`` mode refuses
    lone surrogates in dict keys, not only its JSON encoder. When both fail, the second
    error is raised: with the surrogates out of the way, it names what is left.
    """
    try:
        return _dump(event, "json")
    except Exception:  # noqa: BLE001 - the second try raises if this one was right to
        cleaned: dict[str, Any] = _clean(_dump(event, "python"))
        return cleaned


def _salvage(event: Event) -> str:
    """The payload of an event pydantic's encoder refused: escaped, or a placeholder."""
    try:
        cleaned = _clean(_data(event))
        return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001 - named: what is left once surrogates are escaped
        return _placeholder(attrs.UNSERIALISABLE_MARKER, _reason(exc))


def _clean(value: Any, *, lenient: bool = False, _path: tuple[int, ...] = ()) -> Any:  # noqa: PLR0911
    """``value`` as JSON-ready data with every string (and key) made safe.

    A value the fast path could not encode either (a cycle, nesting too deep, bytes
    that are not UTF-8, a ``repr`` that raises) raises, unless ``lenient``: then it is
    replaced by its repr. ``_path`` holds the containers above ``value``.
    """
    if isinstance(value, str):
        return safe_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping | list | tuple):
        return _clean_container(value, lenient, _path)
    # A value the python mode dump kept as it is (a datetime, a set, bytes...): as the
    # fast path would encode it, raising where it would (invalid UTF-8 bytes).
    try:
        converted = pydantic_core.to_jsonable_python(value, fallback=repr)
    except Exception:
        if not lenient:
            raise
        return safe_repr(value)
    if converted is value:
        return safe_repr(value)
    return _clean(converted, lenient=lenient, _path=_path)


def _clean_container(value: Any, lenient: bool, above: tuple[int, ...]) -> Any:
    if id(value) in above:
        msg = "Circular reference detected"
        raise ValueError(msg)
    if len(above) >= _MAX_DEPTH:
        msg = f"nesting deeper than {_MAX_DEPTH} levels"
        raise ValueError(msg)
    path = (*above, id(value))
    if isinstance(value, Mapping):
        return {_key(k): _clean(v, lenient=lenient, _path=path) for k, v in value.items()}
    return [_clean(v, lenient=lenient, _path=path) for v in value]


def _key(key: object) -> str:
    return safe_text(key) if isinstance(key, str) else safe_repr(key)


def _reason(error: BaseException) -> str:
    text = f"{type_name(error)}: {error_text(error)}"
    if len(text) > _REASON_LIMIT:
        text = text[: _REASON_LIMIT - 3] + "..."
    return text


def _placeholder(marker: str, reason: str) -> str:
    return json.dumps(marker.format(reason=reason), ensure_ascii=False)
