"""The routing core of a run: every decision, no I/O, no event loop.

:class:`Router` holds what a run decides with: its :class:`RunState`, the step graph,
each step's free worker slots and backlog, the ``wait_for_event`` waiters and the
``collect_events`` joins. Its methods take an event and return what to do with it
(start these step invocations, answer that waiter, queue it, refuse it with a message);
the run (``_runtime.Run``) carries the decisions out with asyncio. Being plain data, the
same decisions can be unit-tested without a loop, and journaled and replayed.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from stepstream._collect import Collector
from stepstream._graph import Graph
from stepstream.context._snapshot import Snapshot
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event, InputRequiredEvent, StopEvent
from stepstream.retry_policy import RetryPolicy

__all__ = [
    "QUEUED",
    "Action",
    "Router",
    "RunState",
    "Scope",
    "Snapshot",
    "Ticket",
    "Waiter",
    "default_waiter_id",
    "result_action",
    "retry_delay",
]

OriginT = TypeVar("OriginT")
TokenT = TypeVar("TokenT")

_ABSENT: Any = object()

#: The worker slot :meth:`Router.deliver` gives a step that got the event in its backlog.
QUEUED = -1

#: The fan-out batches a delivery belongs to, outermost first (empty: none).
Scope = tuple[str, ...]


class Ticket:
    """What a delivery carries besides its event, in a run with fan-out or fan-in steps.

    ``scope``: the batches the invocation works in (what it returns joins them too);
    ``args``: for a step with several event parameters, one event per parameter;
    ``origins``: the producers of the events a join collected (for span links).
    Plain deliveries carry no ticket (None).
    """

    __slots__ = ("args", "origins", "scope")

    def __init__(
        self,
        scope: Scope,
        args: tuple[Event, ...] | None = None,
        origins: tuple[Any, ...] = (),
    ) -> None:
        self.scope = scope
        self.args = args
        self.origins = origins


class RunState(enum.Enum):
    """A run's lifecycle; every "has the run ended" check reads this one value.

    RUNNING: steps are invoked, events routed and streamed. ENDING: the outcome is
    decided; in-flight steps are being cancelled, and nothing they send or write is
    accepted. ENDED: the outcome is published and the stream closed.
    """

    RUNNING = "running"
    ENDING = "ending"
    ENDED = "ended"


class Action(enum.Enum):
    """What the run does with a value a step returned."""

    NOTHING = "nothing"  # None, or the run is no longer running
    STOP = "stop"  # a StopEvent: the run ends with it
    STREAM = "stream"  # an InputRequiredEvent: written to the stream for the caller
    ROUTE = "route"  # any other event: delivered to a waiter or the steps that accept it
    FAN_OUT = "fan_out"  # a list: each element routed, as one batch
    INVALID = "invalid"  # not an Event: the step fails


class Waiter(Generic[TokenT]):
    """A ``wait_for_event`` registration; ``token`` is the run's, opaque here.

    ``restored`` is True when the registration was saved with the run's context and
    is now taken up again by the re-run step (its waiter event was already streamed).
    """

    __slots__ = ("event_type", "requirements", "restored", "token", "waiter_id")

    def __init__(
        self,
        event_type: type[Event],
        requirements: Mapping[str, Any],
        token: TokenT,
        waiter_id: str | None = None,
    ) -> None:
        self.event_type = event_type
        self.requirements = dict(requirements)
        self.token = token
        self.waiter_id = waiter_id
        self.restored = False

    def matches(self, event: Event) -> bool:
        """Tell whether ``event`` is of the awaited type and meets every requirement."""
        return isinstance(event, self.event_type) and all(
            event.get(k, _ABSENT) == v for k, v in self.requirements.items()
        )


class Router(Generic[OriginT, TokenT]):
    """The decisions of one run over ``graph``; ``workflow`` and ``run_id`` name it.

    ``OriginT`` is what the run records as an event's producer (a step attempt) and
    ``TokenT`` what it attaches to a waiter (a future); the router only stores them.
    """

    __slots__ = (
        "_backlogs",
        "_collectors",
        "_free",
        "dormant",
        "graph",
        "held",
        "run_id",
        "state",
        "waiters",
        "workflow",
    )

    def __init__(self, graph: Graph, workflow: str, run_id: str) -> None:
        self.graph = graph
        self.workflow = workflow
        self.run_id = run_id
        self.state = RunState.RUNNING
        self.waiters: list[Waiter[TokenT]] = []
        # Events from the caller that nothing took yet, for waiters that register later.
        self.held: list[Event] = []
        # Waiters saved with a context, by waiter id, until their step waits again.
        self.dormant: dict[str, tuple[type[Event], dict[str, Any]]] = {}
        # Free worker slots per step, popped from the end: slot 0 is used first.
        self._free = [list(range(s.num_workers - 1, -1, -1)) for s in graph.specs]
        # Created on first use: most steps never have a backlog (and parked runs are many).
        self._backlogs: list[deque[tuple[Event, OriginT, Ticket | None]] | None] = [None] * len(
            graph.specs
        )
        self._collectors: dict[tuple[Any, ...], list[Collector[OriginT]]] = {}

    # -- lifecycle ------------------------------------------------------------------

    def end(self) -> bool:
        """Move RUNNING to ENDING; False when the run was already ending or ended."""
        if self.state is not RunState.RUNNING:
            return False
        self.state = RunState.ENDING
        return True

    def close(self) -> bool:
        """Move to ENDED; False when the run had already ended."""
        if self.state is RunState.ENDED:
            return False
        self.state = RunState.ENDED
        return True

    def active_steps(self) -> list[str]:
        """Names of the steps with an invocation in flight, in graph order."""
        specs = self.graph.specs
        return [
            s.name for s, free in zip(specs, self._free, strict=True) if len(free) < s.num_workers
        ]

    # -- routing --------------------------------------------------------------------

    def send_problem(
        self, event: Event, target: str | None, from_caller: bool = False
    ) -> str | None:
        """Why ``event`` sent now (to ``target``) could not be delivered; None if it can.

        An event from the caller (not a step) that nothing takes yet is no problem: it
        is held for a waiter that registers later, unless a waiter for its type is
        already there and the event fails its requirements.
        """
        name = type(event).__name__
        if self.state is not RunState.RUNNING:
            # One answer from the moment the outcome is decided: the ending phase too.
            return (
                f"send_event({name}): run {self.run_id} of workflow {self.workflow} has "
                "ended, so nothing can receive it; check handler.done() before sending"
            )
        graph = self.graph
        if target is not None:
            return self._target_problem(event, target)
        if graph.route(type(event)) or any(w.matches(event) for w in self.waiters):
            return None
        waited = [w for w in self.waiters if isinstance(event, w.event_type)]
        if waited:
            wanted = "; ".join(
                ", ".join(f"{k}={v!r}" for k, v in w.requirements.items()) for w in waited
            )
            return (
                f"{name} does not meet the requirements of the step waiting for it "
                f"({wanted}) and no step of workflow {self.workflow} accepts it; send a "
                f"{name} whose fields match"
            )
        if from_caller:
            return None
        return (
            f"no step of workflow {self.workflow} accepts {name} and no step is waiting "
            f"for it; add a step that takes {name}, or wait for it with ctx.wait_for_event"
        )

    def _target_problem(self, event: Event, target: str) -> str | None:
        name = type(event).__name__
        spec = self.graph.spec(target)
        if spec is None:
            return (
                f"send_event(..., step={target!r}): workflow {self.workflow} has no "
                f"step {target!r}; its steps are {', '.join(self.graph.names)}"
            )
        if spec.fan_in is not None and spec.accepts_type(type(event)):
            listed = " | ".join(t.__name__ for t in spec.accepts)
            return (
                f"send_event({name}, step={target!r}): step {target!r} takes "
                f"list[{listed}], a fan-in that collects only the events returned inside "
                "a fan-out batch; return the event from a step of the batch instead"
            )
        if not spec.accepts_type(type(event)):
            accepted = ", ".join(t.__name__ for t in spec.accepts)
            takers = ", ".join(self.graph.takers(type(event))) or "none"
            return (
                f"send_event({name}, step={target!r}): step {target!r} does not accept "
                f"{name} (it accepts {accepted}); steps that accept {name}: {takers}"
            )
        return None

    def deliver(
        self, event: Event, origin: OriginT, target: str | None, hold: bool = False
    ) -> Waiter[TokenT] | list[tuple[int, int]] | None:
        """Decide where ``event`` goes.

        Returns the waiter it answers (now removed), or one (step index, worker slot)
        pair per accepting step: a slot to start an invocation in now, or ``QUEUED``
        when the step had no free slot and got the event in its backlog. When nothing
        takes it: with ``hold``, keeps it for a later waiter and returns None;
        otherwise raises WorkflowRuntimeError.
        """
        indices = self._takers(event, target, hold)
        if not isinstance(indices, tuple):
            return indices
        starts: list[tuple[int, int]] = []
        for i in indices:
            free = self._free[i]
            if free:
                starts.append((i, free.pop()))
            else:
                backlog = self._backlogs[i]
                if backlog is None:
                    backlog = self._backlogs[i] = deque()
                backlog.append((event, origin, None))
                starts.append((i, QUEUED))
        return starts

    def _takers(
        self, event: Event, target: str | None, hold: bool
    ) -> tuple[int, ...] | Waiter[TokenT] | None:
        """The steps ``event`` goes to, the waiter it answers (now removed), or None.

        None when the event is held (``hold``, or a saved waiter may want it); raises
        WorkflowRuntimeError when nothing takes it.
        """
        if target is not None:
            return (self.graph.index[target],)
        if self.waiters:
            for waiter in self.waiters:
                if waiter.matches(event):
                    self.waiters.remove(waiter)
                    return waiter
        indices = self.graph.route(type(event))
        if indices:
            return indices
        if hold or self._dormant_match(event):
            self.held.append(event)
            return None
        raise WorkflowRuntimeError(self.send_problem(event, None))

    def in_flight(self) -> int:
        """How many step invocations hold a worker slot."""
        return sum(
            s.num_workers - len(free) for s, free in zip(self.graph.specs, self._free, strict=True)
        )

    def has_backlog(self) -> bool:
        """Whether any step has events waiting for a free worker slot."""
        return any(self._backlogs)

    def next_job(self, index: int) -> tuple[Event, OriginT, Ticket | None] | None:
        """The next queued event for a worker of step ``index`` that just finished one."""
        backlog = self._backlogs[index]
        if not backlog or self.state is not RunState.RUNNING:
            return None
        return backlog.popleft()

    def release(self, index: int, worker: int) -> None:
        """Give worker slot ``worker`` of step ``index`` back."""
        self._free[index].append(worker)

    # -- waiters and joins ----------------------------------------------------------

    def add_waiter(
        self,
        event_type: type[Event],
        requirements: Mapping[str, Any],
        token: TokenT,
        waiter_id: str | None = None,
    ) -> tuple[Waiter[TokenT], Event | None]:
        """Register a waiter for ``event_type`` events meeting ``requirements``.

        Returns it with the held event it takes at once (then it is not registered),
        or with None.
        """
        waiter = Waiter(event_type, requirements, token, waiter_id)
        if waiter_id is not None and self.dormant.pop(waiter_id, None) is not None:
            waiter.restored = True
        for event in self.held:
            if waiter.matches(event):
                self.held.remove(event)
                return waiter, event
        self.waiters.append(waiter)
        return waiter, None

    def _dormant_match(self, event: Event) -> bool:
        return any(
            isinstance(event, t) and all(event.get(k, _ABSENT) == v for k, v in r.items())
            for t, r in self.dormant.values()
        )

    def remove_waiter(self, waiter: Waiter[TokenT]) -> None:
        """Forget ``waiter`` (answered, timed out or cancelled); no-op if already gone."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def collect(
        self, step: str | None, event: Event, origin: OriginT, expected: Sequence[type[Event]]
    ) -> tuple[list[Event], list[OriginT]] | None:
        """Add ``event`` to the join of ``expected`` for ``step``; the events once complete.

        A cheap key (step, size and ends of the list) finds the candidate joins; a
        candidate then confirms the whole list, in O(1) when the same list is passed again.
        """
        if not expected:
            msg = "collect_events needs at least one expected event type"
            raise WorkflowRuntimeError(msg)
        key = (step, len(expected), expected[0], expected[-1])
        candidates = self._collectors.setdefault(key, [])
        collector = next((c for c in candidates if c.serves(expected)), None)
        if collector is None:
            collector = Collector(expected)
            candidates.append(collector)
        return collector.add(event, origin)

    # -- saving and continuing --------------------------------------------------------

    def snapshot(
        self, in_flight: Sequence[tuple[int, Event, Ticket | None, int | None]]
    ) -> Snapshot:
        """What a saved context needs: with the invocations ``in_flight``.

        Each is (step index, event, ticket, invocation number).
        """
        names = self.graph.names
        snap = Snapshot()
        work = [*in_flight]
        for i, backlog in enumerate(self._backlogs):
            work.extend((i, event, ticket, None) for event, _, ticket in backlog or ())
        for i, event, ticket, number in work:
            if ticket is not None:
                snap.tickets[len(snap.queue)] = (ticket.scope, ticket.args)
            if number is not None:
                snap.keys[len(snap.queue)] = number
            snap.queue.append((names[i], event))
        snap.held = list(self.held)
        for w in self.waiters:
            if w.waiter_id is not None:
                snap.waiters.append((w.waiter_id, w.event_type, dict(w.requirements)))
        snap.waiters.extend((wid, t, dict(r)) for wid, (t, r) in self.dormant.items())
        for key, collectors in self._collectors.items():
            for c in collectors:
                if pending := c.pending():
                    snap.joins.append((key[0], c.expected, pending))
        return snap

    def restore(self, snap: Snapshot, origin: OriginT) -> list[tuple[str, Event, int | None]]:
        """Load ``snap`` into this new router; return the work to start.

        Each is (step, event, invocation number of one that was in flight, else None).

        ``origin`` stands for the producer of the restored joins' events (not saved).
        """
        self.held.extend(snap.held)
        for waiter_id, event_type, requirements in snap.waiters:
            self.dormant[waiter_id] = (event_type, requirements)
        for step, expected, events in snap.joins:
            for event in events:
                self.collect(step, event, origin, expected)
        return [
            (step, event, snap.keys.get(n))
            for n, (step, event) in enumerate(snap.queue)
            if step in self.graph.index
        ]


