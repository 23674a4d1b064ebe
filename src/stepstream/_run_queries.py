"""What the outside may ask a run without changing it: state, progress, a saved copy.

:class:`RunQueries` is the read-only half of the run's port to its ``Context``
(:class:`stepstream.context.RunPort`); ``Run`` inherits it and does the I/O.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from stepstream._routing import Router, RunState
from stepstream._steps import retry_info
from stepstream.errors import ContextStateError

if TYPE_CHECKING:
    from stepstream._instrument import StepInfo
    from stepstream._outcome import Outcome
    from stepstream._stream import EventStream
    from stepstream.context._snapshot import Snapshot
    from stepstream.events import Event, StopEvent
    from stepstream.retry_policy import RetryInfo

__all__ = ["RunQueries"]


class RunQueries:
    """Read-only questions about a run (mixed into ``Run``, which sets the attributes)."""

    __slots__ = ()

    router: Router[StepInfo | None, asyncio.Future[Event]]
    stream: EventStream
    outcome: asyncio.Future[Outcome]
    waiting: int
    counts: list[int]
    _tasks: dict[asyncio.Task[None], list[Any]]

    def caller(self) -> StepInfo | None:
        """The step attempt of this run whose code is calling; None for anyone else."""
        raise NotImplementedError

    def save(self) -> tuple[bool, int, Snapshot]:
        """Whether the run is running, its next stream position and its routing state."""
        in_flight = []
        answers: list[Event] = []
        for task, job in self._tasks.items():
            if task.done() or job[1] is None:
                continue
            in_flight.append((job[0], job[1], job[2], job[3]))
            # What its waits took: the invocation re-runs, and its waits take them again.
            answers.extend(job[5] or ())
            waiter = job[6]
            if waiter is not None and waiter.token.done() and not waiter.token.cancelled():
                answers.append(waiter.token.result())  # answered, not resumed yet
        snap = self.router.snapshot(in_flight)
        snap.held[:0] = answers
        names = self.router.graph.names
        snap.counts = {names[i]: n for i, n in enumerate(self.counts) if n}
        return self.is_running(), self.stream.seq, snap

    def is_running(self) -> bool:
        """Whether the run has not ended (its outcome is not published yet)."""
        return self.router.state is not RunState.ENDED

    def active_steps(self) -> list[str]:
        """The steps with an invocation in flight."""
        return self.router.active_steps()

    def result(self) -> StopEvent | None:
        """The StopEvent the run ended with; None while running or after a failure."""
        outcome = self.outcome
        if not outcome.done() or outcome.result().error is not None:
            return None
        return outcome.result().terminal

    def in_own_step(self) -> bool:
        """Whether the calling code is a step of this run."""
        return self.caller() is not None

    def retry_info(self) -> RetryInfo:
        """``ctx.retry_info()``: where the calling step stands in its retries."""
        inv = self.caller()
        if inv is None:
            msg = "retry_info is only available from within step functions"
            raise ContextStateError(msg)
        return retry_info(inv)

    def idle(self) -> bool:
        """No queued work, and every invocation in flight waits for an event."""
        router = self.router
        return not router.has_backlog() and router.in_flight() == self.waiting
