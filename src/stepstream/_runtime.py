"""The scheduler: one task group per run, step invocations started on demand.

A step gets a task only while it has work: an arriving event either starts an
invocation (when fewer than ``num_workers`` run) or waits in the step's backlog, and a
finishing invocation takes the next event from the backlog. Idle steps and parked runs
cost no tasks. Step errors travel as values (an :class:`Outcome` set on the run's
``done`` future); the run's body then leaves the task group, which cancels whatever
is still in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stepstream._instrument import NOOP, Instrument, RunInfo, StepInfo, current_step
from stepstream.context import Context
from stepstream.errors import (
    WorkflowCancelledError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
)
from stepstream.events import (
    Event,
    InputRequiredEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
    require_event,
)

if TYPE_CHECKING:
    from stepstream._graph import Graph
    from stepstream._stream import EventStream
    from stepstream.step import StepSpec

__all__ = ["CANCEL_GRACE_SECONDS", "Outcome", "Run"]

_log = logging.getLogger("stepstream")

#: How long a run waits for cancelled steps to stop before publishing its outcome.
CANCEL_GRACE_SECONDS = 2.0

Caller = Callable[[Context[Any], Event], Any]


@dataclass(slots=True)
class Outcome:
    """How a run ended: ``status`` in ok | error | timeout | cancelled."""

    status: str
    terminal: StopEvent
    error: BaseException | None = None
    # The step attempt that ended the run (returned the StopEvent, failed, timed out).
    source: StepInfo | None = None

    def value(self) -> Any:
        """Return the run's result, or raise what ended it."""
        if self.error is not None:
            raise self.error
        if type(self.terminal) is StopEvent:
            return self.terminal.result
        return self.terminal


class _Runner:
    """A step's per-run scheduling state."""

    __slots__ = ("backlog", "call", "free", "spec")

    def __init__(self, spec: StepSpec, call: Caller) -> None:
        self.spec = spec
        self.call = call
        # Created on first use: most steps never have a backlog (and parked runs are many).
        self.backlog: deque[tuple[Event, StepInfo | None]] | None = None
        # Free worker slots, popped from the end: slot 0 is used first.
        self.free = list(range(spec.num_workers - 1, -1, -1))


class _Waiter:
    __slots__ = ("event_type", "future", "requirements")

    def __init__(
        self, event_type: type[Event], requirements: dict[str, Any], future: asyncio.Future[Event]
    ) -> None:
        self.event_type = event_type
        self.requirements = requirements
        self.future = future

    def matches(self, event: Event) -> bool:
        return isinstance(event, self.event_type) and all(
            event.get(k, _ABSENT) == v for k, v in self.requirements.items()
        )


_ABSENT = object()


