"""The I/O of a run: its task group, step invocations, timeouts and thread hops.

Every decision (where an event goes, which waiter it answers, when a join is complete,
whether the run is still running) is the routing core's (:mod:`stepstream._routing`);
this module carries the decisions out. A step gets a task only while it has work, so
idle steps and parked runs cost no tasks. Step errors travel as values (an
:class:`~stepstream._outcome.Outcome`); the run's body then leaves the task group,
which cancels whatever is still in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stepstream import _outcome
from stepstream._instrument import NOOP, Observer, RunInfo, StepInfo, current_step
from stepstream._routing import Router, RunState, Waiter
from stepstream._steps import work
from stepstream.context import Context
from stepstream.errors import (
    WorkflowRuntimeError,
    WorkflowStepDoesNotExistError,
    WorkflowTimeoutError,
)
from stepstream.events import Event

if TYPE_CHECKING:
    from stepstream._graph import Graph
    from stepstream._outcome import Outcome
    from stepstream._stream import EventStream

__all__ = ["CANCEL_GRACE_SECONDS", "Caller", "Run"]

_log = logging.getLogger("stepstream")
_get_ident = threading.get_ident

#: How long a run waits for cancelled steps to stop before publishing its outcome.
CANCEL_GRACE_SECONDS = 2.0

Caller = Callable[[Context[Any], Event], Any]


def _require_event(value: object, where: str) -> None:
    """Raise WorkflowRuntimeError naming ``where`` unless ``value`` is an Event."""
    if not isinstance(value, Event):
        msg = f"{where} takes an Event instance, got {type(value).__name__} ({value!r:.80})"
        raise WorkflowRuntimeError(msg)


class Run:
    """One run of a workflow; ``Context`` is its public facade (see ``RunPort``)."""

    __slots__ = (
        "_collect_lock",
        "_decided",
        "_tasks",
        "_tg",
        "callers",
        "ctx",
        "info",
        "instrument",
        "loop",
        "observed",
        "outcome",
        "router",
        "stream",
        "thread_id",
        "timeout",
    )

    def __init__(  # noqa: PLR0917 - built in one place, by Workflow.run()
        self,
        info: RunInfo,
        graph: Graph,
        callers: tuple[Caller, ...],
        instrument: Observer,
        stream: EventStream,
        timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.info = info
        self.router: Router[StepInfo | None, asyncio.Future[Event]] = Router(
            graph, info.workflow, info.run_id
        )
        self.callers = callers
        self.instrument = instrument
        # Skips the per-event seam call when nothing observes the run (the dark default).
        self.observed = instrument is not NOOP
        self.stream = stream
        self.timeout = timeout
        self.loop = loop
        self.thread_id = _get_ident()
        # Released when the run ends (the handler keeps its own reference): without the
        # Run <-> Context cycle a finished run is freed at once by reference counting.
        self.ctx: Context[Any] | None = Context(self, graph.state_type)
        # Set by whatever decides the outcome (a step, a timeout, cancel_run()).
        self._decided: asyncio.Future[Outcome] = loop.create_future()
        # Set once the outcome is published: the stream is closed, telemetry recorded.
        self.outcome: asyncio.Future[Outcome] = loop.create_future()
        self._collect_lock = threading.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[asyncio.Task[None], str] = {}

    # -- the run's task -------------------------------------------------------------

    async def main(self, start_event: Event) -> None:
        """Run to completion; the outcome lands on ``self.outcome``, never raised here.

        The outcome is published once in-flight steps have stopped, or after a grace
        period when a step ignores its cancellation: a misbehaving step never holds
        the caller's result or stream hostage. The task group still waits for it.
        """
        self.instrument.run_started(self.info)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    self.dispatch(start_event, None, None)
                    outcome = await self._wait()
                except asyncio.CancelledError:
                    self.router.end()
                    await self._stop_steps()
                    self._close(_outcome.cancelled("the run's task was cancelled"))
                    raise
                await self._stop_steps()
                self._close(outcome)
        except asyncio.CancelledError:
            self._close(_outcome.cancelled("the run's task was cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime bug: reported, never lost
            _log.exception("stepstream: internal error in run %s", self.info.run_id)
            self._close(_outcome.failed("<runtime>", exc, None))
        finally:
            self.ctx = None

    async def _wait(self) -> Outcome:
        if self.timeout is None:
            return await self._decided
        try:
            async with asyncio.timeout(self.timeout):
                return await self._decided
        except TimeoutError:
            active = self.router.active_steps()
            msg = (
                f"workflow {self.info.workflow} timed out after {self.timeout}s; steps still "
                f"active: {', '.join(active) or 'none'}. Raise Workflow(timeout=...) or "
                "pass timeout=None"
            )
            outcome = _outcome.timed_out(msg, self.timeout, active)
            self.end(outcome)
            return outcome

    async def _stop_steps(self) -> None:
        """Cancel in-flight step invocations and give them a grace period to stop."""
        tasks = [t for t in self._tasks if not t.done()]
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS)
        if pending:
            names = sorted({self._tasks.get(t, "?") for t in pending})
            _log.warning(
                "stepstream: step(s) %s of run %s ignored cancellation for %.0fs; the run "
                "has ended without them (a step must not swallow asyncio.CancelledError)",
                ", ".join(names),
                self.info.run_id,
                CANCEL_GRACE_SECONDS,
            )

    def _close(self, outcome: Outcome) -> None:
        self.router.end()
        if not self.router.close():
            return
        self.outcome.set_result(outcome)
        self.stream.close(outcome.terminal)
        self.instrument.run_finished(
            self.info,
            outcome.status,
            outcome.error,
            outcome.terminal,
            self.stream.seq - 1,
            outcome.source,
        )

    def end(self, outcome: Outcome) -> None:
        """Decide the run's outcome (RUNNING -> ENDING) unless it is already decided."""
        # The future is cancelled, not set, when the run's own wait was interrupted.
        if self.router.end() and not self._decided.done():
            self._decided.set_result(outcome)

    def cancel(self) -> None:
        """Ask the run to stop; in-flight steps are cancelled."""
        self.end(_outcome.cancelled("the run was cancelled with cancel_run()"))

    # -- the Context's port ---------------------------------------------------------

    def caller(self) -> StepInfo | None:
        """The step attempt of this run whose code is calling; None for anyone else."""
        inv = current_step.get()
        return inv if inv is not None and inv.run is self.info else None

    def stream_write(self, event: Event) -> None:
        """``ctx.write_event_to_stream``: the hot path, then the thread hop."""
        if not isinstance(event, Event):
            _require_event(event, "write_event_to_stream")  # type: ignore[unreachable]
        if _get_ident() == self.thread_id:
            if not self.observed:  # nothing observes the run: only the stream needs it
                if self.router.state is RunState.RUNNING:
                    self.stream.push(event)
                return
            self.write(event, self.caller())
        else:
            self.loop.call_soon_threadsafe(self.write, event, self.caller(), time.time_ns())

    def write(self, event: Event, inv: StepInfo | None, written_ns: int | None = None) -> None:
        """Append ``event`` to the stream; dropped once the run is no longer running."""
        if self.router.state is not RunState.RUNNING:
            return  # a step being cancelled writes into the void
        seq = self.stream.push(event)
        if inv is not None:
            inv.streamed += 1
        if self.observed:
            self.instrument.event_streamed(self.info, inv, event, seq, written_ns)

    def send(self, event: Event, target: str | None) -> None:
        """``ctx.send_event``: refuse what cannot be delivered, else route it."""
        _require_event(event, "send_event")
        problem = self.router.send_problem(event, target)
        if problem is not None:
            unknown = (
                target is not None
                and self.router.state is RunState.RUNNING
                and self.router.graph.spec(target) is None
            )
            raise (WorkflowStepDoesNotExistError if unknown else WorkflowRuntimeError)(problem)
        if _get_ident() == self.thread_id:
            self.dispatch(event, self.caller(), target)
        else:
            self.loop.call_soon_threadsafe(self.dispatch, event, self.caller(), target)

    def dispatch(self, event: Event, origin: StepInfo | None, target: str | None) -> None:
        """Deliver ``event`` where the router decides."""
        router = self.router
        if router.state is not RunState.RUNNING:
            return
        self.instrument.event_sent(self.info, origin, event, target)
        decision = router.deliver(event, origin, target)
        if isinstance(decision, Waiter):
            if not decision.token.done():
                decision.token.set_result(event)
            return
        tg = self._tg
        assert tg is not None  # noqa: S101 - dispatch runs inside main()
        for index, worker in decision:
            task = tg.create_task(work(self, index, worker, event, origin))
            self._tasks[task] = router.graph.names[index]
            task.add_done_callback(self._tasks.pop)

    def collect(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """``ctx.collect_events``: the join's events once complete (any thread)."""
        inv = self.caller()
        origin = inv.origin if inv is not None and inv.event is event else None
        with self._collect_lock:
            done = self.router.collect(inv.step if inv else None, event, origin, expected)
        if done is None:
            return None
        self.instrument.events_collected(self.info, inv, done[1])
        return done[0]

    async def wait_for(
        self,
        event_type: type[Event],
        waiter_event: Event | None,
        requirements: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> Event:
        """``ctx.wait_for_event``: register, then write ``waiter_event``, then suspend."""
        inv = self.caller()
        waiter = self.router.add_waiter(event_type, requirements or {}, self.loop.create_future())
        try:
            if waiter_event is not None:
                self.stream_write(waiter_event)
            self.instrument.step_waiting(self.info, inv, event_type)
            try:
                async with asyncio.timeout(timeout):
                    event = await waiter.token
            except TimeoutError:
                where = f"step {inv.step!r}" if inv is not None else "the caller"
                msg = (
                    f"{where} waited {timeout}s for {event_type.__name__} and none "
                    "arrived; send it with ctx.send_event(...) or raise the timeout"
                )
                raise WorkflowTimeoutError(msg, timeout=timeout) from None
        finally:
            self.router.remove_waiter(waiter)
        self.instrument.step_resumed(self.info, inv, event)
        return event
