"""One step invocation: its attempts, retries, timeout, and what becomes of its result.

A friend of :class:`~stepstream._runtime.Run`: these functions do the I/O of running
user code; the decisions (retry or fail, route or stop) come from the routing core.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stepstream import _internal_events as internal
from stepstream import _outcome
from stepstream._fanrouter import fan_out_problem
from stepstream._instrument import StepInfo, current_step
from stepstream._routing import (
    Action,
    RunState,
    Ticket,
    default_waiter_id,
    result_action,
    retry_delay,
)
from stepstream._text import safe_repr
from stepstream.context.context import current_context
from stepstream.errors import (
    WorkflowRuntimeError,
    WorkflowStreamOverflowError,
    WorkflowTimeoutError,
)
from stepstream.events import Event, StepFailedEvent, StopEvent
from stepstream.resource import _resolve_step_resources
from stepstream.retry_policy import RetryInfo

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stepstream._journal import Journal
    from stepstream._runtime import Caller, Run
    from stepstream._spec import StepSpec
    from stepstream.context import Context

_log = logging.getLogger("stepstream")

#: How long a run waits for cancelled steps to stop before publishing its outcome.
CANCEL_GRACE_SECONDS = 2.0

__all__ = ["CANCEL_GRACE_SECONDS", "retry_info", "stop_steps", "wait_for_event", "work"]


async def work(  # noqa: PLR0917 - started once per invocation chain, by dispatch
    run: Run,
    index: int,
    worker: int,
    event: Event,
    origin: StepInfo | None,
    job: list[Any],
    ticket: Ticket | None,
) -> None:
    """Invoke step ``index`` on ``event``, then on its backlog, in worker slot ``worker``.

    ``job`` is the run's record of this task: [step index, event being handled, its
    ticket]. ``ticket`` (None for a plain delivery) carries a fan-out scope or a
    several-parameter step's events.
    """
    router = run.router
    name = router.graph.names[index]
    current_context.set(run.ctx)
    try:
        while True:
            if run.journal is not None and not await _recorded(run):
                return
            if run.expose_internal:
                run.stream.push_internal(internal.started(name, worker, event))
            result = await _invoke(run, index, worker, event, origin, ticket, job)
            if run.expose_internal:
                run.stream.push_internal(internal.ended(name, worker, event, result))
            if ticket is not None and ticket.scope:
                run.finished(ticket.scope)
            nxt = router.next_job(index)
            done = job[3]
            if nxt is None:
                job[1] = None  # no longer in flight: a snapshot leaves it out
            else:
                event, origin, ticket = nxt
                job[:] = run.job(index, event, ticket)
            if run.journal is not None:
                run.journal.completed(run, index, done)
            if nxt is None:
                return
    finally:
        router.release(index, worker)


async def _recorded(run: Run) -> bool:
    """A durable run: wait until what came before the invocation is recorded.

    False when the run ended meanwhile (the invocation is not started).
    """
    assert run.journal is not None  # noqa: S101 - the caller checked
    gate = run.journal.ready()
    if gate is not None:
        await gate
    return run.router.state is RunState.RUNNING


async def _invoke(  # noqa: PLR0917 - one call site
    run: Run,
    index: int,
    worker: int,
    event: Event,
    origin: StepInfo | None,
    ticket: Ticket | None,
    job: list[Any],
) -> Any:
    """Run the attempts of one invocation; return what the step returned (None if it failed)."""
    spec = run.router.graph.specs[index]
    ins = run.instrument
    # A durable run's invocation may go on where it stood in its retry back-off before
    # a restart: attempt count, first start, last error (its next attempt once it is due).
    saved = await _resumed(run.journal, spec.name, job[3], event) if run.journal else None
    attempt, first_ns, retry = (0, time.time_ns(), None) if saved is None else saved
    first = time.monotonic() - (time.time_ns() - first_ns) / 1e9
    while True:
        attempt += 1
        inv = StepInfo(run.info, spec.name, attempt, worker, event, origin, time.time_ns())
        inv.retry = retry  # what ctx.retry_info() tells a retried attempt
        inv.invocation = job[3]
        inv.replayed = job[4]
        current_step.set(inv)
        ins.step_started(inv)
        arg = event if ticket is None else _ticketed(run, inv, event, ticket)
        try:
            result = await _call(run, index, arg)
        except _StepTimedOut as exc:
            ins.step_failed(inv, exc.error, "timeout", False)
            active = run.router.active_steps()
            msg = (
                f"step {spec.name!r} timed out after {spec.timeout}s (its @step timeout); "
                f"steps still active: {', '.join(active)}"
            )
            run.end(_outcome.timed_out(msg, spec.timeout, active, inv))
            return None
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if run.router.state is not RunState.RUNNING or task is None or task.cancelling():
                ins.step_failed(inv, exc, "cancelled", False)
                raise
            # Raised by the step's own code, not a cancellation of the run.
            error = WorkflowRuntimeError(
                f"step {spec.name!r} raised asyncio.CancelledError without being "
                "cancelled; raise an ordinary exception to fail a step"
            )
            error.__cause__ = exc
            _fail(run, inv, error, first)
            return None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a step's error ends the run as a value
            # BaseException too: pytest.fail() or a framework's abort inside a step is
            # still that step's failure, not a cancellation of the run.
            try:
                delay = retry_delay(
                    spec.retry_policy,
                    run.router.state,
                    time.monotonic() - first,
                    attempt,
                    exc,
                    f"{run.info.run_id}:{spec.name}",
                )
            except Exception as policy_error:  # noqa: BLE001 - the policy's own failure
                # A policy that raises decides to stop; its error (caused by the step's)
                # is what ends the step.
                policy_error.__cause__ = exc
                _fail(run, inv, policy_error, first)
                return None
            if delay is None:
                _fail(run, inv, exc, first)
                return None
            retry = (first_ns, exc, time.time_ns())
            ins.step_failed(inv, exc, "error", True)
            ins.step_retry(inv, delay)
            await asyncio.sleep(delay)
            continue
        _handle_result(run, inv, result, first)
        return result


async def _resumed(
    journal: Journal, step: str, invocation: int, event: Event
) -> tuple[int, int, tuple[int, BaseException, int]] | None:
    """The retry state ``journal`` restored for the invocation: (attempt, first ns, retry).

    Returns once its next attempt is due; None for an invocation that was not in back-off.
    """
    saved = journal.retried(step, invocation, event)
    if saved is None:
        return None
    wait = saved.due_ns - time.time_ns()
    if wait > 0:
        await asyncio.sleep(wait / 1e9)
    return saved.attempt, saved.first_ns, (saved.first_ns, saved.error, saved.failed_ns)


def _ticketed(run: Run, inv: StepInfo, event: Event, ticket: Ticket) -> Any:
    """Set up attempt ``inv`` from its ticket; return what the step is called with."""
    inv.scope = ticket.scope
    if ticket.origins:  # a join: link its span to the producer of each collected event
        run.instrument.events_collected(run.info, inv, ticket.origins)
    return event if ticket.args is None else ticket.args


async def _call(run: Run, index: int, event: Any) -> Any:
    spec = run.router.graph.specs[index]
    call = run.callers[index]
    ctx = run.ctx
    assert ctx is not None  # noqa: S101 - steps run inside main(), before the release
    if spec.resources:
        return await _call_with_resources(run, spec, call, ctx, event)
    if spec.timeout is None:
        if spec.is_async:
            return await call(ctx, event)
        return await asyncio.to_thread(call, ctx, event)
    scope = asyncio.timeout(spec.timeout)
    try:
        async with scope:
            if spec.is_async:
                return await call(ctx, event)
            return await asyncio.to_thread(call, ctx, event)
    except TimeoutError as exc:
        if scope.expired():
            raise _StepTimedOut(exc) from exc
        raise


async def _call_with_resources(
    run: Run, spec: StepSpec, call: Caller, ctx: Context[Any], event: Any
) -> Any:
    """Resolve the step's resources (one scope), then call it with them by keyword.

    Resolution is part of the attempt: it counts against the step's timeout, and what
    a factory raises fails the attempt (and is retried like any step error).
    """
    scope = asyncio.timeout(spec.timeout)
    try:
        async with scope:
            started = time.perf_counter()
            resources = await _resolve_step_resources(run.resources, spec.resources, spec.name)
            inv = current_step.get()
            if inv is not None:
                names = tuple(d.resource.name for d in spec.resources)
                run.instrument.resources_resolved(inv, names, time.perf_counter() - started)
            if spec.is_async:
                return await call(ctx, event, **resources)
            return await asyncio.to_thread(call, ctx, event, **resources)
    except TimeoutError as exc:
        if scope.expired():
            raise _StepTimedOut(exc) from exc
        raise


def _fail(run: Run, inv: StepInfo, error: BaseException, first: float) -> None:
    """Step attempt ``inv`` failed for good: its @catch_error handler takes over, or the run ends.

    The handler gets a StepFailedEvent unless it already recovered the chain of events
    that led here ``max_recoveries`` times (counted along the producers of the events).
    """
    run.instrument.step_failed(inv, error, "error", False)
    graph = run.router.graph
    catcher = graph.catcher[graph.index[inv.step]]
    if catcher is not None and run.router.state is RunState.RUNNING:
        handler = graph.specs[catcher]
        assert handler.catch is not None  # noqa: S101 - catchers() picks handlers only
        recovered = sum(1 for origin in _lineage(inv) if origin.step == handler.name)
        if recovered < handler.catch.max_recoveries:
            failed = StepFailedEvent(
                step_name=inv.step,
                input_event=inv.event,
                exception=error,
                attempts=inv.attempt,
                elapsed_seconds=time.monotonic() - first,
                failed_at=datetime.now(UTC),
            )
            run.dispatch(failed, inv, handler.name, inv.scope)  # the handler works in its scope
            return
    run.end(_failed(inv, error, first))


def _lineage(inv: StepInfo) -> Iterator[StepInfo]:
    """The step attempts whose events led to ``inv``, nearest first."""
    origin = inv.origin
    while origin is not None:
        yield origin
        origin = origin.origin


def _failed(inv: StepInfo, error: BaseException, first: float) -> _outcome.Outcome:
    return _outcome.failed(inv.step, error, inv, inv.attempt, time.monotonic() - first)


def _handle_result(run: Run, inv: StepInfo, result: Any, first: float) -> None:
    action = result_action(result, run.router.state)
    if action is Action.FAN_OUT:
        problem = fan_out_problem(run.router.graph.spec(inv.step), result)
        if problem is not None:
            _fail(run, inv, WorkflowRuntimeError(problem), first)
            return
        run.instrument.step_finished(inv, None)
        try:
            run.fan_out(inv, result)
        except WorkflowRuntimeError as exc:
            run.end(_failed(inv, exc, first))
        return
    if action is Action.INVALID:
        msg = (
            f"step {inv.step!r} returned {type(result).__name__} ({safe_repr(result, 80)}); steps "
            "must return an Event instance or None"
        )
        _fail(run, inv, WorkflowRuntimeError(msg), first)
        return
    run.instrument.step_finished(inv, result)
    if action is Action.STOP:
        assert isinstance(result, StopEvent)  # noqa: S101 - result_action checked it
        run.end(_outcome.succeeded(result, inv))
    elif action is Action.STREAM:
        try:
            run.write(result, inv)
        except WorkflowStreamOverflowError as exc:
            run.end(_failed(inv, exc, first))
    elif action is Action.ROUTE:
        try:
            run.dispatch(result, inv, None, inv.scope)
        except WorkflowRuntimeError as exc:
            run.end(_failed(inv, exc, first))


async def wait_for_event(  # noqa: PLR0917 - mirrors ctx.wait_for_event
    run: Run,
    event_type: type[Event],
    waiter_event: Event | None,
    waiter_id: str | None,
    requirements: Mapping[str, Any] | None,
    timeout: float | None,
) -> Event:
    """``ctx.wait_for_event``: register, then write ``waiter_event``, then suspend."""
    inv = run.caller()
    wanted = requirements or {}
    if waiter_id is None:
        waiter_id = default_waiter_id(inv.step if inv else None, event_type, wanted)
    waiter, held = run.router.add_waiter(event_type, wanted, run.loop.create_future(), waiter_id)
    # The step's job keeps what its waits took until it completes, so that a snapshot
    # taken meanwhile (a checkpoint, to_dict()) has it: the invocation re-runs with it.
    job = _job_of(run, inv)
    if held is not None:  # the answer came first: it was held for this waiter
        _took(job, held)
        run.instrument.step_resumed(run.info, inv, held)
        return held
    if inv is not None:
        run.waiting += 1
    _suspended(job, waiter)
    try:
        # A wait restored from a saved context streamed its waiter event before.
        if waiter_event is not None and not waiter.restored:
            run.stream_write(waiter_event)
        if run.journal is not None:
            run.journal.waiting(run)
        run.instrument.step_waiting(run.info, inv, event_type)
        if run.expose_internal and run.idle():
            run.stream.push_internal(internal.idle())
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
        run.router.remove_waiter(waiter)
        if inv is not None:
            run.waiting -= 1
        _suspended(job, None)
    _took(job, event)
    run.instrument.step_resumed(run.info, inv, event)
    return event


def _job_of(run: Run, inv: StepInfo | None) -> list[Any] | None:
    """The job of the step task whose code waits (None for the caller)."""
    task = asyncio.current_task() if inv is not None else None
    return run._tasks.get(task) if task is not None else None  # noqa: SLF001 - a friend


def _suspended(job: list[Any] | None, waiter: Any) -> None:
    """Note the waiter the invocation is suspended on (None once it is not)."""
    if job is not None:
        job[6] = waiter


def _took(job: list[Any] | None, event: Event) -> None:
    """Keep ``event`` with the waiting invocation's job (see ``wait_for_event``)."""
    if job is not None:
        if job[5] is None:
            job[5] = []
        job[5].append(event)


