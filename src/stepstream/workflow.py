"""``Workflow``: a class whose ``@step`` methods form an event-driven graph."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import random
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import pydantic
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from stepstream._fanrun import FanRun
from stepstream._graph import add_free_step, compiled_graph, step_names
from stepstream._instrument import Redactor, RunInfo
from stepstream._journal import Engine
from stepstream._runtime import Caller, Run
from stepstream._spec import STEP_ATTR, StepConfig, StepSpec
from stepstream._stream import BoundedEventStream, EventStream, Overflow
from stepstream._text import error_text
from stepstream._validation import GRAPH_CHECKS, NO_VALIDATION, graph_problems
from stepstream.context import BaseSerializer, Context
from stepstream.context._snapshot import SavedRun, Snapshot
from stepstream.errors import ContextStateError, WorkflowRuntimeError, WorkflowValidationError
from stepstream.events import Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.resource import ResourceManager, _check_resource_configs
from stepstream.telemetry._observers import WorkflowObservers

__all__ = ["Workflow"]

_RUNNING: set[asyncio.Task[None]] = set()


class Workflow:
    """Subclass it, decorate methods with ``@step``, then ``handler = wf.run(...)``.

    The step graph is validated when the class is first instantiated; every problem
    is listed in one WorkflowValidationError (``disable_validation=True`` skips the
    event-flow checks, ``skip_graph_checks`` some of them). ``timeout`` (seconds, or
    None) bounds a whole run; ``verbose=True`` prints a line per step start, step end
    and streamed event to stderr; ``num_concurrent_runs`` bounds how many runs of this
    instance execute at once (the others wait their turn); ``workflow_name`` names the
    workflow (also in telemetry). ``resource_manager`` keeps the values of the steps'
    ``Annotated[T, Resource(...)]`` parameters; by default each workflow instance has
    its own (see :mod:`stepstream.resource`). Spans and metrics go to the global
    OpenTelemetry providers unless ``tracer_provider`` / ``meter_provider`` are given.
    ``redact(event, payload)`` is applied to each event's payload (a fresh dict) before
    any span event, log line or OTLP record is built: return the payload to record, or
    None to record the event's type and seq only. ``durable=True`` (or a database URL)
    makes runs survive a crash (``stepstream.durable``); ``version`` names the version of
    the workflow's code its durable runs record (by default a hash of the step graph).
    """

    _stepstream_free_steps: ClassVar[dict[str, StepConfig]]

    def __init__(  # noqa: PLR0917 - the LlamaIndex Workflows signature, positional order too
        self,
        timeout: float | None = 45.0,
        disable_validation: bool = False,
        verbose: bool = False,
        resource_manager: ResourceManager | None = None,
        num_concurrent_runs: int | None = None,
        runtime: object | None = None,
        workflow_name: str | None = None,
        skip_graph_checks: set[str] | None = None,
        serializer: BaseSerializer | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        stream_limit: int | None = None,
        stream_overflow: Overflow = "fail",
        redact: Redactor | None = None,
        durable: bool | str | None = None,
        version: str | None = None,
    ) -> None:
        cls_name = type(self).__name__
        _check_options(cls_name, timeout, num_concurrent_runs, runtime, skip_graph_checks)
        if version is not None and not (isinstance(version, str) and version.strip()):
            msg = (
                f"{cls_name}(version=...) must be a non-empty string naming the version of "
                f"the workflow's code (e.g. '2'), or None for a hash of its step graph; got "
                f"{version!r}"
            )
            raise WorkflowValidationError(msg)
        # The version of this workflow's code a durable run records (see docs/durable.md).
        self._version = version
        self._runtime = _engine_for(cls_name, runtime, durable)
        _check_stream_bound(cls_name, stream_limit, stream_overflow)
        self._stream_bound = (stream_limit, stream_overflow)
        if redact is not None and not callable(redact):
            msg = (  # type: ignore[unreachable]
                f"{cls_name}(redact=...) must be a function (event, payload) -> payload or "
                f"None, got {type(redact).__name__}"
            )
            raise WorkflowValidationError(msg)
        self._redact = redact
        if resource_manager is not None and not isinstance(resource_manager, ResourceManager):
            msg = (  # type: ignore[unreachable]
                f"{cls_name}(resource_manager=...) must be a "
                "stepstream.resource.ResourceManager (or None for a new one), got "
                f"{type(resource_manager).__name__}"
            )
            raise WorkflowValidationError(msg)
        self.timeout = timeout
        self.verbose = verbose
        self._resource_manager = (
            resource_manager if resource_manager is not None else ResourceManager()
        )
        self._skip = frozenset(skip_graph_checks or ())
        if disable_validation:
            self._skip |= {NO_VALIDATION}
        self._graph = compiled_graph(type(self), self._skip)
        self._callers = tuple(_make_caller(spec, self) for spec in self._graph.specs)
        self._observers = WorkflowObservers(tracer_provider, meter_provider, verbose)
        self._name = workflow_name
        self._serializer = serializer
        # The name runs carry in telemetry: the explicit name, else the class name.
        self._run_name = workflow_name or cls_name
        self._num_concurrent_runs = num_concurrent_runs
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        if self._runtime is not None:
            self._runtime.register(self)

    @classmethod
    def _add_free_step(cls, config: StepConfig) -> None:
        add_free_step(cls, config)

    @classmethod
    def add_step(cls, func: Callable[..., Any]) -> None:
        """Attach the ``@step``-decorated free function ``func`` to this workflow class."""
        config = getattr(func, STEP_ATTR, None)
        name = getattr(func, "__name__", repr(func))
        if not isinstance(config, StepConfig):
            msg = (
                f"{cls.__name__}.add_step({name}): {name} is missing the @step decorator; "
                "decorate it with @step first"
            )
            raise WorkflowValidationError(msg)
        if name in step_names(cls):
            msg = (
                f"{cls.__name__}.add_step({name}): workflow {cls.__name__} already has a step "
                f"named {name!r}; rename the function"
            )
            raise WorkflowValidationError(msg)
        add_free_step(cls, dataclasses.replace(config, is_method=False))

    @property
    def steps(self) -> tuple[str, ...]:
        """Names of this workflow's steps."""
        return self._graph.names

    @property
    def workflow_name(self) -> str:
        """The name given as ``workflow_name=``, else ``module.ClassName``."""
        cls = type(self)
        return self._name or f"{cls.__module__}.{cls.__qualname__}"

    @property
    def events(self) -> list[type[Event]]:
        """Every event type a step accepts or returns, in step order."""
        found: dict[type[Event], None] = {}
        for spec in self._graph.specs:
            found.update(dict.fromkeys((*spec.accepts, *spec.returns)))
        return list(found)

    @property
    def start_event_class(self) -> type[StartEvent]:
        """The StartEvent type this workflow's start step accepts."""
        return self._graph.start_event_type

    @property
    def stop_event_class(self) -> type[StopEvent]:
        """The StopEvent type its steps return (the first one declared)."""
        stops = [t for t in self.events if issubclass(t, StopEvent)]
        return stops[0] if stops else StopEvent

    def validate(
        self, *, validate_resource_configs: bool = True, validate_resources: bool = False
    ) -> bool:
        """Check the whole graph again; True when the workflow asks for human input.

        Raises WorkflowValidationError listing every problem. "Asks for human input"
        means a step returns an InputRequiredEvent or accepts a HumanResponseEvent.
        With ``validate_resource_configs`` every ``ResourceConfig`` is loaded and the
        resource factories' parameters are checked (no factory is called). With
        ``validate_resources`` every resource is also resolved through the workflow's
        resource manager (factories are called; cached values are kept for its runs),
        in a loop of its own: call it outside a running event loop.
        """
        checks = self._skip - {NO_VALIDATION}
        problems = graph_problems(self._graph.specs, frozenset(checks))
        if validate_resource_configs:
            problems.extend(_check_resource_configs(self._graph.specs))
        if validate_resources and not problems:
            problems.extend(self._resolve_all_resources())
        if problems:
            msg = f"workflow {type(self).__name__} is invalid ({len(problems)} problem(s)):"
            raise WorkflowValidationError(msg, problems)
        return any(
            issubclass(t, InputRequiredEvent) for s in self._graph.specs for t in s.returns
        ) or any(issubclass(t, HumanResponseEvent) for s in self._graph.specs for t in s.accepts)

    def _resolve_all_resources(self) -> list[str]:
        """One line per step resource parameter whose resolution failed."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            msg = (
                f"{type(self).__name__}.validate(validate_resources=True) resolves the "
                "resources in an event loop of its own and cannot run inside one; call it "
                "before asyncio.run(...), or from a worker thread (asyncio.to_thread)"
            )
            raise WorkflowRuntimeError(msg)
        return asyncio.run(_resource_problems(self._resource_manager, self._graph.specs))

    def run(
        self,
        ctx: Context[Any] | None = None,
        start_event: StartEvent | None = None,
        **kwargs: Any,
    ) -> WorkflowHandler:
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
        run_id = kwargs.pop("run_id", None)
        ctx = self._context_for(ctx)
        saved = ctx._begin()  # noqa: SLF001 - the workflow is the context's friend
        # A continued run sends no start event: it picks up its saved work.
        start = self._start_event(start_event, kwargs) if saved is None else saved.routing
        run = self._new_run(loop, ctx, run_id, saved)
        engine = self._runtime
        if engine is not None:
            engine.prepare(self, run, start, saved)
        handler = self._launch(run, start)
        if engine is not None:
            engine.started(handler)
        return handler

    def _new_run(
        self,
        loop: asyncio.AbstractEventLoop,
        ctx: Context[Any],
        run_id: str | None,
        saved: SavedRun | None,
    ) -> Run:
        """The run of this workflow with context ``ctx`` (continuing ``saved``, if any)."""
        if saved is not None:
            run_id = saved.run_id
        # 128 random bits as hex, like a trace id. random (reseeded after fork) rather
        # than uuid4: os.urandom is a syscall, and every GIL release on the loop thread
        # can wait a switch interval behind a busy export thread.
        info = RunInfo(self._run_name, run_id or f"{random.getrandbits(128):032x}", time.time_ns())
        info.redact = self._redact
        run = (FanRun if self._graph.fan else Run)(
            info,
            self._graph,
            self._callers,
            self._observers.for_run(),
            self._stream(loop, info, saved.stream_seq if saved is not None else 0),
            self.timeout,
            loop,
            self._resource_manager,
            ctx,
        )
        ctx._attach(run)  # noqa: SLF001
        if saved is not None:
            info.attempt = saved.attempt + 1
            if saved.trace_id is not None and saved.span_id is not None:
                info.resumed = (saved.trace_id, saved.span_id)
        return run

    def _launch(
        self,
        run: Run,
        start: Event | Snapshot,
        context: contextvars.Context | None = None,
    ) -> WorkflowHandler:
        """Start ``run``'s task (in ``context``, else a copy of the caller's); its handler."""
        body = run.main(start) if self._num_concurrent_runs is None else self._queued(run, start)
        name = f"stepstream {type(self).__name__} {run.info.run_id}"
        task = run.loop.create_task(body, name=name, context=context)
        # The loop keeps only weak references to tasks: hold the run until it ends, so
        # a caller that drops its handler does not get the run garbage-collected.
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        return WorkflowHandler(run, task)

    def _stream(self, loop: asyncio.AbstractEventLoop, info: RunInfo, seq: int) -> EventStream:
        limit, overflow = self._stream_bound
        if limit is None:
            return EventStream(loop, seq)
        where = f"run {info.run_id} of workflow {info.workflow}"
        return BoundedEventStream(loop, seq, limit, overflow, where)

    def _context_for(self, ctx: Context[Any] | None) -> Context[Any]:
        if ctx is None:
            return Context(self)
        owner = ctx._workflow  # noqa: SLF001 - the workflow is the context's friend
        if not isinstance(self, type(owner)):
            msg = (
                f"{type(self).__name__}.run(ctx=...): this context belongs to workflow "
                f"{type(owner).__name__}; pass a Context made for {type(self).__name__}"
            )
            raise ContextStateError(msg)
        return ctx

    def _context_spec(self) -> tuple[str, type[Any] | None, BaseSerializer | None]:
        """What a Context needs of its workflow: name, state type, default serializer."""
        return self.workflow_name, self._graph.state_type, self._serializer

    @property
    def serializer(self) -> BaseSerializer | None:
        """The serializer a Context of this workflow saves with (None: JSON)."""
        return self._serializer

    async def _queued(self, run: Run, start: Event | Snapshot) -> None:
        """Run once one of the ``num_concurrent_runs`` slots (per event loop) is free."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self._num_concurrent_runs or 1)
        async with slots:
            await run.main(start)

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
    if spec.slots:
        return _slots_caller(fn, spec)
    call = _event_caller(fn, spec)
    if spec.fan_in is not None:  # the join's event is the CollectionReleaseEvent
        return lambda ctx, ev, **resources: call(ctx, list(ev.events), **resources)
    return call


