"""``Context``: what a step (and the caller, through ``handler.ctx``) can do in a run.

The Context is a facade: everything but the store is done by the run, reached through
the small :class:`RunPort` interface, so this module does not import the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event

__all__ = ["Context", "RunPort", "Store"]

StateT = TypeVar("StateT")
EventT = TypeVar("EventT", bound=Event)
_MISSING: Any = object()


class Store(Generic[StateT]):
    """Key-value store and typed state shared by the steps of one run."""

    def __init__(self, state_type: type[StateT] | None) -> None:
        self._data: dict[str, Any] = {}
        self._state: StateT | None = state_type() if state_type is not None else None
        self._lock: asyncio.Lock | None = None  # created by the first edit_state()

    async def get(self, key: str, default: Any = _MISSING) -> Any:
        """Return the value stored under ``key``, or ``default`` when given and absent."""
        try:
            return self._data[key]
        except KeyError:
            if default is not _MISSING:
                return default
            known = ", ".join(map(repr, sorted(self._data))) or "none"
            msg = (
                f"the run's store has no key {key!r} (keys: {known}); set it first with "
                f"`await ctx.store.set({key!r}, value)` or pass `default=`"
            )
            raise WorkflowRuntimeError(msg) from None

    async def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        self._data[key] = value

    async def get_state(self) -> StateT:
        """Return the run's typed state (declared with ``ctx: Context[MyState]``)."""
        return self._require_state()

    @asynccontextmanager
    async def edit_state(self) -> AsyncIterator[StateT]:
        """Lock the typed state for a read-modify-write; other editors wait."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield self._require_state()

    def _require_state(self) -> StateT:
        if self._state is None:
            msg = (
                "this workflow has no typed state; annotate a step's context parameter "
                "with the state model, e.g. `ctx: Context[MyState]`"
            )
            raise WorkflowRuntimeError(msg)
        return self._state


class RunPort(Protocol):
    """What a Context asks of its run (implemented by the runtime's ``Run``)."""

    def stream_write(self, event: Event) -> None:
        """Append ``event`` to the run's stream (from any thread)."""
        ...

    def send(self, event: Event, target: str | None) -> None:
        """Route ``event`` (to ``target`` only, when given); raise if it cannot arrive."""
        ...

    def collect(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Add ``event`` to the calling step's join of ``expected``; the events once complete."""
        ...

    async def wait_for(
        self,
        event_type: type[Event],
        waiter_event: Event | None,
        requirements: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> Event:
        """Suspend until an ``event_type`` event meeting ``requirements`` arrives."""
        ...


class Context(Generic[StateT]):
    """The run as a step sees it: send, collect, wait for and stream events; a store.

    One Context exists per run; ``handler.ctx`` is the same object, so the caller can
    send events (a human's answer) into the run.
    """

    __slots__ = ("_run", "store")

    def __init__(self, run: RunPort, state_type: type[StateT] | None) -> None:
        self._run = run
        self.store: Store[StateT] = Store(state_type)

    def write_event_to_stream(self, ev: Event) -> None:
        """Append ``ev`` to the run's stream, read by ``handler.stream_events()``."""
        self._run.stream_write(ev)

    def send_event(self, ev: Event, step: str | None = None) -> None:
        """Route ``ev`` to the steps that accept it, or only to ``step`` when given."""
        self._run.send(ev, step)

    def collect_events(self, ev: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Buffer ``ev``; once one event of each expected type arrived, return them in order.

        Returns None until the join is complete. Repeat a type in ``expected`` to wait
        for several events of it (``[Result] * 10``).
        """
        return self._run.collect(ev, expected)

    async def wait_for_event(
        self,
        event_type: type[EventT],
        waiter_event: Event | None = None,
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> EventT:
        """Suspend this step until an event of ``event_type`` arrives, and return it.

        The waiter is registered first, then ``waiter_event`` (if any) is written to
        the stream, so an answer sent in reaction to it is never missed. Only events
        whose fields equal ``requirements`` match. The step body is not run again.
        """
        # The run matched the event with isinstance(event, event_type).
        return await self._run.wait_for(  # type: ignore[return-value]
            event_type, waiter_event, requirements, timeout
        )
