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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stepstream import _internal_events as internal
from stepstream import _outcome
from stepstream._instrument import NOOP, Observer, RunInfo, StepInfo, current_step
from stepstream._routing import (
    QUEUED,
    Router,
    RunState,
    Scope,
    Snapshot,
    Waiter,
)
from stepstream._run_queries import RunQueries
from stepstream._steps import CANCEL_GRACE_SECONDS, stop_steps, wait_for_event, work
from stepstream._text import safe_repr
from stepstream.context import Context
from stepstream.errors import (
    ContextStateError,
    WorkflowRuntimeError,
    WorkflowStepDoesNotExistError,
    WorkflowStreamOverflowError,
)
from stepstream.events import Event

if TYPE_CHECKING:
    from stepstream._graph import Graph
    from stepstream._journal import Journal
    from stepstream._outcome import Outcome
    from stepstream._stream import EventStream
    from stepstream.resource import ResourceManager

__all__ = ["CANCEL_GRACE_SECONDS", "Caller", "Run"]

_log = logging.getLogger("stepstream")
_get_ident = threading.get_ident


#: Calls a step: ``(ctx, event)``, plus ``**resources`` by keyword for a step that has
#: resource parameters.
Caller = Callable[..., Any]


def _require_event(value: object, where: str) -> None:
    """Raise WorkflowRuntimeError naming ``where`` unless ``value`` is an Event."""
    if not isinstance(value, Event):
        shown = safe_repr(value, 80)
        msg = f"{where} takes an Event instance, got {type(value).__name__} ({shown})"
        raise WorkflowRuntimeError(msg)


def _warn_held(info: RunInfo, held: list[Event]) -> None:
    _log.warning(
        "stepstream: run %s of %s ended with %d event(s) sent by the caller that no "
        "step took and no wait_for_event matched: %s",
        info.run_id,
        info.workflow,
        len(held),
        ", ".join(type(e).__name__ for e in held),
    )