def _slots_caller(fn: Callable[..., Any], spec: StepSpec) -> Caller:
    """The caller of a step with several event parameters: ``ev`` is one event per slot."""
    # Each argument as an index into the slots, -1 for the context: parsed once here,
    # not at every call.
    order = tuple(-1 if a == "ctx" else int(a[2:]) for a in spec.arg_order)
    named = tuple((name, -1 if a == "ctx" else int(a[2:])) for name, a in spec.keyword_args)

    def call(ctx: Context[Any], evs: tuple[Event, ...], **resources: Any) -> Any:
        args = (ctx if i < 0 else evs[i] for i in order)
        kwargs = {name: ctx if i < 0 else evs[i] for name, i in named}
        return fn(*args, **kwargs, **resources)

    return call


def _event_caller(fn: Callable[..., Any], spec: StepSpec) -> Caller:
    order = spec.arg_order
    if spec.resources or spec.keyword_args:
        return _keyword_caller(fn, order, spec.keyword_args)
    if order == ("ctx", "ev"):
        return fn
    if order == ("ev",):
        return lambda _ctx, ev: fn(ev)
    if order == ("ev", "ctx"):
        return lambda ctx, ev: fn(ev, ctx)
    return lambda ctx, ev: fn(*(ctx if a == "ctx" else ev for a in order))


