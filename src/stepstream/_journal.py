"""The journal seam: what a durable engine sees of a run (``Run.journal``).

An in-memory run has no journal (``None``): the runtime checks for one once per step
completion and once per ``wait_for_event``, never per streamed event. A durable run's
journal (:mod:`stepstream.durable`) also replaces the run's stream, so each streamed
event reaches the stream buffer and the observers only once it is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio

    from stepstream._outcome import Outcome
    from stepstream._runtime import Run
    from stepstream.context._snapshot import SavedRun, Snapshot
    from stepstream.events import Event
    from stepstream.handler import WorkflowHandler
    from stepstream.workflow import Workflow

__all__ = ["Engine", "Journal", "RetryState"]


@dataclass(frozen=True, slots=True)
class RetryState:
    """Where a step invocation stood in its retries when its process stopped.

    Attempt ``attempt`` failed with ``error`` at ``failed_ns``; the next attempt is due
    at ``due_ns`` (wall clock); the invocation's first attempt began at ``first_ns``.
    """

    attempt: int
    due_ns: int
    first_ns: int
    failed_ns: int
    error: BaseException


@runtime_checkable
class Engine(Protocol):
    """What ``Workflow(runtime=...)`` takes: a durable engine (``stepstream.durable``)."""

    def register(self, workflow: Workflow) -> None:
        """Know ``workflow`` by its name, to resume its runs after a restart."""
        ...

    def prepare(
        self, workflow: Workflow, run: Run, start: Event | Snapshot, saved: SavedRun | None
    ) -> None:
        """Give ``run`` (not started yet) its journal before ``workflow`` starts it."""
        ...

    def started(self, handler: WorkflowHandler) -> None:
        """The run of ``handler`` has started (its task exists)."""
        ...


class Journal(Protocol):
    """Records a run's progress so that it can be continued after a crash."""

    #: True once the run was released while it waited (parked, :mod:`stepstream.durable`):
    #: its task has ended, its outcome and stream wait for the run to be reloaded, and
    #: what the caller sends goes to the journal (``received``), which delivers it.
    parked: bool

    async def run(self, run: Run) -> None:
        """The journal's own work, a task in the run's task group until the run ends."""
        ...

    def ready(self) -> asyncio.Future[None] | None:
        """None, or a future to await before a step invocation starts.

        It is done once the checkpoints queued before the invocation are recorded.
        """
        ...

    def completed(self, run: Run, step: int, invocation: int) -> None:
        """Invocation ``invocation`` of step ``step`` (its index) ended.

        What it returned was applied; its worker's next job, if any, is in flight already.
        """
        ...

    def waiting(self, run: Run) -> None:
        """A step registered a ``wait_for_event`` waiter and streamed its prompt."""
        ...

    def retried(self, step: str, invocation: int, event: Event) -> RetryState | None:
        """The retry state invocation ``invocation`` of ``step`` on ``event`` had before a restart.

        Asked as each invocation of a journaled run begins; None for a new one. A step
        in retry back-off when its process died goes on with its attempt count and its
        next attempt's due time.
        """
        ...

    def received(self, run: Run, event: Event, target: str | None) -> None:
        """The caller sent ``event`` (to step ``target``): record it, before it is routed.

        Called on the run's event loop. Raises if the event cannot be recorded (then it
        is not routed either). A parked run's journal delivers it to the run instead.
        """
        ...

    async def recorded(self) -> None:
        """Return once every event the caller sent so far is recorded (or delivered).

        Raises WorkflowRuntimeError when one could not be (the run stopped first).
        """
        ...

    def cancelled(self) -> None:
        """``handler.cancel_run()`` on a parked run: reload it and cancel it for good."""
        ...

    def parked_outcome(self, run: Run) -> None:
        """The parked run's task ended: its outcome and stream now follow the reloaded run."""
        ...

    async def finish(self, run: Run, outcome: Outcome) -> Outcome:
        """Record the outcome once everything before it is; return the outcome to publish.

        That is the journal's own failure instead when it could not record the run.
        """
        ...

    def abort(self) -> None:
        """The run's task was cancelled: record nothing more (the run stays resumable)."""
        ...