def result_action(result: Any, state: RunState) -> Action:
    """What to do with ``result``, returned by a step while the run is in ``state``."""
    if result is None:
        return Action.NOTHING
    if not isinstance(result, Event):
        running = state is RunState.RUNNING
        return Action.FAN_OUT if isinstance(result, list) and running else Action.INVALID
    if state is not RunState.RUNNING:
        return Action.NOTHING
    if isinstance(result, StopEvent):
        return Action.STOP
    if isinstance(result, InputRequiredEvent):
        return Action.STREAM
    return Action.ROUTE


def retry_delay(  # noqa: PLR0917 - one decision, all of its inputs
    policy: RetryPolicy | None,
    state: RunState,
    elapsed: float,
    attempt: int,
    error: BaseException,
    seed_key: str | None = None,
) -> float | None:
    """Seconds to wait before retrying a failed attempt, or None to fail the step.

    A policy whose ``next`` takes ``seed`` gets one derived from ``seed_key`` (run id
    and step) and the attempt, so its jitter is the same when a run is replayed.
    """
    if policy is None or state is not RunState.RUNNING or not isinstance(error, Exception):
        return None
    if seed_key is not None and _takes_seed(policy):
        digest = hashlib.sha256(f"{seed_key}:{attempt}".encode()).hexdigest()
        return policy.next(elapsed, attempt, error, seed=int(digest, 16) & 0xFFFFFFFF)
    return policy.next(elapsed, attempt, error)


_SEEDED: dict[type, bool] = {}


def _takes_seed(policy: RetryPolicy) -> bool:
    kind = type(policy)
    takes = _SEEDED.get(kind)
    if takes is None:
        try:
            params = inspect.signature(policy.next).parameters
        except (TypeError, ValueError):  # a builtin or C callable: pass no seed
            params = {}  # type: ignore[assignment]
        takes = _SEEDED[kind] = "seed" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
    return takes


def default_waiter_id(
    step: str | None, event_type: type[Event], requirements: Mapping[str, Any]
) -> str:
    """The id of a wait that names none: stable across processes, so a saved wait is found."""
    wanted = ",".join(f"{k}={v!r}" for k, v in sorted(requirements.items()))
    return f"{step or '<caller>'}:{event_type.__module__}.{event_type.__qualname__}:{wanted}"
