"""A workflow class's compiled step graph: specs, routing table, start event type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepstream.events import Event, StartEvent
from stepstream.step import StepSpec

__all__ = ["Graph"]


class Graph:
    """Immutable after construction apart from the routing cache (filled on demand)."""

    def __init__(self, specs: Sequence[StepSpec]) -> None:
        self.specs: tuple[StepSpec, ...] = tuple(specs)
        self.names: tuple[str, ...] = tuple(s.name for s in self.specs)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self._routes: dict[type[Event], tuple[int, ...]] = {}
        starts = [t for s in self.specs for t in s.accepts if issubclass(t, StartEvent)]
        self.start_event_type: type[StartEvent] = starts[0] if starts else StartEvent
        states = [s.state_type for s in self.specs if s.state_type is not None]
        self.state_type: type[Any] | None = states[0] if states else None

    def spec(self, name: str) -> StepSpec | None:
        """Return the spec of step ``name``, or None."""
        i = self.index.get(name)
        return None if i is None else self.specs[i]

    def route(self, event_type: type[Event]) -> tuple[int, ...]:
        """Indices of the steps that accept events of ``event_type`` (cached)."""
        try:
            return self._routes[event_type]
        except KeyError:
            found = tuple(i for i, s in enumerate(self.specs) if s.accepts_type(event_type))
            self._routes[event_type] = found
            return found