async def _resource_problems(manager: ResourceManager, specs: tuple[StepSpec, ...]) -> list[str]:
    problems: list[str] = []
    for spec in specs:
        for definition in spec.resources:
            try:
                with manager.resolution_scope():
                    await manager.get(definition.resource)
            except Exception as exc:  # noqa: BLE001 - each failure is one reported problem
                problems.append(
                    f"step {spec.name!r}, parameter {definition.name!r}: "
                    f"{type(exc).__name__}: {error_text(exc)} (resolving {definition.resource!r})"
                )
    return problems


def _check_stream_bound(name: str, limit: int | None, overflow: object) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        msg = (
            f"{name}(stream_limit=...) must be a positive integer (the most unread events "
            f"a run's stream holds) or None for no bound, got {limit!r}"
        )
        raise WorkflowValidationError(msg)
    if overflow not in {"fail", "drop_oldest"}:
        msg = f"{name}(stream_overflow=...) must be 'fail' or 'drop_oldest', got {overflow!r}"
        raise WorkflowValidationError(msg)


def _check_options(
    name: str,
    timeout: float | None,
    num_concurrent_runs: int | None,
    runtime: object | None,
    skip_graph_checks: set[str] | None,
) -> None:
    if timeout is not None and not timeout > 0:
        msg = f"{name}(timeout=...) must be a positive number of seconds or None, got {timeout!r}"
        raise WorkflowValidationError(msg)
    problems = []
    if num_concurrent_runs is not None and (
        isinstance(num_concurrent_runs, bool)
        or not isinstance(num_concurrent_runs, int)
        or num_concurrent_runs < 1
    ):
        problems.append(
            f"num_concurrent_runs must be an integer greater than 0 or None, got "
            f"{num_concurrent_runs!r}"
        )
    if runtime is not None and not isinstance(runtime, Engine):
        problems.append(
            "runtime= takes a durable runtime (stepstream.durable.DBOSRuntime) or None, "
            f"got {type(runtime).__name__}"
        )
    unknown = sorted(set(skip_graph_checks or ()) - GRAPH_CHECKS)
    if unknown:
        problems.append(
            f"unknown graph check name(s) in skip_graph_checks: {', '.join(unknown)}; valid "
            f"names are {', '.join(sorted(GRAPH_CHECKS))}"
        )
    if problems:
        msg = f"{name}(...) options are invalid"
        raise WorkflowValidationError(msg, problems)


