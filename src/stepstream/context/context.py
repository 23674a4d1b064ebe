"""``Context``: what a step (and the caller, through ``handler.ctx``) can do in a run.

The Context is a facade: everything but the store is done by the run, reached through
the small :class:`RunPort` interface, so this module does not import the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

from stepstream.context.state_store import MODEL_T, DictState, InMemoryStateStore
from stepstream.events import Event

__all__ = ["Context", "RunPort"]

EventT = TypeVar("EventT", bound=Event)


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
        waiter_id: str | None,
        requirements: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> Event:
        """Suspend until an ``event_type`` event meeting ``requirements`` arrives."""
        ...


class Context(Generic[MODEL_T]):
    """The run as a step sees it: send, collect, wait for and stream events; a store.

    One Context exists per run; ``handler.ctx`` is the same object, so the caller can
    send events (a human's answer) into the run.
    """

    __slots__ = ("_run", "store")

    def __init__(self, run: RunPort, state_type: type[MODEL_T] | None) -> None:
        self._run = run
        initial = state_type() if state_type is not None else cast("MODEL_T", DictState())
        self.store: InMemoryStateStore[MODEL_T] = InMemoryStateStore(initial)

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
        waiter_id: str | None = None,
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = 2000,
    ) -> EventT:
        """Suspend this step until an event of ``event_type`` arrives, and return it.

        The waiter is registered first, then ``waiter_event`` (if any) is written to
        the stream, so an answer sent in reaction to it is never missed; an answer the
        caller sent before is held for the waiter and returned at once. Only events
        whose fields equal ``requirements`` match. The step body is not run again.
        ``waiter_id`` names the wait (it survives a saved and restored context);
        ``timeout`` is in seconds (None: wait forever) and raises WorkflowTimeoutError.
        """
        # The run matched the event with isinstance(event, event_type).
        return await self._run.wait_for(  # type: ignore[return-value]
            event_type, waiter_event, waiter_id, requirements, timeout
        )