class Run:
    """One run of a workflow: its task group, stream, waiters and outcome."""

    __slots__ = (
        "_tasks",
        "_tg",
        "ctx",
        "done",
        "finished",
        "graph",
        "info",
        "instrument",
        "loop",
        "observed",
        "outcome",
        "runners",
        "stream",
        "thread_id",
        "timeout",
        "waiters",
    )

    def __init__(
        self,
        *,
        info: RunInfo,
        graph: Graph,
        callers: tuple[Caller, ...],
        instrument: Instrument,
        stream: EventStream,
        timeout: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.info = info
        self.graph = graph
        self.instrument = instrument
        # Skips the per-event seam call when nothing observes the run (the dark default).
        self.observed = instrument is not NOOP
        self.stream = stream
        self.timeout = timeout
        self.loop = loop
        self.thread_id = threading.get_ident()
        self.runners = [_Runner(s, c) for s, c in zip(graph.specs, callers, strict=True)]
        # The run's Context; released when the run ends (handler.ctx keeps its own
        # reference). It refers back to the run, and without that cycle a finished run
        # is freed at once by reference counting instead of by the garbage collector.
        self.ctx: Context[Any] | None = Context(self, graph.state_type)
        self.waiters: list[_Waiter] = []
        # Set by a step or cancel_run() to end the run; the run then stops its steps.
        self.done: asyncio.Future[Outcome] = loop.create_future()
        # Set once the run has ended: the stream is closed and telemetry recorded.
        self.outcome: asyncio.Future[Outcome] = loop.create_future()
        self.finished = False
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
                interrupted = False
                try:
                    self.dispatch(start_event, None, None)
                    outcome = await self._wait()
                except asyncio.CancelledError:
                    interrupted = True
                    outcome = self._cancelled("the run's task was cancelled")
                self.finished = True
                await self._stop_steps()
                self._close(outcome)
                if interrupted:
                    raise asyncio.CancelledError  # noqa: TRY301 - re-raise after cleanup
        except asyncio.CancelledError:
            self._close(self._cancelled("the run's task was cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime bug: reported, never lost
            _log.exception("stepstream: internal error in run %s", self.info.run_id)
            self._close(self._failed("<runtime>", exc, None))
        finally:
            self.ctx = None

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

    async def _wait(self) -> Outcome:
        if self.timeout is None:
            return await self.done
        try:
            async with asyncio.timeout(self.timeout):
                return await self.done
        except TimeoutError:
            active = self.active_steps()
            msg = (
                f"workflow {self.info.workflow} timed out after {self.timeout}s; steps still "
                f"active: {', '.join(active) or 'none'}. Raise Workflow(timeout=...) or "
                "pass timeout=None"
            )
            self.finished = True
            return self._timed_out(msg, self.timeout, active)

    def _close(self, outcome: Outcome) -> None:
        self.finished = True
        if self.outcome.done():
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

    def finish(self, outcome: Outcome) -> None:
        """End the run with ``outcome`` unless it already ended."""
        self.finished = True
        if not self.done.done():
            self.done.set_result(outcome)

    def cancel(self) -> None:
        """Ask the run to stop; in-flight steps are cancelled."""
        self.finish(self._cancelled("the run was cancelled with cancel_run()"))

    def active_steps(self) -> list[str]:
        """Names of the steps with an invocation in flight."""
        return [r.spec.name for r in self.runners if len(r.free) < r.spec.num_workers]

    # -- outcomes -------------------------------------------------------------------

    def _failed(self, step: str, error: BaseException, source: StepInfo | None) -> Outcome:
        terminal = WorkflowFailedEvent(
            step=step, exception_type=type(error).__name__, message=str(error)
        )
        return Outcome("error", terminal, error, source)

    def _timed_out(
        self,
        message: str,
        timeout: float | None,
        active: list[str],
        source: StepInfo | None = None,
    ) -> Outcome:
        terminal = WorkflowTimedOutEvent(timeout=timeout, active_steps=active, message=message)
        error = WorkflowTimeoutError(message, timeout=timeout, active_steps=active)
        return Outcome("timeout", terminal, error, source)

    def _cancelled(self, message: str) -> Outcome:
        return Outcome(
            "cancelled", WorkflowCancelledEvent(message=message), WorkflowCancelledError(message)
        )

    # -- events ---------------------------------------------------------------------

    def write(self, event: Event, inv: StepInfo | None, written_ns: int | None = None) -> None:
        """Append ``event`` to the stream; dropped once the run has ended."""
        stream = self.stream
        if self.finished:
            return  # the run has ended: a step being cancelled writes into the void
        seq = stream.push(event)
        if inv is not None:
            inv.streamed += 1
        if self.observed:
            self.instrument.event_streamed(self.info, inv, event, seq, written_ns)

    def check_send(self, event: Event, target: str | None) -> None:
        """Raise WorkflowRuntimeError if ``event`` could not be delivered."""
        require_event(event, "send_event")
        name = type(event).__name__
        if self.outcome.done():
            msg = (
                f"send_event({name}): run {self.info.run_id} of workflow {self.info.workflow} "
                "has ended, so nothing can receive it; check handler.done() before sending"
            )
            raise WorkflowRuntimeError(msg)
        if target is not None:
            spec = self.graph.spec(target)
            if spec is None:
                msg = (
                    f"send_event(..., step={target!r}): workflow {self.info.workflow} has "
                    f"no step {target!r}; its steps are {', '.join(self.graph.names)}"
                )
                raise WorkflowRuntimeError(msg)
            if not spec.accepts_type(type(event)):
                takers = [s.name for s in self.graph.specs if s.accepts_type(type(event))]
                accepted = ", ".join(t.__name__ for t in spec.accepts)
                msg = (
                    f"send_event({name}, step={target!r}): step {target!r} does not accept "
                    f"{name} (it accepts {accepted}); steps that accept {name}: "
                    f"{', '.join(takers) or 'none'}"
                )
                raise WorkflowRuntimeError(msg)
        elif not self.graph.route(type(event)) and not any(
            isinstance(event, w.event_type) for w in self.waiters
        ):
            msg = (
                f"no step of workflow {self.info.workflow} accepts {name} and no step is "
                f"waiting for it; add a step that takes {name}, or wait for it with "
                "ctx.wait_for_event"
            )
            raise WorkflowRuntimeError(msg)

    def dispatch(self, event: Event, origin: StepInfo | None, target: str | None) -> None:
        """Deliver ``event`` to a waiter, or to the steps that accept it."""
        if self.finished:
            return
        self.instrument.event_sent(self.info, origin, event, target)
        if target is not None:
            indices: tuple[int, ...] = (self.graph.index[target],)
        else:
            if self.waiters and self._to_waiter(event):
                return
            indices = self.graph.route(type(event))
            if not indices:
                self.check_send(event, None)  # raises with the explanation
        tg = self._tg
        assert tg is not None  # noqa: S101 - dispatch runs inside main()
        for i in indices:
            runner = self.runners[i]
            if runner.free:
                task = tg.create_task(self._work(runner, runner.free.pop(), event, origin))
                self._tasks[task] = runner.spec.name
                task.add_done_callback(self._tasks.pop)
            else:
                if runner.backlog is None:
                    runner.backlog = deque()
                runner.backlog.append((event, origin))

    def add_waiter(
        self, event_type: type[Event], requirements: dict[str, Any], future: asyncio.Future[Event]
    ) -> _Waiter:
        """Register a wait_for_event waiter."""
        waiter = _Waiter(event_type, requirements, future)
        self.waiters.append(waiter)
        return waiter

    def remove_waiter(self, waiter: _Waiter) -> None:
        """Forget ``waiter`` (answered, timed out or cancelled)."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def _to_waiter(self, event: Event) -> bool:
        for waiter in self.waiters:
            if not waiter.future.done() and waiter.matches(event):
                waiter.future.set_result(event)
                self.waiters.remove(waiter)
                return True
        return False

    # -- step invocations -------------------------------------------------------------

    async def _work(
        self, runner: _Runner, worker: int, event: Event, origin: StepInfo | None
    ) -> None:
        try:
            while True:
                await self._invoke(runner, worker, event, origin)
                backlog = runner.backlog
                if not backlog or self.finished:
                    return
                event, origin = backlog.popleft()
        finally:
            runner.free.append(worker)

    async def _invoke(
        self, runner: _Runner, worker: int, event: Event, origin: StepInfo | None
    ) -> None:
        spec = runner.spec
        ins = self.instrument
        first = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            inv = StepInfo(self.info, spec.name, attempt, worker, event, origin, time.time_ns())
            current_step.set(inv)
            ins.step_started(inv)
            try:
                result = await self._call(runner, event)
            except _StepTimedOut as exc:
                ins.step_failed(inv, exc.error, "timeout", False)
                active = self.active_steps()
                msg = (
                    f"step {spec.name!r} timed out after {spec.timeout}s (its @step timeout); "
                    f"steps still active: {', '.join(active)}"
                )
                self.finish(self._timed_out(msg, spec.timeout, active, inv))
                return
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if self.finished or task is None or task.cancelling():
                    ins.step_failed(inv, exc, "cancelled", False)
                    raise
                # Raised by the step's own code, not a cancellation of the run.
                error = WorkflowRuntimeError(
                    f"step {spec.name!r} raised asyncio.CancelledError without being "
                    "cancelled; raise an ordinary exception to fail a step"
                )
                error.__cause__ = exc
                ins.step_failed(inv, error, "error", False)
                self.finish(self._failed(spec.name, error, inv))
                return
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - a step's error ends the run as a value
                # BaseException too: pytest.fail() or a framework's abort inside a step is
                # still that step's failure, not a cancellation of the run.
                delay = self._retry_delay(spec, time.monotonic() - first, attempt, exc)
                ins.step_failed(inv, exc, "error", delay is not None)
                if delay is None:
                    self.finish(self._failed(spec.name, exc, inv))
                    return
                ins.step_retry(inv, delay)
                await asyncio.sleep(delay)
                continue
            self._handle_result(inv, result)
            return

    async def _call(self, runner: _Runner, event: Event) -> Any:
        spec = runner.spec
        ctx = self.ctx
        assert ctx is not None  # noqa: S101 - steps run inside main(), before the release
        if spec.timeout is None:
            if spec.is_async:
                return await runner.call(ctx, event)
            return await asyncio.to_thread(runner.call, ctx, event)
        scope = asyncio.timeout(spec.timeout)
        try:
            async with scope:
                if spec.is_async:
                    return await runner.call(ctx, event)
                return await asyncio.to_thread(runner.call, ctx, event)
        except TimeoutError as exc:
            if scope.expired():
                raise _StepTimedOut(exc) from exc
            raise

    def _retry_delay(
        self, spec: StepSpec, elapsed: float, attempt: int, error: BaseException
    ) -> float | None:
        if spec.retry_policy is None or self.finished or not isinstance(error, Exception):
            return None
        return spec.retry_policy.next(elapsed, attempt, error)

    def _handle_result(self, inv: StepInfo, result: Any) -> None:
        if result is not None and not isinstance(result, Event):
            msg = (
                f"step {inv.step!r} returned {type(result).__name__} ({result!r:.80}); steps "
                "must return an Event instance or None"
            )
            error = WorkflowRuntimeError(msg)
            self.instrument.step_failed(inv, error, "error", False)
            self.finish(self._failed(inv.step, error, inv))
            return
        self.instrument.step_finished(inv, result)
        if result is None or self.finished:
            return
        if isinstance(result, StopEvent):
            self.finish(Outcome("ok", result, None, inv))
        elif isinstance(result, InputRequiredEvent):
            self.write(result, inv)
        else:
            try:
                self.dispatch(result, inv, None)
            except WorkflowRuntimeError as exc:
                self.finish(self._failed(inv.step, exc, inv))


class _StepTimedOut(Exception):  # noqa: N818 - internal signal carrying the TimeoutError
    def __init__(self, error: TimeoutError) -> None:
        super().__init__(str(error))
        self.error = error
