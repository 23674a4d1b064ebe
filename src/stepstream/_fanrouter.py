"""The routing core of a run whose graph fans out and in: batches, joins and slots.

:class:`FanRouter` extends :class:`~stepstream._routing.Router` (used as is by every
other run, which pays nothing for this). It decides:

- A step returning a list opens a *batch* (:meth:`FanRouter.open_batch`); each element
  is routed in the batch's scope, and what the steps make of it, one event at a time,
  stays in that scope (a :class:`~stepstream._routing.Ticket` on each delivery).
- Each batch counts its *live work*: invocations delivered in its scope and not yet
  finished, plus its open child batches. When that count drops to zero the batch is
  over and releases its joins: each ``list[E]`` step bound to the producer (see
  :mod:`stepstream._levels`) is invoked once with a ``CollectionReleaseEvent`` holding
  what reached it, in arrival order. ``Take(n)`` releases at the n-th arrival instead;
  later arrivals never reach the join. A release is live work of the parent batch.
- A step with several event parameters buffers arrivals per parameter (FIFO per
  type) and is invoked once one event of each is there, in the scope of the last one.

Batch ids are ``<producer>#<n>`` with ``n`` counted per run, so a continued run
numbers its batches as the saved one did.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from stepstream._collect import Collector
from stepstream._routing import QUEUED, Router, Scope, Ticket, Waiter
from stepstream._spec import StepSpec
from stepstream._text import safe_repr
from stepstream.context._snapshot import SavedBatch, Snapshot
from stepstream.events import CollectionReleaseEvent, Event

__all__ = ["Batch", "FanRouter", "Start", "bare_problem", "fan_out_problem"]

#: One invocation to begin: (step index, worker slot or QUEUED, event, origin, ticket).
Start = tuple[int, int, Event, Any, Ticket | None]


class Batch:
    """One list returned by a fan-out step, until its work is done."""

    __slots__ = ("batch_id", "buffers", "live", "origin", "parent", "producer", "released")

    def __init__(self, batch_id: str, producer: int, parent: Scope, origin: Any) -> None:
        self.batch_id = batch_id
        self.producer = producer
        self.parent = parent
        # The producing invocation (the origin of an empty release), None once restored.
        self.origin = origin
        # Invocations in this scope not yet finished, plus open child batches; 1 while
        # the producer is still routing the elements.
        self.live = 1
        self.buffers: dict[int, list[tuple[Event, Any]]] = {}
        self.released: set[int] = set()


class FanRouter(Router[Any, Any]):
    """:class:`Router` plus the batches, joins and slots of a fan-out / fan-in graph."""

    __slots__ = ("_batches", "_seq", "_slots", "dropped")

    def __init__(self, graph: Any, workflow: str, run_id: str) -> None:
        super().__init__(graph, workflow, run_id)
        self._batches: dict[str, Batch] = {}
        self._seq = 0
        self._slots: dict[int, Collector[tuple[Any, Scope]]] = {}
        # (step, event type, why) for each event a join could not take; the run warns.
        self.dropped: list[tuple[str, str, str]] = []

    # -- routing --------------------------------------------------------------------

    def route(
        self, event: Event, origin: Any, target: str | None, hold: bool, scope: Scope
    ) -> Waiter[Any] | list[Start] | None:
        """Decide where ``event``, delivered in ``scope``, goes (see ``Router.deliver``).

        Returns the waiter it answers, or the invocations to begin (a join released
        by ``Take(n)`` or a several-parameter step completed by this event among them).
        """
        indices = self._takers(event, target, hold)
        if not isinstance(indices, tuple):
            return indices
        starts: list[Start] = []
        specs = self.graph.specs
        for i in indices:
            spec = specs[i]
            if spec.fan_in is not None:
                self._to_join(i, event, origin, scope, starts)
            elif spec.slots:
                self._to_slots(i, event, origin, scope, starts)
            else:
                self._start(i, event, origin, Ticket(scope) if scope else None, starts)
        return starts

    def _start(
        self, i: int, event: Event, origin: Any, ticket: Ticket | None, starts: list[Start]
    ) -> None:
        free = self._free[i]
        if free:
            worker = free.pop()
        else:
            backlog = self._backlogs[i]
            if backlog is None:
                backlog = self._backlogs[i] = deque()
            backlog.append((event, origin, ticket))
            worker = QUEUED
        starts.append((i, worker, event, origin, ticket))
        if ticket is not None and ticket.scope:
            batch = self._batches.get(ticket.scope[-1])
            if batch is not None:
                batch.live += 1

    def _to_join(
        self, i: int, event: Event, origin: Any, scope: Scope, starts: list[Start]
    ) -> None:
        name = self.graph.names[i]
        batch = self._batches.get(scope[-1]) if scope else None
        if batch is None:
            self.dropped.append(
                (name, type(event).__name__, "it was not returned inside a fan-out batch")
            )
            return
        if i not in self.graph.bindings[batch.producer]:
            self.dropped.append(
                (
                    name,
                    type(event).__name__,
                    f"its batch {batch.batch_id} does not release step {name!r}",
                )
            )
            return
        if i in batch.released:  # Take(n) fired already: later arrivals never reach it
            return
        buffer = batch.buffers.setdefault(i, [])
        buffer.append((event, origin))
        fan_in = self.graph.specs[i].fan_in
        if fan_in is not None and fan_in.take is not None and len(buffer) >= fan_in.take:
            self._release(batch, i, starts)

    def _to_slots(
        self, i: int, event: Event, origin: Any, scope: Scope, starts: list[Start]
    ) -> None:
        collector = self._slots.get(i)
        if collector is None:
            collector = self._slots[i] = Collector(self.graph.specs[i].slots)
        done = collector.add(event, (origin, scope))
        if done is not None:
            events, carried = done
            origins = tuple(o for o, _ in carried)
            self._start(i, event, origin, Ticket(scope, tuple(events), origins), starts)

    # -- batches --------------------------------------------------------------------

    def open_batch(self, producer: int, parent: Scope, origin: Any) -> Scope:
        """Open a batch for the list step ``producer`` returned in ``parent``; its scope.

        The batch stays open until :meth:`finished` is called with its scope (once the
        elements are routed) and its live work is done.
        """
        batch_id = f"{self.graph.names[producer]}#{self._seq}"
        self._seq += 1
        self._batches[batch_id] = Batch(batch_id, producer, parent, origin)
        if parent:
            outer = self._batches.get(parent[-1])
            if outer is not None:
                outer.live += 1
        return (*parent, batch_id)

    def finished(self, scope: Scope) -> list[Start]:
        """An invocation in ``scope`` is done; the joins released by batches now over."""
        starts: list[Start] = []
        batch = self._batches.get(scope[-1]) if scope else None
        if batch is None:
            return starts
        batch.live -= 1
        self._close(batch, starts)
        return starts

    def _close(self, batch: Batch | None, starts: list[Start]) -> None:
        """Release the joins of ``batch`` if its work is done, then of its parents."""
        while batch is not None and batch.live <= 0:
            del self._batches[batch.batch_id]
            for j in self.graph.bindings[batch.producer]:
                if j not in batch.released:
                    self._release(batch, j, starts)
            outer = self._batches.get(batch.parent[-1]) if batch.parent else None
            if outer is not None:
                outer.live -= 1
            batch = outer

    def _release(self, batch: Batch, join: int, starts: list[Start]) -> None:
        batch.released.add(join)
        collected = batch.buffers.pop(join, [])
        origins = tuple(o for _, o in collected)
        event = CollectionReleaseEvent(
            events=[e for e, _ in collected],
            stream_id=batch.batch_id,
            binding_id=f"{self.graph.names[batch.producer]}->{self.graph.names[join]}",
        )
        origin = origins[-1] if origins else batch.origin
        self._start(join, event, origin, Ticket(batch.parent, None, origins), starts)

    def open_batches(self) -> list[str]:
        """The ids of the batches not over yet, oldest first."""
        return list(self._batches)

    # -- saving and continuing --------------------------------------------------------

    def snapshot(self, in_flight: Any) -> Snapshot:
        """``Router.snapshot`` plus the open batches and the slots' partial joins."""
        snap = super().snapshot(in_flight)
        names = self.graph.names
        snap.batch_seq = self._seq
        for batch in self._batches.values():
            snap.batches.append(
                SavedBatch(
                    batch_id=batch.batch_id,
                    producer=names[batch.producer],
                    parent=batch.parent,
                    buffers={names[j]: [e for e, _ in b] for j, b in batch.buffers.items()},
                    released=[names[j] for j in sorted(batch.released)],
                )
            )
        for i, collector in self._slots.items():
            pending = collector.pending()
            if pending:
                snap.slots.append((names[i], pending))
        return snap

    def resume(self, snap: Snapshot) -> list[tuple[str, Start, int | None]]:
        """Load ``snap`` into this new router; the invocations to begin, by step name.

        Each comes with the invocation number of one that was in flight (else None).

        Work saved for a step the workflow no longer has is left out.
        """
        self.restore(snap, None)  # held events, waits, collect_events joins
        index = self.graph.index
        self._resume_batches(snap)
        for step, events in snap.slots:
            if step in index:
                for event in events:
                    self._to_slots(index[step], event, None, (), [])
        starts: list[tuple[str, Start, int | None]] = []
        for n, (step, event) in enumerate(snap.queue):
            if step not in index:
                continue
            saved_ticket = snap.tickets.get(n)
            ticket = None if saved_ticket is None else Ticket(*saved_ticket)
            one: list[Start] = []
            self._start(index[step], event, None, ticket, one)
            key = snap.keys.get(n)
            starts.extend((step, s, key) for s in one)
        released: list[Start] = []
        for batch in list(self._batches.values()):  # a batch saved with no work left
            if batch.batch_id in self._batches:
                self._close(batch, released)
        starts.extend((self.graph.names[s[0]], s, None) for s in released)
        return starts

    def _resume_batches(self, snap: Snapshot) -> None:
        """Re-open the saved batches; each counts its open child batches as live work."""
        index = self.graph.index
        self._seq = snap.batch_seq
        for saved in snap.batches:
            if saved.producer not in index:  # a step the workflow no longer has
                continue
            batch = Batch(saved.batch_id, index[saved.producer], saved.parent, None)
            batch.live = 0
            batch.buffers = {
                index[s]: [(e, None) for e in evs] for s, evs in saved.buffers.items() if s in index
            }
            batch.released = {index[s] for s in saved.released if s in index}
            self._batches[saved.batch_id] = batch
        for batch in self._batches.values():
            outer = self._batches.get(batch.parent[-1]) if batch.parent else None
            if outer is not None:
                outer.live += 1


