"""``Context``: what a step (and the caller, through ``handler.ctx``) can do in a run.

The Context is a facade: everything but the store is done by the run, reached through
the small :class:`RunPort` interface, so this module does not import the runtime. A
Context can also exist before its run (``Context(workflow)``, to stage state), and be
saved with ``to_dict()`` and restored with ``Context.from_dict()`` to continue the run
later, in another process too.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from stepstream._instrument import RunInfo
from stepstream.context._snapshot import SavedRun, Snapshot, from_payload, to_payload
from stepstream.context.serializers import BaseSerializer, JsonSerializer
from stepstream.context.state_store import MODEL_T, DictState, InMemoryStateStore
from stepstream.errors import ContextSerdeError, ContextStateError, WorkflowRuntimeError
from stepstream.events import Event, StopEvent

if TYPE_CHECKING:
    from stepstream.retry_policy import RetryInfo
    from stepstream.workflow import Workflow

__all__ = ["Context", "RunPort"]

EventT = TypeVar("EventT", bound=Event)

#: The Context of the step whose code is running (``Context.get_step_context()``).
current_context: ContextVar[Context[Any] | None] = ContextVar(
    "stepstream_current_context", default=None
)


class RunPort(Protocol):
    """What a Context asks of its run (implemented by the runtime's ``Run``)."""

    def stream_write(self, event: Event) -> None:
        """Append ``event`` to the run's stream (from any thread)."""
        ...

    def send(self, event: Event, target: str | None) -> None:
        """Route ``event`` (to ``target`` only, when given); raise if it cannot arrive."""
        ...

    def collect(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Add ``event`` to the calling step's join of ``expected``; the events once complete."""
        ...

    async def wait_for(
        self,
        event_type: type[Event],
        waiter_event: Event | None,
        waiter_id: str | None,
        requirements: Mapping[str, Any] | None,
        timeout: float | None,
    ) -> Event:
        """Suspend until an ``event_type`` event meeting ``requirements`` arrives."""
        ...

    @property
    def info(self) -> RunInfo:
        """The run's identity (its id, workflow name, trace)."""
        ...

    def is_running(self) -> bool:
        """Whether the run has not ended yet."""
        ...

    def active_steps(self) -> list[str]:
        """The steps with an invocation in flight."""
        ...

    def save(self) -> tuple[bool, int, Snapshot]:
        """Whether it runs, its next stream position, and its routing state."""
        ...

    def result(self) -> StopEvent | None:
        """The StopEvent it ended with; None while running or after a failure."""
        ...

    def in_own_step(self) -> bool:
        """Whether the calling code is a step of this run."""
        ...

    def retry_info(self) -> RetryInfo:
        """Where the calling step stands in its retries."""
        ...

    def step_key(self) -> str:
        """The calling step invocation's stable id (``run_id:step:n``)."""
        ...


class Context(Generic[MODEL_T]):
    """The run as a step sees it: send, collect, wait for and stream events; a store.

    One Context exists per run; ``handler.ctx`` is the same object, so the caller can
    send events (a human's answer) into the run. ``Context(workflow)`` makes one before
    the run, to set state up and then ``workflow.run(ctx=ctx)``; ``previous_context``
    (what ``to_dict()`` returned) continues a saved run instead.
    """

    __slots__ = ("_run", "_saved", "_serializer", "_store", "_workflow")

    def __init__(
        self,
        workflow: Workflow,
        previous_context: Mapping[str, Any] | None = None,
        serializer: BaseSerializer | None = None,
    ) -> None:
        self._workflow = workflow
        self._run: RunPort | None = None
        # Made when first needed: most runs never save their context or touch the state.
        self._serializer = serializer
        self._store: InMemoryStateStore[MODEL_T] | None = None
        self._saved: SavedRun | None = None
        if previous_context is not None:
            self._restore(previous_context)

    def _restore(self, previous_context: Mapping[str, Any]) -> None:
        name, _, _ = self._workflow._context_spec()  # noqa: SLF001 - the workflow's friend
        ser = self._default_serializer()
        saved = from_payload(previous_context, ser)
        if saved.workflow != name:
            msg = (
                f"this context was saved from workflow {saved.workflow}, not {name}; restore "
                f"it with Context.from_dict({saved.workflow}(...), data)"
            )
            raise ContextSerdeError(msg)
        self._saved = saved
        if saved.state:
            restored = InMemoryStateStore.from_dict(saved.state, ser)
            self._store = cast("InMemoryStateStore[MODEL_T]", restored)

    def _default_serializer(self) -> BaseSerializer:
        """The serializer given, else the workflow's, else JSON."""
        if self._serializer is None:
            _, _, default = self._workflow._context_spec()  # noqa: SLF001 - a friend
            self._serializer = default or JsonSerializer()
        return self._serializer

    @property
    def store(self) -> InMemoryStateStore[MODEL_T]:
        """The run's state: ``await ctx.store.get("key")``, ``set``, ``edit_state()``..."""
        store = self._store
        if store is None:
            _, state_type, _ = self._workflow._context_spec()  # noqa: SLF001 - a friend
            store = self._store = _fresh_store(state_type)
        return store

    @classmethod
    def from_dict(
        cls,
        workflow: Workflow,
        data: Mapping[str, Any],
        serializer: BaseSerializer | None = None,
    ) -> Context[Any]:
        """Restore a context saved with ``to_dict()``; ``workflow.run(ctx=...)`` continues it."""
        return cls(workflow, previous_context=data, serializer=serializer)

    def to_dict(
        self, serializer: BaseSerializer | None = None, *, include_state: bool = True
    ) -> dict[str, Any]:
        """Save the run: its state, pending work, waits and trace, as JSON-ready data.

        Call it on ``handler.ctx`` (while the run waits, e.g. for a human, or after it
        ended). ``Context.from_dict(workflow, data)`` then ``workflow.run(ctx=...)``
        continues the run, in the same trace; the step invocations that were in flight
        run again from the top (a ``wait_for_event`` they reach does not stream its
        waiter event again). ``serializer`` defaults to the context's (JSON).
        """
        run = self._run
        if run is not None and run.in_own_step():
            msg = (
                "to_dict() is only available from handler code, not from within steps; "
                "call it on handler.ctx"
            )
            raise ContextStateError(msg)
        return self._checkpoint(serializer, include_state=include_state)

    def _checkpoint(
        self, serializer: BaseSerializer | None = None, *, include_state: bool = True
    ) -> dict[str, Any]:
        """``to_dict()`` from anywhere: the durable journal saves the run inside a step."""
        ser = serializer if serializer is not None else self._default_serializer()
        saved = self._current()
        saved.state = self.store.to_dict(ser) if include_state else {}
        return to_payload(saved, ser)

    def _current(self) -> SavedRun:
        """The run as it stands now, or as it was restored (before it runs again)."""
        run = self._run
        name, _, _ = self._workflow._context_spec()  # noqa: SLF001 - the workflow's friend
        if run is None:
            saved = self._saved
            return SavedRun(workflow=name) if saved is None else _copy(saved)
        running, seq, routing = run.save()
        info = run.info
        return SavedRun(
            workflow=name,
            run_id=info.run_id,
            is_running=running,
            stream_seq=seq,
            routing=routing,
            trace_id=info.trace_id,
            span_id=info.span_id,
            attempt=info.attempt,
        )

    def _begin(self) -> SavedRun | None:
        """Before a run starts with this context: the saved run it continues, if any."""
        if self._run is not None and self._run.is_running():
            msg = (
                "cannot start a new run while this context's run is still running; wait "
                "for it to end (await handler) or use a new Context"
            )
            raise ContextStateError(msg)
        saved, self._saved = self._saved, None
        return saved if saved is not None and saved.is_running else None

    def _attach(self, run: RunPort) -> None:
        """Become the context of ``run``."""
        self._run = run

    def _live(self, what: str) -> RunPort:
        run = self._run
        if run is None:
            msg = f"{what} called before the workflow started; call workflow.run(ctx=ctx) first"
            raise ContextStateError(msg)
        return run

    @property
    def is_running(self) -> bool:
        """Whether the run has started and not ended (False before it and after)."""
        run = self._run
        if run is None:
            return self._saved is not None and self._saved.is_running
        return run.is_running()

    @staticmethod
    def get_step_context() -> Context[Any]:
        """The Context of the step whose code is running (e.g. from a helper it calls)."""
        ctx = current_context.get()
        if ctx is None:
            msg = "Context.get_step_context() may only be called from within a step function"
            raise WorkflowRuntimeError(msg)
        return ctx

    async def running_steps(self) -> list[str]:
        """Names of the steps with an invocation in flight."""
        return self._live("running_steps()").active_steps()

    def get_result(self) -> Any:
        """The run's result (deprecated: ``await handler`` instead)."""
        warnings.warn(
            "Context.get_result() is deprecated and will be removed in a future release. "
            "Prefer awaiting the WorkflowHandler returned by Workflow.run: "
            "`result = await workflow.run(..., ctx=ctx)`.",
            DeprecationWarning,
            stacklevel=2,
        )
        run = self._live("get_result()")
        stop = run.result()
        if stop is None:
            msg = f"Workflow run with run_id {run.info.run_id} is not complete"
            raise WorkflowRuntimeError(msg)
        return stop.result if type(stop) is StopEvent else stop

    def retry_info(self) -> RetryInfo:
        """Where the calling step stands in its retries (``retry_number`` 0 on the first try)."""
        return self._live("retry_info()").retry_info()

    @property
    def step_key(self) -> str:
        """A stable id of the calling step's invocation: ``"{run_id}:{step}:{n}"``.

        The same for every retry of the invocation and when it runs again after a crash
        (durable runs) or from a saved context: use it as an idempotency key for side
        effects (a payment, an email) so that a re-run does not repeat them.
        """
        return self._live("ctx.step_key").step_key()

    def write_event_to_stream(self, ev: Event | None) -> None:
        """Append ``ev`` to the run's stream (``handler.stream_events()``); ignore None."""
        run = self._run  # the hot path: one check, one call
        if run is not None and ev is not None:
            run.stream_write(ev)
        elif ev is not None:
            self._live("write_event_to_stream()")

    def send_event(self, ev: Event, step: str | None = None) -> None:
        """Route ``ev`` to the steps that accept it, or only to ``step`` when given."""
        self._live("send_event()").send(ev, step)

    def collect_events(
        self, ev: Event, expected: Sequence[type[Event]], buffer_id: str | None = None
    ) -> list[Event] | None:
        """Buffer ``ev``; once one event of each expected type arrived, return them in order.

        Returns None until the join is complete. Repeat a type in ``expected`` to wait
        for several events of it (``[Result] * 10``). ``buffer_id`` is accepted for
        LlamaIndex compatibility: joins are kept per step and expected list already.
        """
        del buffer_id
        return self._live("collect_events()").collect(ev, expected)

    async def wait_for_event(
        self,
        event_type: type[EventT],
        waiter_event: Event | None = None,
        waiter_id: str | None = None,
        requirements: Mapping[str, Any] | None = None,
        timeout: float | None = 2000,
    ) -> EventT:
        """Suspend this step until an event of ``event_type`` arrives, and return it.

        The waiter is registered first, then ``waiter_event`` (if any) is written to
        the stream, so an answer sent in reaction to it is never missed; an answer the
        caller sent before is held for the waiter and returned at once. Only events
        whose fields equal ``requirements`` match. The step body is not run again.
        ``waiter_id`` names the wait (it survives a saved and restored context);
        ``timeout`` is in seconds (None: wait forever) and raises WorkflowTimeoutError.
        """
        # The run matched the event with isinstance(event, event_type).
        return await self._live("wait_for_event()").wait_for(  # type: ignore[return-value]
            event_type, waiter_event, waiter_id, requirements, timeout
        )


def _fresh_store(state_type: type[Any] | None) -> InMemoryStateStore[Any]:
    initial = state_type() if state_type is not None else DictState()
    return InMemoryStateStore(initial)


def _copy(saved: SavedRun) -> SavedRun:
    return SavedRun(
        workflow=saved.workflow,
        run_id=saved.run_id,
        is_running=saved.is_running,
        stream_seq=saved.stream_seq,
        routing=saved.routing,
        trace_id=saved.trace_id,
        span_id=saved.span_id,
        attempt=saved.attempt,
    )
