"""The single instrumentation seam: every lifecycle point of a run passes through here.

The runtime calls one :class:`Observer` per run. Sinks (verbose printing, tracing,
logging, metrics) subclass it and override what they need; :func:`combine` fans out
to several and isolates their failures, so telemetry can never break a run.

Observers receive what the run holds as it is: names, errors and events from user
code. Text from them may not print or encode (an error whose ``__str__`` raises, a lone
surrogate from ``os.fsdecode``); observers make it safe once, where they record it,
with :mod:`stepstream._text` (public as ``stepstream.telemetry.error_text`` and
``safe_text``), and payloads go through the telemetry sink's encoder, which never fails.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Generic, Literal, TypeVar, get_args

from stepstream.events import Event, StopEvent

__all__ = [
    "NOOP",
    "STATUSES",
    "Key",
    "Observer",
    "Redactor",
    "RunInfo",
    "Status",
    "StepInfo",
    "combine",
    "current_step",
]

T = TypeVar("T")

_log = logging.getLogger("stepstream")

#: How a run or a step attempt ended; the same values in spans, logs, metrics and the CLI.
Status = Literal["ok", "error", "timeout", "cancelled"]
STATUSES: tuple[Status, ...] = get_args(Status)

#: A ``redact`` hook: gets an event and its payload (a fresh dict, JSON-ready), returns
#: the payload to record (the same dict changed, or another mapping), or None to
#: record the event's type and seq only.
Redactor = Callable[[Event, dict[str, Any]], Mapping[str, Any] | None]


class Key(Generic[T]):
    """A typed key under which one observer keeps its own state on a run or step.

    Each observer makes its own keys, so two observers (even two of the same class)
    never share a slot::

        self._state: Key[MyState] = Key("my state")
        run.put(self._state, MyState())
        state = run.get(self._state)  # typed MyState
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class _Stash:
    """Observer state by :class:`Key`; the dict is made by the first ``put``."""

    __slots__ = ("_stash",)

    def __init__(self) -> None:
        self._stash: dict[Key[Any], Any] | None = None

    def put(self, key: Key[T], value: T) -> None:
        """Keep ``value`` under ``key``."""
        if self._stash is None:
            self._stash = {}
        self._stash[key] = value

    def get(self, key: Key[T]) -> T:
        """Return the value kept under ``key``; KeyError if none was put."""
        if self._stash is None:
            raise KeyError(key)
        value: T = self._stash[key]
        return value

    def find(self, key: Key[T]) -> T | None:
        """Return the value kept under ``key``, or None."""
        stash = self._stash
        return None if stash is None else stash.get(key)


class RunInfo(_Stash):
    """What observers know about a run; each keeps its own state on it (``put``/``get``).

    ``trace_id`` (32 hex digits) and ``span_id`` are set once, by the first observer
    that traces the run, when it opens the run span; the others may read them from any
    later call on.
    """

    __slots__ = (
        "attempt",
        "last_checkpoint_ns",
        "redact",
        "resumed",
        "run_id",
        "span_id",
        "start_ns",
        "trace_id",
        "unparked",
        "workflow",
    )

    def __init__(self, workflow: str, run_id: str, start_ns: int) -> None:
        super().__init__()
        self.workflow = workflow
        self.run_id = run_id
        self.start_ns = start_ns
        self.trace_id: str | None = None
        #: The run span's id (16 hex digits), set with ``trace_id``.
        self.span_id: str | None = None
        #: 1, or how many times the run was restored from a saved context, plus one.
        self.attempt = 1
        #: For a run continued from a saved context: the (trace_id, span_id) of the run
        #: span it was saved from, which the tracing observer links and parents to.
        self.resumed: tuple[str, str] | None = None
        #: For a durable run resumed after a crash: when its previous attempt last
        #: recorded anything (ns since the epoch); None otherwise.
        self.last_checkpoint_ns: int | None = None
        #: For a durable run reloaded after it was released (parked) while it waited.
        self.unparked = False
        #: The workflow's ``redact`` hook (``Workflow(redact=...)``), or None.
        self.redact: Redactor | None = None


