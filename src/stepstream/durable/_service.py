"""What ``DBOSRuntime`` offers an application serving durable runs (``stepstream serve``).

Mixed into :class:`~stepstream.durable.DBOSRuntime`: adopt workflows built without a
runtime, read runs and their streams back from the database, send an event to a run
wherever it is (here, parked, or executing in another process), and be told when a run
resumes or is released here (:class:`~stepstream.durable._records.RunWatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stepstream.context.serializers import BaseSerializer, JsonSerializer
from stepstream.durable import _dbos_io, _dbos_replicas
from stepstream.durable._inputs import in_entry
from stepstream.durable._park_io import is_parked
from stepstream.durable._records import (
    ENDED,
    GOING,
    RunRecord,
    RunWatcher,
    delete_run,
    read_events,
    read_events_from,
    read_runs,
)
from stepstream.errors import WorkflowRuntimeError, WorkflowValidationError
from stepstream.events import Event

if TYPE_CHECKING:
    from stepstream.durable._park import Parking
    from stepstream.handler import WorkflowHandler
    from stepstream.workflow import Workflow

__all__ = ["JournalFollower", "RuntimeService"]


class JournalFollower:
    """Told when one run's journal is written (see :meth:`RuntimeService.follow`)."""

    def __init__(self, run_id: str) -> None:
        self._event = _dbos_replicas.LoopAwareEvent()
        self._stop: Callable[[], None] | None = None
        with contextlib.suppress(Exception):  # no notifications here: timeouts alone
            self._stop = _dbos_replicas.listen(run_id, _dbos_io.STREAM, self._event)

    async def wait(self, timeout: float) -> bool:
        """Wait for a commit (True) or ``timeout`` seconds (False); read the journal then."""
        if self._stop is None:
            await asyncio.sleep(timeout)
            return False
        told = await self._event.wait_async(timeout)
        self._event.clear()
        return told

    def close(self) -> None:
        """Stop listening (idempotent)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


class RuntimeService:
    """The serving side of a runtime (see the module docstring)."""

    database_url: str
    _workflows: dict[str, Workflow]
    _runs: dict[str, WorkflowHandler]
    _parking: Parking
    _watchers: list[RunWatcher]

    def register(self, workflow: Workflow) -> None:  # pragma: no cover - DBOSRuntime's
        """Know ``workflow`` by its name (DBOSRuntime.register)."""
        raise NotImplementedError

    def adopt(self, workflow: Workflow) -> None:
        """Run ``workflow``'s runs durably with this runtime (it was built without one).

        Call it before the runtime launches. A workflow durable on another runtime, or
        a second workflow with the same ``workflow_name``, is refused.
        """
        current: object = workflow._runtime  # noqa: SLF001 - the engine is the workflow's friend
        if current is self:
            return
        name = type(workflow).__name__
        if current is not None:
            other = getattr(current, "database_url", type(current).__name__)
            msg = (
                f"workflow {name} is durable on {other}, not on {self.database_url}, "
                "which this server keeps its runs in; build it without durable= or "
                "runtime= (the server makes it durable), or serve with its database"
            )
            raise WorkflowValidationError(msg)
        known = self._workflows.get(workflow.workflow_name)
        if known is not None and known is not workflow:
            msg = (
                f"two durable workflows are named {workflow.workflow_name!r}: a durable run "
                "is resumed by its workflow's name, so each instance needs its own; pass "
                f"{name}(workflow_name='...') to tell them apart"
            )
            raise WorkflowValidationError(msg)
        self.register(workflow)
        workflow._runtime = self  # type: ignore[assignment]  # noqa: SLF001 - a friend

    @property
    def idle_release_after(self) -> float | None:
        """Seconds a run may wait for events before it is released (None: never)."""
        return self._parking.idle_after

    @idle_release_after.setter
    def idle_release_after(self, seconds: float | None) -> None:
        from stepstream.durable._runtime import check_idle_release  # noqa: PLC0415 - a cycle

        check_idle_release(seconds)
        self._parking.idle_after = seconds

    def watch(self, watcher: RunWatcher) -> None:
        """Tell ``watcher`` of the runs resumed or released in this process from now on."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: RunWatcher) -> None:
        """Stop telling ``watcher`` (no-op if it was not watching)."""
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def _serializers(self) -> dict[str, BaseSerializer]:
        return {n: w.serializer or JsonSerializer() for n, w in self._workflows.items()}

    async def runs(
        self,
        run_ids: list[str] | None = None,
        limit: int | None = None,
        ended: bool | None = None,
    ) -> list[RunRecord]:
        """The runs ``run_ids`` as the database records them, oldest first.

        All runs when ``run_ids`` is None (the newest ``limit``); ``ended`` True or False
        keeps the runs that ended, or those that did not (parked ones included).
        """
        statuses = None if ended is None else (ENDED if ended else GOING)
        return await read_runs(self._serializers(), run_ids, limit, statuses)

    async def run(self, run_id: str) -> RunRecord | None:
        """Run ``run_id`` as the database records it; None if there is no such run."""
        found = await self.runs([run_id])
        return found[0] if found else None

    async def events(
        self, run_id: str, workflow: str, after: int = -1
    ) -> list[tuple[int, Event, bool]]:
        """Run ``run_id``'s recorded events after seq ``after``: (seq, event, terminal)."""
        known = self._workflows.get(workflow)
        serializer = known.serializer if known is not None else None
        return await read_events(serializer or JsonSerializer(), run_id, after)

    async def events_from(
        self, run_id: str, workflow: str, after: int, offset: int
    ) -> tuple[list[tuple[int, Event, bool]], int]:
        """As :meth:`events`, reading the journal from row ``offset`` on; and the next.

        ``offset`` is a previous call's second value (0 at first): a follower of a
        growing journal reads each commit once.
        """
        known = self._workflows.get(workflow)
        serializer = known.serializer if known is not None else None
        return await read_events_from(serializer or JsonSerializer(), run_id, after, offset)

    async def release_idle(self) -> int:
        """Release (park) now every run of this process that only waits for events.

        As ``idle_release_after`` does once they have waited that long (even when it is
        None); e.g. before a deploy. Returns how many were released.
        """
        return await self._parking.release_all()

    async def forget(self, run_id: str) -> None:
        """Delete run ``run_id`` and its journal from the database (it must have ended)."""
        await delete_run(run_id)

    def follow(self, run_id: str) -> JournalFollower:
        """Be woken when run ``run_id``'s journal grows, wherever the run executes.

        ``await follower.wait(timeout)`` returns once a commit to the journal was
        notified (Postgres: LISTEN/NOTIFY, a few milliseconds after the commit) or after
        ``timeout`` seconds (SQLite, or a lost notification: read again then). Close it
        (``follower.close()``) when done.
        """
        return JournalFollower(run_id)

    async def recorded(self, handler: WorkflowHandler) -> None:
        """Return once ``handler``'s new run is recorded in the database (or failed).

        From then on every process sharing the database finds it (an event or a cancel
        sent there reaches it). A run resumed here is recorded already.
        """
        journal: Any = handler._run.journal  # noqa: SLF001 - the runtime's own run
        begun = getattr(journal, "begun", None)
        if begun is not None:
            await asyncio.shield(begun)

    def first_start(self, handler: WorkflowHandler) -> bool:
        """Whether ``handler``'s run, taken up here, starts (from its workflow's queue)."""
        journal: Any = handler._run.journal  # noqa: SLF001 - the runtime's own run
        return bool(getattr(journal, "first_start", False))

    def live(self, run_id: str) -> WorkflowHandler | None:
        """The handler of run ``run_id`` if it executes in this process now."""
        found = self._runs.get(run_id)
        return found if found is not None and not found.done() else None

    def is_pending(self, handler: WorkflowHandler) -> bool:
        """Whether ``handler``'s run stopped here without ending (shutdown, release)."""
        journal: Any = handler._run.journal  # noqa: SLF001 - the runtime's own run
        return journal is not None and (
            journal.parked or (journal.failure is None and journal.aborted)
        )

    async def send_event(self, run_id: str, event: Event, step: str | None = None) -> None:
        """Send ``event`` to run ``run_id`` wherever it is; return once it is recorded.

        A run executing here takes it at once; a parked one is reloaded with it (in
        whichever process's queue takes it); one executing in another process gets it
        from its inbox at once on Postgres (the write is notified), else within a second.
        """
        live = self.live(run_id)
        if live is not None:
            await live.send_event(event, step)
            return
        record = await self.run(run_id)
        if record is None or record.ended:
            state = "no such run" if record is None else f"it ended ({record.state})"
            msg = f"cannot send {type(event).__name__} to durable run {run_id}: {state}"
            raise WorkflowRuntimeError(msg)
        serializer = self._serializers().get(record.workflow, JsonSerializer())
        await self._parking.post(run_id, in_entry(run_id, serializer, event, step))
        if self.live(run_id) is not None:  # it became live here meanwhile: hand it over
            await self._parking.drain(run_id)

    async def cancel(self, run_id: str) -> None:
        """Cancel durable run ``run_id``, wherever it is; final, as ``cancel_run()`` is.

        A run executing here is cancelled at once (``handler.cancel_run()``). Any other,
        pending, parked or executing in another process, is marked cancelled in the
        database (DBOS's cancel): it is never resumed, and the process running it ends
        it within about a second (its handler raises WorkflowCancelledError). Does
        nothing if the run already ended.
        """
        self._ready()
        live = self.live(run_id)
        if live is not None:
            await live.cancel_run()
            return
        status = await _dbos_io.run_status(run_id)
        if status is None:
            msg = f"there is no durable run {run_id} in the database {self.database_url}"
            raise WorkflowRuntimeError(msg)
        going = status[0] in {"PENDING", "ENQUEUED"}
        if going or (status[0] == "CANCELLED" and await is_parked(run_id)):
            await _dbos_io.cancel_run(run_id)
            _dbos_replicas.poke(run_id)  # the process running it reads its status now

    def _ready(self) -> None:  # pragma: no cover - DBOSRuntime's
        """Launch the runtime if it may be launched lazily (DBOSRuntime._ready)."""
        raise NotImplementedError

    def _resumed(
        self, handler: WorkflowHandler, workflow: str, first_seq: int, trace_id: str | None
    ) -> None:
        for watcher in self._watchers:
            watcher.resumed(handler, workflow, first_seq, trace_id)

    def _parked(self, run_id: str) -> None:
        for watcher in self._watchers:
            watcher.parked(run_id)