class Run(RunQueries):
    """One run of a workflow; ``Context`` is its public facade (see ``RunPort``)."""

    __slots__ = (
        "_collect_lock",
        "_decided",
        "_early",
        "_tasks",
        "_tg",
        "callers",
        "counts",
        "ctx",
        "expose_internal",
        "info",
        "instrument",
        "journal",
        "loop",
        "observed",
        "outcome",
        "replaying",
        "resources",
        "router",
        "spent",
        "stream",
        "thread_id",
        "timeout",
        "waiting",
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
        resources: ResourceManager,
        ctx: Context[Any],
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
        # Seconds of the timeout spent before a restart (a resumed durable run's).
        self.spent = 0.0
        self.loop = loop
        # The workflow instance's: cached resource values outlive the run.
        self.resources = resources
        self.thread_id = _get_ident()
        # Released when the run ends (the handler keeps its own reference): without the
        # Run <-> Context cycle a finished run is freed at once by reference counting.
        self.ctx: Context[Any] | None = ctx
        # Set by whatever decides the outcome (a step, a timeout, cancel_run()).
        self._decided: asyncio.Future[Outcome] = loop.create_future()
        # Set once the outcome is published: the stream is closed, telemetry recorded.
        self.outcome: asyncio.Future[Outcome] = loop.create_future()
        self._collect_lock = threading.Lock()
        # Sent by the caller before the run's task started: delivered once it has.
        self._early: list[tuple[Event, StepInfo | None, str | None]] = []
        self._tg: asyncio.TaskGroup | None = None
        # Each step task's job: [step index, event it is handling (None once done), its
        # ticket, its invocation number, whether it re-runs a saved invocation, the events
        # its waits took (None until one did), the waiter it is suspended on (or None)].
        self._tasks: dict[asyncio.Task[None], list[Any]] = {}
        # Invocations begun per step: numbers them (``ctx.step_key``).
        self.counts = [0] * len(graph.specs)
        # True while the work a run starts with re-runs earlier work (durable recovery).
        self.replaying = False
        # The durable engine's journal; None for an in-memory run (see _journal).
        self.journal: Journal | None = None
        # Set by stream_events(expose_internal=True): the runtime's internal events are
        # made only from then on (they cost nothing otherwise).
        self.expose_internal = False
        self.waiting = 0  # step invocations suspended in wait_for_event

    # -- the run's task -------------------------------------------------------------

    async def main(self, start: Event | Snapshot) -> None:
        """Run to completion; the outcome lands on ``self.outcome``, never raised here.

        The outcome is published once in-flight steps have stopped, or after a grace
        period when a step ignores its cancellation: a misbehaving step never holds
        the caller's result or stream hostage. The task group still waits for it.
        """
        self.instrument.run_started(self.info)
        journal = self.journal
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    if journal is not None:
                        tg.create_task(journal.run(self))
                    if isinstance(start, Event):
                        self.dispatch(start, None, None)
                    else:  # continuing a saved run: its pending work, not a new start
                        self.resume(start)
                    self.replaying = False
                    for early in self._early:
                        self.dispatch(*early)
                    outcome = await self._wait()
                except asyncio.CancelledError:
                    self.router.end()
                    if journal is not None:
                        journal.abort()
                    await stop_steps(self._tasks, self.router.graph.names, self.info.run_id)
                    self._close(_outcome.cancelled("the run's task was cancelled"))
                    raise
                await stop_steps(self._tasks, self.router.graph.names, self.info.run_id)
                if journal is not None:
                    outcome = await journal.finish(self, outcome)
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
            async with asyncio.timeout(self.timeout - self.spent):
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

    def _close(self, outcome: Outcome) -> None:
        self.router.end()
        if not self.router.close():
            return
        journal = self.journal
        if journal is not None and journal.parked:  # released, not ended: nothing to publish
            journal.parked_outcome(self)
            return
        self.outcome.set_result(outcome)
        self.stream.close(outcome.terminal)
        if self.router.held:
            _warn_held(self.info, self.router.held)
        self.instrument.run_finished(
            self.info,
            outcome.status,
            outcome.error,
            outcome.terminal,
            self.stream.seq - 1,
            outcome.source,
        )

    def resume(self, snap: Snapshot) -> None:
        """Take up the work of a saved run (the invocations in flight re-run)."""
        self.restore_counts(snap)
        for step, event, key in self.router.restore(snap, None):
            self.dispatch(event, None, step, None, key)

    def restore_counts(self, snap: Snapshot) -> None:
        """Go on numbering each step's invocations where the saved run stopped."""
        index = self.router.graph.index
        for step, count in snap.counts.items():
            if step in index:
                self.counts[index[step]] = count

    def job(self, index: int, event: Event, ticket: Any, key: int | None = None) -> list[Any]:
        """The job of a step task starting on ``event``: a new invocation, or saved one ``key``."""
        if key is None:
            counts = self.counts
            key = counts[index] = counts[index] + 1
            return [index, event, ticket, key, self.replaying, None, None]
        return [index, event, ticket, key, True, None, None]

    def step_key(self) -> str:
        """``ctx.step_key``: ``run_id:step:n`` for the calling step's invocation ``n``."""
        inv = self.caller()
        if inv is None:
            msg = (
                "ctx.step_key is only available from within a step (it names the step "
                "invocation that reads it)"
            )
            raise ContextStateError(msg)
        return f"{self.info.run_id}:{inv.step}:{inv.invocation}"

    def end(self, outcome: Outcome) -> None:
        """Decide the run's outcome (RUNNING -> ENDING) unless it is already decided."""
        # The future is cancelled, not set, when the run's own wait was interrupted.
        if self.router.end() and not self._decided.done():
            self._decided.set_result(outcome)

    def cancel(self) -> None:
        """Ask the run to stop; in-flight steps are cancelled.

        A parked durable run is reloaded to be cancelled (its journal does it).
        """
        journal = self.journal
        if journal is not None and journal.parked:
            journal.cancelled()
            return
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
            self.loop.call_soon_threadsafe(self._write_hopped, event, self.caller(), time.time_ns())

    def write(self, event: Event, inv: StepInfo | None, written_ns: int | None = None) -> None:
        """Append ``event`` to the stream; dropped once the run is no longer running."""
        if self.router.state is not RunState.RUNNING:
            return  # a step being cancelled writes into the void
        seq = self.stream.push(event)
        if inv is not None:
            inv.streamed += 1
        if self.observed:
            self.instrument.event_streamed(self.info, inv, event, seq, written_ns)

    def _write_hopped(self, event: Event, inv: StepInfo | None, written_ns: int) -> None:
        """``write`` for a step's thread: a bounded stream's refusal fails the run here."""
        try:
            self.write(event, inv, written_ns)
        except WorkflowStreamOverflowError as exc:
            self.end(_outcome.failed(inv.step if inv is not None else "<caller>", exc, inv))

    def send(self, event: Event, target: str | None) -> None:
        """``ctx.send_event``: refuse what cannot be delivered, else route it.

        A durable run records what the caller sends before routing it (``Journal``).
        """
        _require_event(event, "send_event")
        origin = self.caller()
        journal = self.journal if origin is None else None
        if journal is not None and journal.parked:
            self._on_loop(journal.received, self, event, target)
            return
        problem = self.router.send_problem(event, target, from_caller=origin is None)
        if problem is not None:
            unknown = (
                target is not None
                and self.router.state is RunState.RUNNING
                and self.router.graph.spec(target) is None
            )
            raise (WorkflowStepDoesNotExistError if unknown else WorkflowRuntimeError)(problem)
        if journal is not None:
            self._on_loop(self._sent, event, target)
        elif self._tg is None:  # the run's task has not started yet
            self._early.append((event, origin, target))
        elif _get_ident() == self.thread_id:
            self.dispatch(event, origin, target)
        else:
            self.loop.call_soon_threadsafe(self.dispatch, event, origin, target)

    def _on_loop(self, call: Callable[..., None], *args: Any) -> None:
        """``call(*args)`` now on the run's loop, or soon from another thread."""
        if _get_ident() == self.thread_id:
            call(*args)
        else:
            self.loop.call_soon_threadsafe(call, *args)

    def _sent(self, event: Event, target: str | None) -> None:
        """Record the caller's ``event`` in the journal, then route it."""
        journal = self.journal
        if journal is not None:
            journal.received(self, event, target)
        if self._tg is None:  # the run's task has not started yet
            self._early.append((event, None, target))
        else:
            self.dispatch(event, None, target)

    def dispatch(
        self,
        event: Event,
        origin: StepInfo | None,
        target: str | None,
        scope: Scope | None = None,
        key: int | None = None,
    ) -> None:
        """Deliver ``event`` where the router decides.

        ``scope`` is that of the step attempt that returned ``event`` (None for a sent
        one); only a graph with fan-out steps (``FanRun``) has use for it. ``key`` is
        the number of the saved invocation a resumed run re-runs.
        """
        router = self.router
        if router.state is not RunState.RUNNING:
            return
        self.instrument.event_sent(self.info, origin, event, target)
        # The caller's events that nothing takes yet are held for a later waiter.
        decision = router.deliver(event, origin, target, hold=origin is None)
        if isinstance(decision, Waiter):
            if not decision.token.done():
                decision.token.set_result(event)
            return
        if decision is None:
            if self.expose_internal:
                unhandled = internal.unhandled(event, idle=self.idle())
                if unhandled is not None:
                    self.stream.push_internal(unhandled)
            return
        tg = self._tg
        assert tg is not None  # noqa: S101 - dispatch runs inside main()
        for index, worker in decision:
            if worker == QUEUED:
                if self.expose_internal:
                    self.stream.push_internal(internal.queued(router.graph.names[index], event))
                continue
            job = self.job(index, event, None, key)
            task = tg.create_task(work(self, index, worker, event, origin, job, None))
            self._tasks[task] = job
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

    def fan_out(self, inv: StepInfo, events: list[Any]) -> None:
        """Route the list step attempt ``inv`` returned, as one batch (``FanRun``)."""
        msg = f"step {inv.step!r} returned a list, which only a fan-out graph routes"
        raise WorkflowRuntimeError(msg)  # unreachable: fan-out graphs run as FanRun

    def finished(self, scope: Scope) -> None:
        """An invocation in ``scope`` is done (only ``FanRun`` keeps count)."""

    # ``ctx.wait_for_event``: register, write the waiter event, suspend (see _steps).
    wait_for = wait_for_event