class StepInfo(_Stash):
    """One attempt of one step invocation. ``origin`` produced the triggering event.

    Observers keep their own state on it with ``put``/``get``.
    """

    __slots__ = (
        "attempt",
        "event",
        "invocation",
        "origin",
        "replayed",
        "retry",
        "run",
        "scope",
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
        self._stash = None
        self.run = run
        self.step = step
        self.attempt = attempt
        self.worker = worker
        self.event = event
        self.origin = origin
        self.start_ns = start_ns
        self.streamed = 0
        # On a retried attempt: (first attempt's start ns, the last error, when it failed).
        self.retry: tuple[int, BaseException, int] | None = None
        # The fan-out batches this attempt works in (ids, outermost first); empty outside.
        self.scope: tuple[str, ...] = ()
        #: Which invocation of its step this attempt belongs to (1-based; ``ctx.step_key``).
        self.invocation = 0
        #: True when the invocation was in flight when the run was saved or crashed, and
        #: runs again now.
        self.replayed = False


class Observer:
    """Observer of a run's lifecycle; every method is a no-op until a sink overrides it.

    ``status`` values are ``ok``, ``error``, ``timeout`` and ``cancelled``. ``inv`` is
    None where the caller, not a step, did the thing (sending or streaming an event).
    """

    def run_started(self, run: RunInfo) -> None:
        """A run began; called in the run's task before the start event is routed."""

    def run_finished(  # noqa: PLR0917 - the seam passes positionally (hot, internal)
        self,
        run: RunInfo,
        status: Status,
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
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """An attempt raised, timed out or was cancelled."""

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """The failed attempt ``inv`` will be retried after ``delay`` seconds."""

    def resources_resolved(self, inv: StepInfo, names: Sequence[str], seconds: float) -> None:
        """The attempt ``inv`` resolved its resources ``names`` in ``seconds``.

        Called before the step's code runs, only for steps with resource parameters
        (not when resolving raised: that is the attempt's failure).
        """

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

    def checkpoint_committed(self, run: RunInfo, seconds: float) -> None:
        """A durable run's journal committed one batch (events, a checkpoint) in ``seconds``."""

    def run_parked(self, run: RunInfo) -> None:
        """A durable run was released while its steps waited (instead of ``run_finished``).

        Its task has ended; it is reloaded when an event comes for it, as a resumed run
        with ``unparked`` set.
        """

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """An event was written to the run's stream at position ``seq`` (hot path).

        ``written_ns`` is when a worker thread wrote it (the call reaches the loop a
        little later); None when it was written on the loop itself, that is, now.
        """


NOOP = Observer()

_METHODS = [
    name for name, value in vars(Observer).items() if callable(value) and not name.startswith("_")
]
_METHOD_NAMES = frozenset(_METHODS)


def _nothing(*args: Any) -> None:
    """What a fan-out calls for a method none of its sinks overrides."""


_OVERRIDDEN: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def _overridden(cls: type) -> frozenset[str]:
    """The seam methods ``cls`` overrides (looked up once per class)."""
    names = _OVERRIDDEN.get(cls)
    if names is None:
        names = frozenset(n for n in _METHODS if getattr(cls, n) is not getattr(Observer, n))
        _OVERRIDDEN[cls] = names
    return names


def _active_names(sink: Observer) -> frozenset[str]:
    """The seam methods of ``sink`` that do something."""
    if isinstance(sink, _Fanout):
        return sink._names  # noqa: SLF001 - fan-outs nest (a run's own observers on the base)
    names = _overridden(type(sink))
    own = getattr(sink, "__dict__", None)  # methods set on the instance itself
    if own and not _METHOD_NAMES.isdisjoint(own):
        set_here = _METHOD_NAMES.intersection(own)
        noops = {
            n
            for n in set_here
            if own[n] is _nothing or getattr(own[n], "__func__", None) is getattr(Observer, n)
        }
        names = (names | set_here) - noops
    return names


@functools.lru_cache(maxsize=256)
def _plan(signature: tuple[frozenset[str], ...]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """For sinks doing ``signature`` (each one's active methods): who is called for what."""
    plan = []
    for name in _METHODS:
        indexes = tuple(i for i, names in enumerate(signature) if name in names)
        if indexes:
            plan.append((name, indexes))
    return tuple(plan)


class _Reporter:
    """Reports the first failure of each (sink, method) of a fan-out; never raises.

    Kept apart from the fan-out so that its calls hold no reference back to it: a fan-out
    made for each run is then freed by reference counting, not left to the cyclic GC.
    """

    __slots__ = ("_names", "_reported")

    def __init__(self, sinks: Sequence[Observer]) -> None:
        self._names = tuple(type(s).__name__ for s in sinks)
        self._reported: set[tuple[int, str]] = set()

    def report(self, index: int, method: str) -> None:
        key = (index, method)
        if key not in self._reported:
            self._reported.add(key)
            sink = self._names[index]
            _log.exception("stepstream: %s.%s failed; later failures are not logged", sink, method)


class _Fanout(Observer):
    """Calls each sink in turn; a sink that raises is reported once and never re-raised.

    A sink that does not override a method is not called for it (an observer of step
    ends adds no call per streamed event); a method no sink overrides is a no-op.
    Which sink is called for what is worked out once per combination of sink kinds:
    a fan-out made for each run (``observe()`` around ``wf.run()``) only binds calls.
    """

    def __init__(self, sinks: Sequence[Observer]) -> None:
        self._sinks = tuple(sinks)
        plan = _plan(tuple(_active_names(s) for s in self._sinks))
        report = _Reporter(self._sinks).report
        for name, indexes in plan:
            bound = tuple((i, getattr(self._sinks[i], name)) for i in indexes)
            setattr(self, name, _make(name, bound, report))
        #: The methods some sink overrides.
        self._names = frozenset(name for name, _ in plan)


for _name in _METHODS:  # what a fan-out calls for a method none of its sinks overrides
    setattr(_Fanout, _name, staticmethod(_nothing))
del _name


def _make(
    name: str,
    bound: tuple[tuple[int, Callable[..., None]], ...],
    report: Callable[[int, str], None],
) -> Callable[..., None]:
    if len(bound) == 1:  # the common case, kept lean: this is on the per-event path
        index, only = bound[0]

        def call_one(*args: Any) -> None:
            try:
                only(*args)
            except Exception:  # noqa: BLE001 - a sink must never break a run
                report(index, name)

        return call_one

    def call(*args: Any) -> None:
        for i, fn in bound:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a sink must never break a run
                report(i, name)

    return call


def combine(sinks: Sequence[Observer]) -> Observer:
    """Return one instrument that fans out to ``sinks`` (a no-op one when empty)."""
    return _Fanout(sinks) if sinks else NOOP


# The step attempt whose code is running; tasks and threads a step starts inherit it.
current_step: ContextVar[StepInfo | None] = ContextVar("stepstream_current_step", default=None)
