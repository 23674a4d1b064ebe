"""A run's step lifecycle as frames: what the web view and ``stepstream watch`` draw rows from.

The event stream holds what a run wrote to its stream; when its steps start and end is
not in it. The server's one :class:`StepFrames` observer sees the runs it starts
(``stepstream.telemetry.observe`` around ``wf.run()``, with the run's log in a context
variable that the run's task inherits) and appends a ``StepStateChanged`` frame to each
run's step log at every step start, end, failure, retry, wait and resume: work per step
attempt, none per streamed event. One observer for every run, not one per run: the
runtime then reuses the observer it combined for the first run (no fan-out per run).
``GET /handlers/{id}/steps`` streams that log exactly as ``GET /events/{id}`` streams
the events (SSE ``id:`` is the frame's position, resume with ``Last-Event-ID`` or
``after_sequence``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

from stepstream.events import Event
from stepstream.server._envelope import EncodedEvent
from stepstream.server._log import RunLog
from stepstream.telemetry import (
    Key,
    Observer,
    RunInfo,
    Status,
    StepInfo,
    error_text,
    observe,
    safe_text,
)

__all__ = ["FRAME_TYPE", "StepFrameRouter", "StepFrames"]

#: The ``type`` (and SSE ``event:``) of every step frame.
FRAME_TYPE = "StepStateChanged"
_QUALIFIED = orjson.dumps(f"stepstream.server.{FRAME_TYPE}")
_MAX_ERROR = 2000  # characters of an error message kept in a frame


def _ms(run: RunInfo, ns: int) -> float:
    """Milliseconds from the run's start to ``ns`` (wall clock, as the spans use)."""
    return round((ns - run.start_ns) / 1e6, 3)


class _RunFrames:
    """One run's step log and the position of its next frame."""

    __slots__ = ("log", "next")

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.next = 0


# The step log of the run being started (inherited by its task, and by runs its steps
# start: their frames go to the same log, as with an observer of their own).
_STARTING: ContextVar[_RunFrames | None] = ContextVar("stepstream.server steps", default=None)


class StepFrames(Observer):
    """Appends one frame per step lifecycle change of each run to that run's log."""

    def __init__(self) -> None:
        self._frames: Key[_RunFrames] = Key("step frames")

    @contextmanager
    def starting(self, log: RunLog) -> Iterator[None]:
        """Runs started inside the block write their step frames to ``log``."""
        token = _STARTING.set(_RunFrames(log))
        try:
            with observe(self):
                yield
        finally:
            _STARTING.reset(token)

    def run_started(self, run: RunInfo) -> None:
        """Note the run's log (from the context it was started in) on the run."""
        frames = _STARTING.get()
        if frames is not None:
            run.put(self._frames, frames)

    def _frame(self, inv: StepInfo | None, run: RunInfo, state: str, **more: Any) -> None:
        frames = run.find(self._frames)
        if frames is None:
            return
        value: dict[str, Any] = {
            "step": inv.step if inv is not None else None,
            "attempt": inv.attempt if inv is not None else None,
            "worker": inv.worker if inv is not None else None,
            "state": state,
            "start_ms": _ms(run, inv.start_ns) if inv is not None else None,
            "at_ms": _ms(run, time.time_ns()),
            **more,
        }
        head = orjson.dumps({"value": value, "type": FRAME_TYPE, "types": None}, default=str)
        frames.log.append(
            EncodedEvent(frames.next, FRAME_TYPE, head[:-1] + b',"qualified_name":', _QUALIFIED)
        )
        frames.next += 1

    def step_started(self, inv: StepInfo) -> None:
        """A step attempt began: state ``running``."""
        self._frame(inv, inv.run, "running")

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """A step attempt returned: state ``ok``, with what it emitted and streamed."""
        emitted = safe_text(type(result).__name__) if result is not None else None
        self._frame(inv, inv.run, "ok", emitted=emitted, streamed=inv.streamed)

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """A step attempt failed: its status (error, timeout, cancelled) or ``retrying``."""
        text = error_text(error)
        if len(text) > _MAX_ERROR:
            text = text[: _MAX_ERROR - 1] + "…"
        self._frame(
            inv,
            inv.run,
            "retrying" if will_retry else status,
            error=f"{safe_text(type(error).__name__)}: {text}",
            streamed=inv.streamed,
        )

    def step_waiting(self, run: RunInfo, inv: StepInfo | None, event_type: type[Event]) -> None:
        """A step waits in ``wait_for_event``: state ``waiting``, and for which event type."""
        self._frame(inv, run, "waiting", waiting_for=safe_text(event_type.__name__))

    def step_resumed(self, run: RunInfo, inv: StepInfo | None, event: Event) -> None:
        """A waiting step got its event: state ``running`` again."""
        self._frame(inv, run, "running", resumed_by=safe_text(type(event).__name__))

    def run_finished(  # noqa: PLR0917 - matches the seam
        self,
        run: RunInfo,
        status: Status,
        error: BaseException | None,
        terminal: Event,
        seq: int,
        source: StepInfo | None,
    ) -> None:
        """The run ended: a last frame (no step) with the run's status and duration."""
        self._frame(None, run, f"run_{status}")

    def run_parked(self, run: RunInfo) -> None:
        """A durable run was released while it waited: a ``run_parked`` frame."""
        self._frame(None, run, "run_parked")


class StepFrameRouter(StepFrames):
    """Step frames of the runs a durable runtime resumes: each into its record's step log.

    Observes the runs resumed where the runtime launched; ``logs(run_id)`` finds the
    log of a run's record (None for a run the server does not follow), looked up at the
    run's first frame.
    """

    def __init__(self, logs: Callable[[str], RunLog | None]) -> None:
        super().__init__()
        self._logs = logs

    def run_started(self, run: RunInfo) -> None:
        """Nothing yet: the run's record may be made after it started."""

    def _frame(self, inv: StepInfo | None, run: RunInfo, state: str, **more: Any) -> None:
        if run.find(self._frames) is None:
            log = self._logs(run.run_id)
            if log is None:
                return
            run.put(self._frames, _RunFrames(log))
        super()._frame(inv, run, state, **more)
