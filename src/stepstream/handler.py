"""``WorkflowHandler``: what ``Workflow.run()`` returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from stepstream.events import Event

if TYPE_CHECKING:
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

    @property
    def run_id(self) -> str:
        """Unique id of this run (also on its spans and log lines)."""
        return self._run.info.run_id

    @property
    def ctx(self) -> Context[Any]:
        """The run's Context, e.g. to ``send_event`` a human's answer."""
        return self._ctx

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result().__await__()

    async def _result(self) -> Any:
        outcome = self._run.outcome
        try:
            ended = await asyncio.shield(outcome)
        except asyncio.CancelledError:
            if not outcome.done():
                self._task.cancel()  # the caller gave up waiting: the run stops too
            raise
        return ended.value()

    def stream_events(self) -> AsyncIterator[Event]:
        """Iterate the events written to the stream, then the terminal StopEvent.

        Events written before iteration starts are buffered. Breaking out of the loop
        and calling this again resumes where it stopped; once the terminal event has
        been delivered, calling it again raises WorkflowRuntimeError.
        """
        return self._run.stream.iterate()

    async def cancel_run(self) -> None:
        """Cancel the run and wait until its steps have stopped.

        Afterwards ``await handler`` raises WorkflowCancelledError and the stream ends
        with a WorkflowCancelledEvent. Does nothing if the run already ended.
        """
        self._run.cancel()
        await asyncio.shield(self._run.outcome)

    def done(self) -> bool:
        """True once the run has ended (its outcome is known)."""
        return self._run.outcome.done()

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<WorkflowHandler {self._run.info.workflow} run_id={self.run_id} {state}>"
