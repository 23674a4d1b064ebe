"""The join behind ``Context.collect_events``: amortised O(1) per arriving event.

Each (step, expected types) pair has one collector. It keeps a queue per expected
type and counts how many types have enough events, so an arriving event costs one
append and one comparison; building the result costs O(len(expected)), once per
completed join.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Generic, TypeVar

from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event

__all__ = ["Collector"]

OriginT = TypeVar("OriginT")


class Collector(Generic[OriginT]):
    """Buffers events until one of each expected type (with multiplicity) is present."""

    __slots__ = ("_expected", "_last", "_need", "_queues", "_ready", "_slot_of")

    def __init__(self, expected: Sequence[type[Event]]) -> None:
        self._expected = tuple(expected)
        self._last: Sequence[type[Event]] = expected
        self._need: dict[type[Event], int] = dict(Counter(self._expected))
        self._queues: dict[type[Event], deque[tuple[Event, OriginT]]] = {
            t: deque() for t in self._need
        }
        self._slot_of: dict[type[Event], type[Event] | None] = {}
        self._ready = 0

    def serves(self, expected: Sequence[type[Event]]) -> bool:
        """Tell whether this collector joins ``expected``.

        O(1) when the caller passes the same list object again; otherwise one O(len)
        comparison, no more than building the list cost the caller.
        """
        if expected is self._last:
            return True
        if tuple(expected) == self._expected:
            self._last = expected
            return True
        return False

    def add(self, event: Event, origin: OriginT) -> tuple[list[Event], list[OriginT]] | None:
        """Buffer ``event``; return the events in expected order once all have arrived."""
        slot = self._slot(type(event))
        queue = self._queues[slot]
        queue.append((event, origin))
        if len(queue) == self._need[slot]:
            self._ready += 1
            if self._ready == len(self._need):
                return self._take()
        return None

    def _slot(self, event_type: type[Event]) -> type[Event]:
        try:
            slot = self._slot_of[event_type]
        except KeyError:
            # The most specific expected type, nearest in the event type's MRO: with
            # [Base, Sub] expected, a Sub fills the Sub slot, not Base's (then Sub's never would).
            mro = event_type.__mro__
            slot = min(
                (t for t in self._need if issubclass(event_type, t)),
                key=lambda t: mro.index(t) if t in mro else len(mro),
                default=None,
            )
            self._slot_of[event_type] = slot
        if slot is None:
            names = ", ".join(t.__name__ for t in self._expected)
            msg = (
                f"collect_events got {event_type.__name__}, which is none of the expected "
                f"types [{names}]; pass only events of the expected types"
            )
            raise WorkflowRuntimeError(msg)
        return slot

    def _take(self) -> tuple[list[Event], list[OriginT]]:
        events: list[Event] = []
        origins: list[OriginT] = []
        for t in self._expected:
            event, origin = self._queues[t].popleft()
            events.append(event)
            origins.append(origin)
        self._ready = sum(1 for t, n in self._need.items() if len(self._queues[t]) >= n)
        return events, origins

    def pending(self) -> list[Event]:
        """The buffered events of an incomplete join, in arrival order within each type."""
        return [event for t in self._need for event, _ in self._queues[t]]

    @property
    def expected(self) -> tuple[type[Event], ...]:
        """The expected event types, in the caller's order."""
        return self._expected