def fan_out_problem(spec: StepSpec | None, result: list[Any]) -> str | None:
    """Why the list ``result`` returned by step ``spec`` cannot fan out; None if it can."""
    name = spec.name if spec is not None else "?"
    if spec is None or not spec.fan_out:
        return (
            f"step {name!r} returned a list ({safe_repr(result, 80)}), but its return annotation "
            "declares no list[E]; annotate it `-> list[E]` to fan out, or return one Event"
        )
    for item in result:
        if not isinstance(item, Event):
            return (
                f"step {name!r} returned a list holding {type(item).__name__} "
                f"({safe_repr(item, 80)}); a fan-out returns a list of Event instances"
            )
    return None


def bare_problem(spec: StepSpec | None, event: Event) -> str | None:
    """Why fan-out step ``spec`` may not return ``event`` bare; None if it may.

    A type a step lists only inside ``list[...]`` is returned in a list: a bare one is
    a mistake (``-> list[A] | A`` declares the bare ``A`` too).
    """
    if spec is None or not isinstance(event, spec.fan_out) or isinstance(event, spec.single):
        return None
    kind = type(event).__name__
    return (
        f"step {spec.name!r} returned a bare {kind}, but its return annotation lists "
        f"{kind} only inside list[...]; return [event] (a batch of one), or add {kind} "
        "to the annotation"
    )
