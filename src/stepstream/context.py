"""``Context``: what a step (and the caller, through ``handler.ctx``) can do in a run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from stepstream._collect import Collector
from stepstream._instrument import StepInfo, current_step
from stepstream.errors import WorkflowRuntimeError, WorkflowTimeoutError
from stepstream.events import Event, require_event

if TYPE_CHECKING:
    from stepstream._runtime import Run

__all__ = ["Context", "Store"]

_get_ident = threading.get_ident

StateT = TypeVar("StateT")
EventT = TypeVar("EventT", bound=Event)
_MISSING: Any = object()


class Store(Generic[StateT]):
    """Key-value store and typed state shared by the steps of one run."""

    def __init__(self, state_type: type[StateT] | None) -> None:
        self._data: dict[str, Any] = {}
        self._state_type = state_type
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


class Context(Generic[StateT]):
    """The run as a step sees it: send, collect, wait for and stream events; a store.

    One Context exists per run; ``handler.ctx`` is the same object, so the caller can
    send events (a human's answer) into the run.
    """

    def __init__(self, run: Run, state_type: type[StateT] | None) -> None:
        self._run = run
        self._push = run.stream.push  # bound once: write_event_to_stream is the hot path
        self.store: Store[StateT] = Store(state_type)
        self._collectors: dict[tuple[Any, ...], list[Collector[Any]]] = {}
        self._collect_lock = threading.Lock()

    def _caller(self) -> StepInfo | None:
        # None also when a step of another (outer) run calls into this one.
        inv = current_step.get()
        return inv if inv is not None and inv.run is self._run.info else None

    def write_event_to_stream(self, ev: Event) -> None:
        """Append ``ev`` to the run's stream, read by ``handler.stream_events()``."""
        if not isinstance(ev, Event):
            require_event(ev, "write_event_to_stream")  # type: ignore[unreachable]
        run = self._run
        on_loop = _get_ident() == run.thread_id
        if on_loop and not run.observed:
            # Nothing observes the run: only the stream needs the event (the hot path).
            if not run.finished:
                self._push(ev)
            return
        inv = self._caller()
        if on_loop:
            run.write(ev, inv)
        else:
            run.loop.call_soon_threadsafe(run.write, ev, inv, time.time_ns())

    def send_event(self, ev: Event, step: str | None = None) -> None:
        """Route ``ev`` to the steps that accept it, or only to ``step`` when given."""
        run = self._run
        run.check_send(ev, step)
        if _get_ident() == run.thread_id:
            run.dispatch(ev, self._caller(), step)
        else:
            run.loop.call_soon_threadsafe(run.dispatch, ev, self._caller(), step)

    def collect_events(self, ev: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Buffer ``ev``; once one event of each expected type arrived, return them in order.

        Returns None until the join is complete. Repeat a type in ``expected`` to wait
        for several events of it (``[Result] * 10``).
        """
        inv = self._caller()
        if not expected:
            msg = "collect_events needs at least one expected event type"
            raise WorkflowRuntimeError(msg)
        # A cheap key (step, size and ends of the list) finds the candidates; a candidate
        # then confirms the whole list, in O(1) when the same list object is passed again.
        key = (
            inv.step if inv is not None else None,
            len(expected),
            expected[0],
            expected[-1],
        )
        origin = inv.origin if inv is not None and inv.event is ev else None
        with self._collect_lock:
            candidates = self._collectors.setdefault(key, [])
            collector = next((c for c in candidates if c.serves(expected)), None)
            if collector is None:
                collector = Collector(expected)
                candidates.append(collector)
            done = collector.add(ev, origin)
        if done is None:
            return None
        events, origins = done
        self._run.instrument.events_collected(self._run.info, inv, origins)
        return events

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
        run = self._run
        inv = self._caller()
        future: asyncio.Future[Event] = run.loop.create_future()
        waiter = run.add_waiter(event_type, dict(requirements or {}), future)
        try:
            if waiter_event is not None:
                self.write_event_to_stream(waiter_event)
            run.instrument.step_waiting(run.info, inv, event_type)
            if timeout is None:
                event = await future
            else:
                try:
                    async with asyncio.timeout(timeout):
                        event = await future
                except TimeoutError:
                    where = f"step {inv.step!r}" if inv is not None else "the caller"
                    msg = (
                        f"{where} waited {timeout}s for {event_type.__name__} and none "
                        "arrived; send it with ctx.send_event(...) or raise the timeout"
                    )
                    raise WorkflowTimeoutError(msg, timeout=timeout) from None
        finally:
            run.remove_waiter(waiter)
        run.instrument.step_resumed(run.info, inv, event)
        return event  # type: ignore[return-value]  # matched by isinstance in the run
