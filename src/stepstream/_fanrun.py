"""The run of a workflow with fan-out, fan-in or several-parameter steps.

:class:`FanRun` is a :class:`~stepstream._runtime.Run` whose routing core is a
:class:`~stepstream._fanrouter.FanRouter`: it routes returned lists as batches, keeps
each invocation's batch scope, and starts the joins a batch releases. Workflows
without such steps run as a plain ``Run`` and pay nothing for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from stepstream import _internal_events as internal
from stepstream import _outcome
from stepstream._fanrouter import FanRouter, Start, bare_problem
from stepstream._routing import QUEUED, Action, RunState, Scope, Snapshot, Waiter
from stepstream._routing import result_action as _action
from stepstream._runtime import Run
from stepstream._steps import work
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event, StopEvent

if TYPE_CHECKING:
    from stepstream._instrument import StepInfo

__all__ = ["FanRun"]

_log = logging.getLogger("stepstream")


class FanRun(Run):
    """A run that routes ``list[E]`` returns as batches and releases their joins."""

    __slots__ = ("_warned", "fan")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fan = FanRouter(self.router.graph, self.info.workflow, self.info.run_id)
        self.router = self.fan
        self._warned: set[tuple[str, str, str]] = set()

    def resume(self, snap: Snapshot) -> None:
        """Take up a saved run: its batches, partial joins and pending invocations."""
        self.restore_counts(snap)
        for step, start, key in self.fan.resume(snap):
            self.instrument.event_sent(self.info, None, start[2], step)
            self._begin([start], key)

    def dispatch(
        self,
        event: Event,
        origin: StepInfo | None,
        target: str | None,
        scope: Scope | None = None,
        key: int | None = None,
    ) -> None:
        """Deliver ``event`` in ``scope`` (a returned event's) or in none (a sent one)."""
        if scope is not None and origin is not None:
            problem = bare_problem(self.fan.graph.spec(origin.step), event)
            if problem is not None:
                raise WorkflowRuntimeError(problem)
        self._route(event, origin, target, scope or ())

    def _route(
        self, event: Event, origin: StepInfo | None, target: str | None, scope: Scope
    ) -> None:
        router = self.fan
        if router.state is not RunState.RUNNING:
            return
        self.instrument.event_sent(self.info, origin, event, target)
        decision = router.route(event, origin, target, origin is None, scope)
        if isinstance(decision, Waiter):
            if not decision.token.done():
                decision.token.set_result(event)
        elif decision is None:
            if self.expose_internal:
                unhandled = internal.unhandled(event, idle=self.idle())
                if unhandled is not None:
                    self.stream.push_internal(unhandled)
        else:
            self._begin(decision)
        if router.dropped:
            self._warn_dropped()

    def fan_out(self, inv: StepInfo, events: list[Any]) -> None:
        """Route the elements of the list ``inv`` returned as one batch, in order."""
        router = self.fan
        scope = router.open_batch(router.graph.index[inv.step], inv.scope, inv)
        for event in events:
            action = _action(event, router.state)
            if action is Action.STOP:
                assert isinstance(event, StopEvent)  # noqa: S101 - result_action checked it
                self.end(_outcome.succeeded(event, inv))
            elif action is Action.STREAM:
                self.write(event, inv)
            elif action is Action.ROUTE:
                self._route(event, inv, None, scope)
        self.finished(scope)

    def finished(self, scope: Scope) -> None:
        """An invocation in ``scope`` is done: start what the batches now over release."""
        if self.fan.state is RunState.RUNNING:
            self._begin(self.fan.finished(scope))

    def _begin(self, starts: list[Start], key: int | None = None) -> None:
        """Start the step tasks ``starts`` (one re-running saved invocation ``key``)."""
        tg = self._tg
        assert tg is not None  # noqa: S101 - runs inside main()
        names = self.fan.graph.names
        for index, worker, event, origin, ticket in starts:
            if worker == QUEUED:
                if self.expose_internal:
                    self.stream.push_internal(internal.queued(names[index], event))
                continue
            job = self.job(index, event, ticket, key)
            task = tg.create_task(work(self, index, worker, event, origin, job, ticket))
            self._tasks[task] = job
            task.add_done_callback(self._tasks.pop)

    def _warn_dropped(self) -> None:
        """Log, once per run for each step and reason, an event a join could not take."""
        for dropped in self.fan.dropped:
            if dropped not in self._warned:
                self._warned.add(dropped)
                step, kind, why = dropped
                _log.warning(
                    "stepstream: run %s of %s: %s was not collected by step %r, because "
                    "%s; a list[E] step collects only the events returned inside a "
                    "fan-out batch (further such events are not reported)",
                    self.info.run_id,
                    self.info.workflow,
                    kind,
                    step,
                    why,
                )
        self.fan.dropped.clear()
