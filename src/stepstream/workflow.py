"""``Workflow``: a class whose ``@step`` methods form an event-driven graph."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pydantic
from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from stepstream._graph import Graph
from stepstream._instrument import Instrument, RunInfo, combine
from stepstream._runtime import Caller, Run
from stepstream._stream import EventStream
from stepstream._verbose import VerbosePrinter
from stepstream._version import __version__
from stepstream.errors import WorkflowRuntimeError, WorkflowValidationError
from stepstream.events import StartEvent
from stepstream.handler import WorkflowHandler
from stepstream.step import STEP_ATTR, StepConfig, StepSpec, read_spec
from stepstream.telemetry._switch import telemetry_active
from stepstream.validation import graph_problems

__all__ = ["Workflow"]

_GRAPH_ATTR = "_stepstream_graph"
_RUNNING: set[asyncio.Task[None]] = set()
_FREE_ATTR = "_stepstream_free_steps"


class Workflow:
    """Subclass it, decorate methods with ``@step``, then ``handler = wf.run(...)``.

    The step graph is validated when the class is first instantiated; every problem
    is listed in one WorkflowValidationError. ``timeout`` (seconds, or None) bounds a
    whole run; ``verbose=True`` prints a line per step start, step end and streamed
    event to stderr. Spans and metrics go to the global OpenTelemetry providers unless
    ``tracer_provider`` / ``meter_provider`` are given.
    """

    _stepstream_free_steps: ClassVar[dict[str, StepConfig]]

    def __init__(
        self,
        timeout: float | None = 45.0,
        verbose: bool = False,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            msg = (
                f"{type(self).__name__}(timeout=...) must be a positive number of seconds "
                f"or None, got {timeout!r}"
            )
            raise WorkflowValidationError(msg)
        self.timeout = timeout
        self.verbose = verbose
        self._graph = compiled_graph(type(self))
        self._callers = tuple(_make_caller(spec, self) for spec in self._graph.specs)
        self._tracer = trace.get_tracer("stepstream", __version__, tracer_provider=tracer_provider)
        self._meter = metrics.get_meter("stepstream", __version__, meter_provider=meter_provider)
        self._telemetry: Instrument | None = None
        self._explicit_providers = tracer_provider is not None or meter_provider is not None
        self._sinks: list[Instrument] = []
        if verbose:
            self._sinks.append(VerbosePrinter())
        self._rebuild_instruments()

    @classmethod
    def _add_free_step(cls, config: StepConfig) -> None:
        if _FREE_ATTR not in cls.__dict__:
            setattr(cls, _FREE_ATTR, {})
        cls.__dict__[_FREE_ATTR][config.name] = config
        # Invalidate the compiled graph of this class and its subclasses.
        for klass in [cls, *_subclasses(cls)]:
            if _GRAPH_ATTR in klass.__dict__:
                delattr(klass, _GRAPH_ATTR)

    def _add_sink(self, sink: Instrument) -> None:
        """Observe this workflow's runs with one more sink (the CLI's live view)."""
        self._sinks.append(sink)
        self._rebuild_instruments()

    def _rebuild_instruments(self) -> None:
        self._observed_instrument: Instrument | None = None  # made by the next observed run
        # With no SDK and no logging configured, telemetry would record nothing: runs
        # then skip it entirely (see telemetry_active()).
        self._dark_instrument = combine(self._sinks)

    def _observed(self) -> Instrument:
        instrument = self._observed_instrument
        if instrument is None:
            if self._telemetry is None:
                # Imported here: a process that never records does not load structlog.
                from stepstream.telemetry._sink import TelemetrySink  # noqa: PLC0415

                self._telemetry = TelemetrySink(self._tracer, self._meter)
            instrument = combine([self._telemetry, *self._sinks])
            self._observed_instrument = instrument
        return instrument

    @property
    def steps(self) -> tuple[str, ...]:
        """Names of this workflow's steps."""
        return self._graph.names

    def run(self, *, start_event: StartEvent | None = None, **kwargs: Any) -> WorkflowHandler:
        """Start a run in the running event loop and return its handler at once.

        Keyword arguments become fields of the start event; or pass ``start_event=``.
        """
        name = type(self).__name__
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = (
                f"{name}.run() needs a running asyncio event loop; call it from async "
                "code, e.g. `async def main(): handler = wf.run(...)` with asyncio.run(main())"
            )
            raise WorkflowRuntimeError(msg) from None
        event = self._start_event(start_event, kwargs)
        # 128 random bits as hex, like a trace id. random (reseeded after fork) rather
        # than uuid4: os.urandom is a syscall, and every GIL release on the loop thread
        # can wait a switch interval behind a busy export thread.
        info = RunInfo(name, f"{random.getrandbits(128):032x}", time.time_ns())
        run = Run(
            info=info,
            graph=self._graph,
            callers=self._callers,
            instrument=(
                self._observed()
                if self._explicit_providers or telemetry_active()
                else self._dark_instrument
            ),
            stream=EventStream(loop),
            timeout=self.timeout,
            loop=loop,
        )
        task = loop.create_task(run.main(event), name=f"stepstream {name} {info.run_id}")
        # The loop keeps only weak references to tasks: hold the run until it ends, so
        # a caller that drops its handler does not get the run garbage-collected.
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        return WorkflowHandler(run, task)

    def _start_event(self, given: StartEvent | None, kwargs: dict[str, Any]) -> StartEvent:
        start_type = self._graph.start_event_type
        where = f"{type(self).__name__}.run()"
        if given is not None:
            if kwargs:
                msg = (
                    f"{where}: pass either start_event= or keyword fields, not both "
                    f"(got {', '.join(kwargs)})"
                )
                raise WorkflowValidationError(msg)
            if not isinstance(given, start_type):
                msg = (
                    f"{where}: start_event must be a {start_type.__name__}, "
                    f"got {type(given).__name__}"
                )
                raise WorkflowValidationError(msg)
            return given
        if start_type is not StartEvent:
            fields = start_type.model_fields
            unknown = [k for k in kwargs if k not in fields]
            if unknown:
                names = ", ".join(map(repr, unknown))
                msg = f"{where}: {start_type.__name__} has no field(s) {names}"
                raise WorkflowValidationError(msg, [f"known fields: {', '.join(fields) or 'none'}"])
        try:
            return start_type(**kwargs)
        except pydantic.ValidationError as exc:
            problems = [
                f"field {'.'.join(map(str, e['loc'])) or '(root)'!r}: {e['msg']}"
                for e in exc.errors()
            ]
            msg = f"{where}: the arguments do not fit {start_type.__name__}"
            raise WorkflowValidationError(msg, problems) from exc


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _collect_configs(cls: type[Workflow]) -> dict[str, StepConfig]:
    configs: dict[str, StepConfig] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            config = getattr(value, STEP_ATTR, None)
            if isinstance(config, StepConfig) and config.is_method:
                configs[attr] = config
            elif attr in configs and callable(value):
                del configs[attr]  # overridden by a plain method
        configs.update(vars(klass).get(_FREE_ATTR, {}))
    return configs


