"""A saved run, as plain objects and as the dict ``ctx.to_dict()`` returns.

:class:`Snapshot` is what the routing core holds; :class:`SavedRun` adds the run's
identity, trace and stream position. :func:`to_payload` and :func:`from_payload` turn
a SavedRun into JSON-ready data and back, with a serializer for events and state.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stepstream.context.serializers import BaseSerializer
from stepstream.errors import ContextSerdeError
from stepstream.events import Event

__all__ = ["FORMAT", "SavedBatch", "SavedRun", "Snapshot", "from_payload", "to_payload"]

#: The ``format`` key of a saved context, and its version. Version 2 added the fan-out
#: batches (``batches``, ``batch_seq``), the several-parameter steps' partial joins
#: (``slots``) and a queue entry's ``scope`` and ``args``; version 1 is read as before.
#: A queue entry's ``key`` and the top-level ``counts`` (the step invocations' numbers,
#: ``ctx.step_key``) are optional: a context saved without them reads as numbered from 0.
FORMAT = "stepstream.context"
VERSION = 2
_READABLE = (1, 2)


@dataclass(slots=True)
class SavedBatch:
    """An open fan-out batch: the step that returned the list and what its joins hold.

    ``parent`` is the scope the producing invocation ran in; ``buffers`` the events
    each join (by step name) has collected so far; ``released`` the joins that
    already fired (a ``Take(n)`` reached).
    """

    batch_id: str
    producer: str
    parent: tuple[str, ...] = ()
    buffers: dict[str, list[Event]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Snapshot:
    """What a run's routing core holds, as plain objects.

    ``queue`` is the work to do on resuming, in order: the events of the invocations in
    flight when it was taken (they run again from the top), then the steps' backlogs.
    """

    queue: list[tuple[str, Event]] = field(default_factory=list)
    held: list[Event] = field(default_factory=list)
    waiters: list[tuple[str, type[Event], dict[str, Any]]] = field(default_factory=list)
    joins: list[tuple[str | None, tuple[type[Event], ...], list[Event]]] = field(
        default_factory=list
    )
    # Fan-out and fan-in: by position in ``queue``, the (scope, args) of an entry that
    # carries more than its event; the open batches; the next batch number; and the
    # events of several-parameter steps' incomplete joins, by step.
    tickets: dict[int, tuple[tuple[str, ...], tuple[Event, ...] | None]] = field(
        default_factory=dict
    )
    batches: list[SavedBatch] = field(default_factory=list)
    batch_seq: int = 0
    slots: list[tuple[str, list[Event]]] = field(default_factory=list)
    # By position in ``queue``: the invocation number of an entry that was in flight (it
    # re-runs as the same invocation: same ``ctx.step_key``); and the invocations begun
    # per step, by name.
    keys: dict[int, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SavedRun:
    """A run as saved in a context: enough to continue it, in this process or another."""

    workflow: str
    run_id: str | None = None
    is_running: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    stream_seq: int = 0
    routing: Snapshot = field(default_factory=Snapshot)
    trace_id: str | None = None
    span_id: str | None = None
    attempt: int = 1


def to_payload(saved: SavedRun, serializer: BaseSerializer) -> dict[str, Any]:
    """``saved`` as JSON-ready data; events and state go through ``serializer``."""
    routing = saved.routing
    ser = serializer.serialize
    return {
        "format": FORMAT,
        "version": VERSION,
        "workflow": saved.workflow,
        "run_id": saved.run_id,
        "is_running": saved.is_running,
        "state": saved.state,
        "stream_seq": saved.stream_seq,
        "queue": [
            _queue_entry(step, event, routing.tickets.get(n), routing.keys.get(n), ser)
            for n, (step, event) in enumerate(routing.queue)
        ],
        "held": [ser(event) for event in routing.held],
        "waiters": [
            {"waiter_id": wid, "event_type": _name(t), "requirements": ser(req)}
            for wid, t, req in routing.waiters
        ],
        "joins": [
            {
                "step": step,
                "expected": [_name(t) for t in expected],
                "events": [ser(e) for e in events],
            }
            for step, expected, events in routing.joins
        ],
        "batches": [
            {
                "batch_id": b.batch_id,
                "producer": b.producer,
                "parent": list(b.parent),
                "buffers": {step: [ser(e) for e in evs] for step, evs in b.buffers.items()},
                "released": list(b.released),
            }
            for b in routing.batches
        ],
        "batch_seq": routing.batch_seq,
        "slots": [{"step": step, "events": [ser(e) for e in evs]} for step, evs in routing.slots],
        "counts": dict(routing.counts),
        "trace": {"trace_id": saved.trace_id, "span_id": saved.span_id},
        "attempt": saved.attempt,
    }


def _queue_entry(
    step: str,
    event: Event,
    ticket: tuple[tuple[str, ...], tuple[Event, ...] | None] | None,
    key: int | None,
    ser: Any,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"step": step, "event": ser(event)}
    if key is not None:
        entry["key"] = key
    if ticket is not None:
        scope, args = ticket
        entry["scope"] = list(scope)
        if args is not None:
            entry["args"] = [ser(a) for a in args]
    return entry


def from_payload(data: object, serializer: BaseSerializer) -> SavedRun:
    """Read what :func:`to_payload` wrote; ContextSerdeError naming what is wrong."""
    if not isinstance(data, Mapping):
        msg = f"a saved context is a dict (from ctx.to_dict()), got {type(data).__name__}"
        raise ContextSerdeError(msg)
    if data.get("format") != FORMAT or data.get("version") not in _READABLE:
        msg = (
            f"this dict is not a context saved by stepstream (format {data.get('format')!r}, "
            f"version {data.get('version')!r}; expected {FORMAT!r}, {VERSION}); pass what "
            "ctx.to_dict() returned"
        )
        raise ContextSerdeError(msg)
    try:
        return _read(data, serializer)
    except ContextSerdeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ImportError) as exc:
        msg = (
            f"the saved context could not be read ({type(exc).__name__}: {exc}); pass what "
            "ctx.to_dict() returned, with the serializer it was saved with"
        )
        raise ContextSerdeError(msg) from exc


def _read(data: Mapping[str, Any], serializer: BaseSerializer) -> SavedRun:
    trace = data.get("trace") or {}
    queue = data["queue"]
    routing = Snapshot(
        queue=[(str(q["step"]), _event(serializer, q["event"])) for q in queue],
        held=[_event(serializer, e) for e in data["held"]],
        waiters=[
            (
                str(w["waiter_id"]),
                _event_type(serializer, w["event_type"]),
                dict(serializer.deserialize(w["requirements"])),
            )
            for w in data["waiters"]
        ],
        joins=[
            (
                j["step"],
                tuple(_event_type(serializer, t) for t in j["expected"]),
                [_event(serializer, e) for e in j["events"]],
            )
            for j in data["joins"]
        ],
        tickets={
            n: (
                tuple(str(b) for b in q["scope"]),
                tuple(_event(serializer, a) for a in q["args"]) if "args" in q else None,
            )
            for n, q in enumerate(queue)
            if "scope" in q
        },
        batches=[
            SavedBatch(
                batch_id=str(b["batch_id"]),
                producer=str(b["producer"]),
                parent=tuple(str(p) for p in b["parent"]),
                buffers={
                    str(step): [_event(serializer, e) for e in evs]
                    for step, evs in b["buffers"].items()
                },
                released=[str(r) for r in b["released"]],
            )
            for b in data.get("batches", ())
        ],
        batch_seq=int(data.get("batch_seq", 0)),
        slots=[
            (str(s["step"]), [_event(serializer, e) for e in s["events"]])
            for s in data.get("slots", ())
        ],
        keys={n: int(q["key"]) for n, q in enumerate(queue) if q.get("key") is not None},
        counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
    )
    return SavedRun(
        workflow=str(data["workflow"]),
        run_id=data["run_id"],
        is_running=bool(data["is_running"]),
        state=dict(data["state"]),
        stream_seq=int(data["stream_seq"]),
        routing=routing,
        trace_id=trace.get("trace_id"),
        span_id=trace.get("span_id"),
        attempt=int(data["attempt"]),
    )


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _event(serializer: BaseSerializer, text: str) -> Event:
    value = serializer.deserialize(text)
    if not isinstance(value, Event):
        msg = f"the saved context holds {type(value).__name__} where an event belongs"
        raise ContextSerdeError(msg)
    return value


def _event_type(serializer: BaseSerializer, name: str) -> type[Event]:
    resolve = getattr(serializer, "resolve_class", None)
    cls = resolve(name) if resolve is not None else _import(name)
    if not (isinstance(cls, type) and issubclass(cls, Event)):
        msg = f"the saved context names {name!r} as an event type, but it is not an Event class"
        raise ContextSerdeError(msg)
    return cls


def _import(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value
