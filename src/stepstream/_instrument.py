"""The single instrumentation seam: every lifecycle point of a run passes through here.

The runtime calls one :class:`Instrument` per run. Sinks (verbose printing, tracing,
logging, metrics) subclass it and override what they need; :func:`combine` fans out
to several and isolates their failures, so telemetry can never break a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from stepstream.events import Event, StopEvent

__all__ = ["Instrument", "RunInfo", "StepInfo", "combine", "current_step"]

_log = logging.getLogger("stepstream")


class RunInfo:
    """What sinks know about a run. ``span`` and ``data`` belong to the sinks."""

    __slots__ = ("data", "run_id", "span", "start_ns", "workflow")

    def __init__(self, workflow: str, run_id: str, start_ns: int) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.start_ns = start_ns
        self.span: Any = None
        self.data: Any = None


class StepInfo:
    """One attempt of one step invocation. ``origin`` produced the triggering event."""

    __slots__ = (
        "attempt",
        "data",
        "event",
        "origin",
        "run",
        "span",
        "start_ns",
        "step",
        "streamed",
        "worker",
    )

    def __init__(  # noqa: PLR0917 - built once per step attempt: positional is cheapest
        self,
        run: RunInfo,
        step: str,
        attempt: int,
        worker: int,
        event: Event,
        origin: StepInfo | None,
        start_ns: int,
    ) -> None:
        self.run = run
        self.step = step
        self.attempt = attempt
        self.worker = worker
        self.event = event
        self.origin = origin
        self.start_ns = start_ns
        self.streamed = 0
        self.span: Any = None
        self.data: Any = None


class Instrument:
    """Observer of a run's lifecycle; every method is a no-op until a sink overrides it.

    ``status`` values are ``ok``, ``error``, ``timeout`` and ``cancelled``. ``inv`` is
    None where the caller, not a step, did the thing (sending or streaming an event).
    """

    def run_started(self, run: RunInfo) -> None:
        """A run began; called in the run's task before the start event is routed."""

    def run_finished(  # noqa: PLR0917 - the seam passes positionally (hot, internal)
        self,
        run: RunInfo,
        status: str,
        error: BaseException | None,
        terminal: StopEvent,
        seq: int,
        source: StepInfo | None,
    ) -> None:
        """A run ended with ``status``; ``terminal`` is the stream's last event, at ``seq``.

        ``source`` is the step attempt that ended it (None for a run timeout or cancel).
        """

    def step_started(self, inv: StepInfo) -> None:
        """An attempt of a step began; runs in the step's context."""

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """An attempt returned ``result`` (None: emitted nothing)."""

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: str, will_retry: bool
    ) -> None:
        """An attempt raised, timed out or was cancelled."""

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """The failed attempt ``inv`` will be retried after ``delay`` seconds."""

    def step_waiting(self, run: RunInfo, inv: StepInfo | None, event_type: type[Event]) -> None:
        """A step suspended in wait_for_event for ``event_type``."""

    def step_resumed(self, run: RunInfo, inv: StepInfo | None, event: Event) -> None:
        """A step waiting in wait_for_event received ``event``."""

    def events_collected(
        self, run: RunInfo, inv: StepInfo | None, origins: Sequence[StepInfo | None]
    ) -> None:
        """collect_events completed a join of events produced by ``origins``."""

    def event_sent(
        self, run: RunInfo, inv: StepInfo | None, event: Event, target: str | None
    ) -> None:
        """An event was routed (returned by a step or sent with send_event)."""

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """An event was written to the run's stream at position ``seq`` (hot path).

        ``written_ns`` is when a worker thread wrote it (the call reaches the loop a
        little later); None when it was written on the loop itself, that is, now.
        """


NOOP = Instrument()

_METHODS = [
    name for name, value in vars(Instrument).items() if callable(value) and not name.startswith("_")
]


class _Fanout(Instrument):
    """Calls each sink in turn; a sink that raises is reported once and never re-raised."""

    def __init__(self, sinks: Sequence[Instrument]) -> None:
        self._sinks = tuple(sinks)
        self._reported: set[tuple[int, str]] = set()
        for name in _METHODS:
            bound = tuple(getattr(s, name) for s in self._sinks)
            setattr(self, name, self._make(name, bound))

    def _make(self, name: str, bound: tuple[Callable[..., None], ...]) -> Callable[..., None]:
        if len(bound) == 1:  # the common case, kept lean: this is on the per-event path
            only = bound[0]

            def call_one(*args: Any) -> None:
                try:
                    only(*args)
                except Exception:  # noqa: BLE001 - a sink must never break a run
                    self._report(0, name)

            return call_one

        def call(*args: Any) -> None:
            for i, fn in enumerate(bound):
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001 - a sink must never break a run
                    self._report(i, name)

        return call

    def _report(self, index: int, method: str) -> None:
        key = (index, method)
        if key not in self._reported:
            self._reported.add(key)
            sink = type(self._sinks[index]).__name__
            _log.exception("stepstream: %s.%s failed; later failures are not logged", sink, method)


def combine(sinks: Sequence[Instrument]) -> Instrument:
    """Return one instrument that fans out to ``sinks`` (a no-op one when empty)."""
    return _Fanout(sinks) if sinks else NOOP


# The step attempt whose code is running; tasks and threads a step starts inherit it.
current_step: ContextVar[StepInfo | None] = ContextVar("stepstream_current_step", default=None)