def compiled_graph(cls: type[Workflow]) -> Graph:
    """Return the validated step graph of ``cls`` (compiled once, then cached)."""
    cached = cls.__dict__.get(_GRAPH_ATTR)
    if isinstance(cached, Graph):
        return cached
    configs = _collect_configs(cls)
    problems: list[str] = []
    if not configs:
        problems.append(f"workflow {cls.__name__} has no steps; decorate its methods with @step")
    specs = [read_spec(c, problems) for c in configs.values()]
    if specs:
        problems.extend(graph_problems(specs))
    if problems:
        msg = f"workflow {cls.__name__} is invalid ({len(problems)} problem(s)):"
        raise WorkflowValidationError(msg, problems)
    graph = Graph(specs)
    setattr(cls, _GRAPH_ATTR, graph)
    return graph


def _make_caller(spec: StepSpec, wf: Workflow) -> Caller:
    fn: Callable[..., Any] = spec.fn.__get__(wf) if spec.is_method else spec.fn
    order = spec.arg_order
    if order == ("ctx", "ev"):
        return fn
    if order == ("ev",):
        return lambda _ctx, ev: fn(ev)
    if order == ("ev", "ctx"):
        return lambda ctx, ev: fn(ev, ctx)
    return lambda ctx, ev: fn(*(ctx if a == "ctx" else ev for a in order))
