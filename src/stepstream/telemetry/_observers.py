"""Which observers see a run: the choice every ``Workflow.run()`` asks for.

A workflow's runs are observed by its telemetry (spans, log lines and metrics through
the OpenTelemetry API, skipped entirely when nothing would record them), by a verbose
printer when ``verbose=True``, and by the observers added with :func:`observe` around
the code that starts the run (the CLI's live view, ``capture_telemetry()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from stepstream._instrument import Observer, combine
from stepstream._version import __version__
from stepstream.telemetry._switch import telemetry_active
from stepstream.telemetry._verbose import VerbosePrinter

__all__ = ["WorkflowObservers", "observe"]

_scoped: ContextVar[tuple[Observer, ...]] = ContextVar("stepstream_observers", default=())


@contextmanager
def observe(*observers: Observer) -> Iterator[None]:
    """Let ``observers`` see every run started inside the ``with`` block.

    The scope is the current context (like a contextvar): runs started by other tasks
    or threads are not affected, and blocks nest. Each observer's methods are called
    at the run's lifecycle points; one that raises is reported once and ignored.
    """
    token = _scoped.set((*_scoped.get(), *observers))
    try:
        yield
    finally:
        _scoped.reset(token)


def _same(one: tuple[Observer, ...], other: tuple[Observer, ...]) -> bool:
    """The same observers (each ``observe()`` block makes a new tuple of them)."""
    return len(one) == len(other) and all(a is b for a, b in zip(one, other, strict=True))


class WorkflowObservers:
    """The observers of one workflow instance's runs."""

    __slots__ = ("_dark", "_explicit", "_last", "_meter", "_observed", "_own", "_tracer")

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        verbose: bool,
    ) -> None:
        self._tracer = trace.get_tracer("stepstream", __version__, tracer_provider=tracer_provider)
        self._meter = metrics.get_meter("stepstream", __version__, meter_provider=meter_provider)
        # Given providers record whatever the global set-up is.
        self._explicit = tracer_provider is not None or meter_provider is not None
        self._own: tuple[Observer, ...] = (VerbosePrinter(),) if verbose else ()
        # With no SDK and no logging configured, telemetry would record nothing: runs
        # then skip it (see telemetry_active()).
        self._dark = combine(self._own)
        self._observed: Observer | None = None  # made by the first observed run
        # The observer made for the last scoped observers seen: (base, scoped, combined).
        # Runs started in one observe() block reuse it instead of making one each.
        self._last: tuple[Observer, tuple[Observer, ...], Observer] | None = None

    def for_run(self) -> Observer:
        """The observer of a run starting now (in the caller's context)."""
        scoped = _scoped.get()
        base = self._telemetry() if self._explicit or telemetry_active() else self._dark
        if not scoped:
            return base
        last = self._last
        if last is not None and last[0] is base and _same(last[1], scoped):
            return last[2]
        combined = combine([base, *scoped])
        self._last = (base, scoped, combined)
        return combined

    def _telemetry(self) -> Observer:
        observed = self._observed
        if observed is None:
            # Imported here: a process that never records does not load structlog.
            from stepstream.telemetry._sink import TelemetrySink  # noqa: PLC0415

            observed = combine([TelemetrySink(self._tracer, self._meter), *self._own])
            self._observed = observed
        return observed