def _engine_for(name: str, runtime: object | None, durable: bool | str | None) -> Engine | None:
    """The durable engine that runs this workflow's runs: ``runtime=``, ``durable=``, or None."""
    if durable is None or durable is False:
        return runtime if isinstance(runtime, Engine) else None
    if runtime is not None:
        msg = f"{name}(...): pass runtime= or durable=, not both (durable= makes its own runtime)"
        raise WorkflowValidationError(msg)
    if durable is not True and not isinstance(durable, str):
        msg = (  # type: ignore[unreachable]
            f"{name}(durable=...) must be True, a database URL ('sqlite:///path' or "
            f"'postgresql://...') or None, got {durable!r}"
        )
        raise WorkflowValidationError(msg)
    try:
        # Imported here, and only here: in-memory runs never load the durable engine (DBOS).
        from stepstream.durable import default_runtime  # noqa: PLC0415
    except ImportError as exc:
        msg = (
            f"{name}(durable=...) needs the durable extra, which is not installed "
            f"({exc}); install it with pip install 'stepstream[durable]'"
        )
        raise WorkflowValidationError(msg) from exc
    return default_runtime(None if durable is True else durable)


def _keyword_caller(
    fn: Callable[..., Any], order: tuple[str, ...], keyword_args: tuple[tuple[str, str], ...]
) -> Caller:
    """A caller that also passes ``**resources`` (and keyword context/event parameters)."""
    if not keyword_args:
        if order == ("ctx", "ev"):
            return fn
        if order == ("ev",):
            return lambda _ctx, ev, **resources: fn(ev, **resources)
        if order == ("ev", "ctx"):
            return lambda ctx, ev, **resources: fn(ev, ctx, **resources)

    def call(ctx: Context[Any], ev: Event, **resources: Any) -> Any:
        args = (ctx if a == "ctx" else ev for a in order)
        named = {name: ctx if a == "ctx" else ev for name, a in keyword_args}
        return fn(*args, **named, **resources)

    return call
