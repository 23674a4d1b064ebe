"""``Workflow``: a class whose ``@step`` methods form an event-driven graph."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pydantic
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from stepstream._graph import add_free_step, compiled_graph
from stepstream._instrument import RunInfo
from stepstream._runtime import Caller, Run
from stepstream._spec import StepConfig, StepSpec
from stepstream._stream import EventStream
from stepstream.errors import WorkflowRuntimeError, WorkflowValidationError
from stepstream.events import StartEvent
from stepstream.handler import WorkflowHandler
from stepstream.telemetry._observers import WorkflowObservers

__all__ = ["Workflow"]

_RUNNING: set[asyncio.Task[None]] = set()


class Workflow:
    """Subclass it, decorate methods with ``@step``, then ``handler = wf.run(...)``.

    The step graph is validated when the class is first instantiated; every problem
    is listed in one WorkflowConfigurationError (a WorkflowValidationError).
    ``timeout`` (seconds, or None) bounds a whole run; ``verbose=True`` prints a line
    per step start, step end and streamed event to stderr. Spans and metrics go to the
    global OpenTelemetry providers unless ``tracer_provider`` / ``meter_provider`` are
    given.
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
        self._observers = WorkflowObservers(tracer_provider, meter_provider, verbose)

    @classmethod
    def _add_free_step(cls, config: StepConfig) -> None:
        add_free_step(cls, config)

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
            info,
            self._graph,
            self._callers,
            self._observers.for_run(),
            EventStream(loop),
            self.timeout,
            loop,
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
