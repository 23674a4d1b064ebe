"""One step invocation: its attempts, retries, timeout, and what becomes of its result.

A friend of :class:`~stepstream._runtime.Run`: these functions do the I/O of running
user code; the decisions (retry or fail, route or stop) come from the routing core.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from stepstream import _outcome
from stepstream._instrument import StepInfo, current_step
from stepstream._routing import Action, RunState, result_action, retry_delay
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event, StopEvent
from stepstream.resource import _resolve_step_resources

if TYPE_CHECKING:
    from stepstream._runtime import Caller, Run
    from stepstream._spec import StepSpec
    from stepstream.context import Context

__all__ = ["work"]


async def work(run: Run, index: int, worker: int, event: Event, origin: StepInfo | None) -> None:
    """Invoke step ``index`` on ``event``, then on its backlog, in worker slot ``worker``."""
    router = run.router
    try:
        while True:
            await _invoke(run, index, worker, event, origin)
            job = router.next_job(index)
            if job is None:
                return
            event, origin = job
    finally:
        router.release(index, worker)

async def _invoke(run: Run, index: int, worker: int, event: Event, origin: StepInfo | None) -> None:
    spec = run.router.graph.specs[index]
    ins = run.instrument
    first = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        inv = StepInfo(run.info, spec.name, attempt, worker, event, origin, time.time_ns())
        current_step.set(inv)
        ins.step_started(inv)
        try:
            result = await _call(run, index, event)
        except _StepTimedOut as exc:
            ins.step_failed(inv, exc.error, "timeout", False)
            active = run.router.active_steps()
            msg = (
                f"step {spec.name!r} timed out after {spec.timeout}s (its @step timeout); "
                f"steps still active: {', '.join(active)}"
            )
            run.end(_outcome.timed_out(msg, spec.timeout, active, inv))
            return
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
            _fail(run, inv, error)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - a step's error ends the run as a value
            # BaseException too: pytest.fail() or a framework's abort inside a step is
            # still that step's failure, not a cancellation of the run.
            delay = retry_delay(
                spec.retry_policy, run.router.state, time.monotonic() - first, attempt, exc
            )
            if delay is None:
                _fail(run, inv, exc)
                return
            ins.step_failed(inv, exc, "error", True)
            ins.step_retry(inv, delay)
            await asyncio.sleep(delay)
            continue
        _handle_result(run, inv, result)
        return

async def _call(run: Run, index: int, event: Event) -> Any:
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
    run: Run, spec: StepSpec, call: Caller, ctx: Context[Any], event: Event
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

def _fail(run: Run, inv: StepInfo, error: BaseException) -> None:
    run.instrument.step_failed(inv, error, "error", False)
    run.end(_outcome.failed(inv.step, error, inv))

def _handle_result(run: Run, inv: StepInfo, result: Any) -> None:
    action = result_action(result, run.router.state)
    if action is Action.INVALID:
        msg = (
            f"step {inv.step!r} returned {type(result).__name__} ({result!r:.80}); steps "
            "must return an Event instance or None"
        )
        _fail(run, inv, WorkflowRuntimeError(msg))
        return
    run.instrument.step_finished(inv, result)
    if action is Action.STOP:
        assert isinstance(result, StopEvent)  # noqa: S101 - result_action checked it
        run.end(_outcome.succeeded(result, inv))
    elif action is Action.STREAM:
        run.write(result, inv)
    elif action is Action.ROUTE:
        try:
            run.dispatch(result, inv, None)
        except WorkflowRuntimeError as exc:
            run.end(_outcome.failed(inv.step, exc, inv))


class _StepTimedOut(Exception):  # noqa: N818 - internal signal carrying the TimeoutError
    def __init__(self, error: TimeoutError) -> None:
        super().__init__(str(error))
        self.error = error