async def stop_steps(
    tasks: dict[asyncio.Task[None], list[Any]], names: tuple[str, ...], run_id: str
) -> None:
    """Cancel in-flight step invocations and give them a grace period to stop."""
    running = [t for t in tasks if not t.done()]
    if not running:
        return
    for task in running:
        task.cancel()
    _, pending = await asyncio.wait(running, timeout=CANCEL_GRACE_SECONDS)
    if pending:
        stuck = sorted({names[tasks[t][0]] if t in tasks else "?" for t in pending})
        _log.warning(
            "stepstream: step(s) %s of run %s ignored cancellation for %.0fs; the run "
            "has ended without them (a step must not swallow asyncio.CancelledError)",
            ", ".join(stuck),
            run_id,
            CANCEL_GRACE_SECONDS,
        )


class _StepTimedOut(Exception):  # noqa: N818 - internal signal carrying the TimeoutError
    def __init__(self, error: TimeoutError) -> None:
        super().__init__(str(error))
        self.error = error


def retry_info(inv: StepInfo) -> RetryInfo:
    """What ``ctx.retry_info()`` tells the step attempt ``inv``."""
    if inv.retry is None:
        return RetryInfo(0, 0.0, None, None)
    first_ns, error, failed_ns = inv.retry
    return RetryInfo(
        retry_number=inv.attempt - 1,
        elapsed_seconds=max(0.0, (time.time_ns() - first_ns) / 1e9),
        last_exception=error if isinstance(error, Exception) else None,
        last_failed_at=datetime.fromtimestamp(failed_ns / 1e9, UTC),
    )
