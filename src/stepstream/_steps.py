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

if TYPE_CHECKING:
    from stepstream._runtime import Run

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
            _fail(run, inv, error, first)
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
                _fail(run, inv, exc, first)
                return
            ins.step_failed(inv, exc, "error", True)
            ins.step_retry(inv, delay)
            await asyncio.sleep(delay)
            continue
        _handle_result(run, inv, result, first)
        return

async def _call(run: Run, index: int, event: Event) -> Any:
    spec = run.router.graph.specs[index]
    call = run.callers[index]
    ctx = run.ctx
    assert ctx is not None  # noqa: S101 - steps run inside main(), before the release
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

def _fail(run: Run, inv: StepInfo, error: BaseException, first: float) -> None:
    """End the run with ``error``: attempt ``inv.attempt`` of an invocation begun at ``first``."""
    run.instrument.step_failed(inv, error, "error", False)
    run.end(_failed(inv, error, first))

def _failed(inv: StepInfo, error: BaseException, first: float) -> _outcome.Outcome:
    return _outcome.failed(inv.step, error, inv, inv.attempt, time.monotonic() - first)

def _handle_result(run: Run, inv: StepInfo, result: Any, first: float) -> None:
    action = result_action(result, run.router.state)
    if action is Action.INVALID:
        msg = (
            f"step {inv.step!r} returned {type(result).__name__} ({result!r:.80}); steps "
            "must return an Event instance or None"
        )
        _fail(run, inv, WorkflowRuntimeError(msg), first)
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
            run.end(_failed(inv, exc, first))


class _StepTimedOut(Exception):  # noqa: N818 - internal signal carrying the TimeoutError
    def __init__(self, error: TimeoutError) -> None:
        super().__init__(str(error))
        self.error = error
