"""``WorkflowHandler``: what ``Workflow.run()`` returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from stepstream.events import Event, StopEvent

if TYPE_CHECKING:
    from stepstream._outcome import Outcome
    from stepstream._runtime import Run
    from stepstream.context import Context

__all__ = ["WorkflowHandler"]


class WorkflowHandler:
    """A running workflow: await it for the result, iterate its events as they happen.

    ``await handler`` returns ``StopEvent.result`` (or the StopEvent itself when the
    workflow ends with a StopEvent subclass), or raises what ended the run.
    """

    def __init__(self, run: Run, task: asyncio.Task[Any]) -> None:
        ctx = run.ctx
        assert ctx is not None  # noqa: S101 - the run has not ended yet
        self._run = run
        self._task = task
        self._ctx = ctx  # the run lets go of its Context when it ends; the caller keeps it
        #: Unique id of this run (also on its spans and log lines).
        self.run_id: str = run.info.run_id

    @property
    def ctx(self) -> Context[Any]:
        """The run's Context, e.g. to ``send_event`` a human's answer."""
        return self._ctx

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        return (await self._outcome()).value()

    async def stop_event_result(self) -> StopEvent:
        """Wait for the run and return its StopEvent (subclass); raise what ended it."""
        outcome = await self._outcome()
        if outcome.error is not None:
            raise outcome.error
        return outcome.terminal

    def stream_events(
        self, expose_internal: bool = False, *, after: int | None = None
    ) -> AsyncIterator[Event]:
        """Iterate the events written to the stream, then the terminal StopEvent.

        Events written before iteration starts are buffered. Breaking out of the loop
        and calling this again resumes where it stopped; once the terminal event has
        been delivered, calling it again raises WorkflowRuntimeError.

        ``expose_internal=True`` also yields the runtime's internal events
        (``StepStateChanged``, ``WorkflowIdleEvent``, ``UnhandledEvent``) from the
        moment it is first passed: pass it before awaiting anything after ``run()``
        to see them all.

        ``after=seq`` starts after the event at position ``seq`` of the stream (0-based;
        ``-1`` for the start): a reader that reconnects sees each event once, in order.
        A durable run reads its recorded events back from its database, then follows
        the run; an in-memory run can only skip events it still holds unread.
        """
        if expose_internal:
            self._run.expose_internal = True
        return self._run.stream.iterate(expose_internal, after)

    async def send_event(self, event: Event, step: str | None = None) -> None:
        """Send ``event`` into the run, as ``handler.ctx.send_event`` does.

        For a durable run, return once the event is recorded in the run's journal: from
        then on a crash does not lose it.
        """
        self._ctx.send_event(event, step)
        journal = self._run.journal
        if journal is not None:
            await journal.recorded()

    async def cancel_run(self, *, timeout: float = 5.0) -> None:
        """Cancel the run and wait (up to ``timeout`` seconds) until its steps have stopped.

        Afterwards ``await handler`` raises WorkflowCancelledError and the stream ends
        with a WorkflowCancelledEvent. Does nothing if the run already ended.
        """
        self._run.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._run.outcome)

    def done(self) -> bool:
        """True once the run has ended (its outcome is known)."""
        return self._run.outcome.done()

    def is_done(self) -> bool:
        """True once the run has ended; the same as ``done()``."""
        return self._run.outcome.done()

    def get_stop_event(self) -> StopEvent | None:
        """The StopEvent the run ended with; None while running and after a failure or timeout.

        A cancelled run's is its WorkflowCancelledEvent.
        """
        outcome = self._run.outcome
        if not outcome.done():
            return None
        ended = outcome.result()
        return ended.terminal if ended.status in {"ok", "cancelled"} else None

    def exception(self) -> BaseException | None:
        """What the run raised (None while running and after success)."""
        outcome = self._run.outcome
        return outcome.result().error if outcome.done() else None

    def cancelled(self) -> bool:
        """True if the run was cancelled."""
        outcome = self._run.outcome
        return outcome.done() and outcome.result().status == "cancelled"

    async def _outcome(self) -> Outcome:
        outcome = self._run.outcome
        try:
            return await asyncio.shield(outcome)
        except asyncio.CancelledError:
            if not outcome.done():
                self._task.cancel()  # the caller gave up waiting: the run stops too
            raise

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<WorkflowHandler {self._run.info.workflow} run_id={self.run_id} {state}>"

    def __str__(self) -> str:
        return (
            f"WorkflowHandler(workflow={self._run.info.workflow}, run_id={self.run_id}, "
            f"result={self.get_stop_event()!r})"
        )
