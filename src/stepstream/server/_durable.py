"""A durable server (``WorkflowServer(durable=...)``, ``stepstream serve --durable``).

Every served workflow runs durably on one ``DBOSRuntime``; a run's id is its handler's
id, so the runtime's database is the durable handler store: :meth:`DurableRuns.lookup`
and :meth:`DurableRuns.query` answer from it what this process does not hold (runs that
ended before a restart, parked runs, runs of other processes). In memory, as for an
in-memory server, are the records of the runs executing here (and the recently ended
ones): runs started here, and runs the runtime resumes here after a restart or reloads
after they were parked (:meth:`DurableRuns.resumed`). A run's event log then holds its
events from the resume on; a subscriber's earlier ones are read from the journal
(:mod:`._durable_stream`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from stepstream.errors import WorkflowValidationError
from stepstream.events import StartEvent, StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.server._envelope import BadRequest, encode_event
from stepstream.server._handlers import HandlerRecord, HandlerStatus, HandlerStore
from stepstream.server._log import RunLog
from stepstream.server._runs import Runs, correlation, logger, run_outcome, traced_name
from stepstream.server._steplog import StepFrameRouter
from stepstream.telemetry import observe
from stepstream.workflow import Workflow

if TYPE_CHECKING:
    from stepstream.durable import DBOSRuntime
    from stepstream.durable._records import RunRecord

__all__ = ["DurableRuns", "server_runtime"]

#: How a durable run's state reads as a handler's status.
_STATUS: dict[str, HandlerStatus] = {
    "running": "running",
    "parked": "running",
    "ok": "completed",
    "error": "failed",
    "timeout": "failed",
    "cancelled": "cancelled",
}
#: How long a /run request waits between looks at the database for a run not executing
#: here, when no commit of its journal is notified (the end is recorded by DBOS just
#: after the journal's end entry: the look after that entry's notice may come too early).
_RECHECK = 0.5


def server_runtime(
    durable: object, workflows: Iterable[Workflow], idle_release_after: float | None
) -> DBOSRuntime:
    """The runtime of a durable server: ``durable`` (a DBOSRuntime), or one for its URL.

    ``True`` is the default database (``Workflow(durable=True)``'s). The runtime's idle
    release is set to ``idle_release_after`` unless ``durable`` is a runtime already.
    """
    try:
        from stepstream.durable import DBOSRuntime, default_runtime  # noqa: PLC0415
    except ImportError as exc:
        msg = (
            f"WorkflowServer(durable=...) needs the durable extra, which is not installed "
            f"({exc}); install it with pip install 'stepstream[durable]'"
        )
        raise WorkflowValidationError(msg) from None
    if isinstance(durable, DBOSRuntime):
        runtime = durable
    elif durable is True or isinstance(durable, str):
        runtime = default_runtime(None if durable is True else durable)
        runtime.idle_release_after = idle_release_after
    else:
        msg = (
            "WorkflowServer(durable=...) takes True, a database URL ('sqlite:///path', "
            f"'postgresql://...') or a DBOSRuntime, got {durable!r}"
        )
        raise WorkflowValidationError(msg)
    for workflow in workflows:
        runtime.adopt(workflow)
    return runtime


class DurableRuns(Runs):
    """The runs of a durable server (see the module docstring)."""

    def __init__(
        self,
        store: HandlerStore,
        event_log_limit: int | None,
        runtime: DBOSRuntime,
        served: Mapping[str, Any],
    ) -> None:
        super().__init__(store, event_log_limit)
        self.runtime = runtime
        self._served = served  # name -> Served (the server's table, filled later too)
        self._launched_here = False
        self._first: dict[str, int] = {}  # run id -> the seq its log starts at
        self._changed: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Launch the runtime (the runs that did not end resume now) and follow its runs."""
        self.runtime.watch(self)
        if not self.runtime.is_launched:
            self._launched_here = True
            # The runs it resumes are observed as launched here: their step frames too.
            with observe(StepFrameRouter(self._steps_of)):
                await self.runtime.launch()

    def _steps_of(self, run_id: str) -> RunLog | None:
        record = self.store.get(run_id)
        return record.steps if record is not None and record.handler is not None else None

    async def aclose(self) -> None:
        """Stop this process's runs without ending them: they resume at the next start."""
        self._closing = True
        self.runtime.unwatch(self)
        if self._launched_here:
            await self.runtime.destroy()
        pumps = list(self._pumps.values())
        for task in pumps:
            task.cancel()
        if pumps:
            await asyncio.wait(pumps, timeout=5.0)

    # -- names ----------------------------------------------------------------------------

    def served_name(self, workflow: str) -> str | None:
        """The name a workflow (its ``workflow_name``) is served under, if it is served."""
        for name, served in self._served.items():
            if served.workflow.workflow_name == workflow:
                return str(name)
        return None

    def workflow_of(self, record: HandlerRecord) -> str:
        """The ``workflow_name`` of the workflow a handler's run belongs to."""
        return self._served[record.workflow_name].workflow.workflow_name  # type: ignore[no-any-return]

    # -- runs started or resumed here ------------------------------------------------------

    def queued(self, workflow: Workflow) -> bool:
        """Whether runs of ``workflow`` start through its cluster-wide queue."""
        return self.runtime.queued(workflow)

    async def submit(
        self, name: str, workflow: Workflow, start_event: StartEvent, handler_id: str | None
    ) -> HandlerRecord:
        """Enqueue a run of ``workflow`` on its cluster-wide queue (``num_concurrent_runs``).

        It starts in whichever replica's queue takes it, once the cluster has a free
        slot; its record is the database's until then (here, too, if another runs it).
        """
        if self._closing:
            msg = "the server is shutting down; start the run elsewhere or later"
            raise BadRequest(msg, status=503)
        handler_id = handler_id or secrets.token_urlsafe(12)
        await self.runtime.enqueue(workflow, start_event, handler_id)
        record = await self.lookup(handler_id)
        assert record is not None  # noqa: S101 - recorded before enqueue returned
        logger.info("run_enqueued", extra=correlation(record))
        return record

    def _run_options(self, handler_id: str) -> dict[str, Any]:
        return {"run_id": handler_id}  # the handler's id is the durable run's id

    def resumed(
        self, handler: WorkflowHandler, workflow: str, first_seq: int, trace_id: str | None
    ) -> None:
        """A run resumed, reloaded or (queued) started here: keep its record, follow it."""
        name = self.served_name(workflow)
        if name is None or self._closing:
            return
        served = self._served[name]
        record = HandlerRecord(
            handler_id=handler.run_id,
            workflow_name=name,
            run_id=handler.run_id,
            log=RunLog(self.event_log_limit),
            steps=RunLog(self.event_log_limit),
            handler=handler,
            traced_name=traced_name(served.workflow),
            trace_id=trace_id,
        )
        self.store.remove(record.handler_id)
        self.store.add(record)
        self._first[record.run_id] = first_seq
        self._follow(record, handler, first_seq)
        begins = self.runtime.first_start(handler)  # a queued run, started here
        logger.info("run_started" if begins else "run_resumed", extra=correlation(record))
        self._notify()

    def failed_over(self, run_id: str, workflow: str, from_instance: str, to_instance: str) -> None:
        """This replica took the run over from a dead one (it resumes on any replica)."""
        name = self.served_name(workflow)
        logger.info(
            "run_failed_over",
            extra={
                **correlation(),
                "handler_id": run_id,
                "run_id": run_id,
                "workflow": workflow,
                "workflow_name": name,
                "from_instance": from_instance,
                "to_instance": to_instance,
            },
        )

    def parked(self, run_id: str) -> None:
        """A run of this process was released: stop following it (it is in the database)."""
        task = self._pumps.get(run_id)
        if task is not None:
            task.cancel()

    async def _pump(self, record: HandlerRecord, handler: WorkflowHandler, first_seq: int) -> None:
        """Fill the record's log with the run's recorded events; finish it at the run's end."""
        log = record.log
        seq = first_seq
        pending = False
        try:
            async for event in handler.stream_events():
                if isinstance(event, StopEvent) and self.runtime.is_pending(handler):
                    pending = True  # its task stopped (shutdown): that end is not recorded
                    break
                log.append(encode_event(seq, event))
                seq += 1
        except Exception:  # noqa: BLE001 - logged: the stream broke; the database has the run
            logger.exception("event_stream_failed", extra=correlation(record))
        finally:
            if handler.done() and not pending:
                status, result, error = run_outcome(handler)
                record.finish(status, result, error)
                log.close()
                record.steps.close()
                self.store.finished(record)
                logger.info(
                    "run_finished", extra={**correlation(record), "status": status, "error": error}
                )
            else:  # parked, or stopped with the server: it goes on elsewhere or later
                record.handler = None
                log.move()
                record.steps.move()
                if not self._closing and self.store.get(record.handler_id) is record:
                    self.store.remove(record.handler_id)  # unless it was reloaded already
                    logger.info("run_parked", extra=correlation(record))
            if self._pumps.get(record.handler_id) in {None, asyncio.current_task()}:
                self._first.pop(record.run_id, None)
            self._notify()

    def live(self, run_id: str) -> tuple[HandlerRecord, int] | None:
        """The in-memory record of a run executing (or just ended) here, and its first seq."""
        record = self.store.get(run_id)
        if record is None or (record.handler is None and not record.finished):
            return None
        return record, self._first.get(run_id, 0)

    # -- what the database knows -----------------------------------------------------------

    def _record(self, run: RunRecord) -> HandlerRecord | None:
        name = self.served_name(run.workflow)
        if name is None:
            return None
        record = HandlerRecord(
            handler_id=run.run_id,
            workflow_name=name,
            run_id=run.run_id,
            log=RunLog(),
            traced_name=traced_name(self._served[name].workflow),
            trace_id=run.trace_id,
            status=_STATUS[run.state],
            started_at=run.started_at,
            updated_at=run.updated_at,
        )
        if run.ended:
            record.completed_at = run.updated_at
            record.error = run.error
            if run.state in {"ok", "cancelled"}:
                record.result = run.terminal
            record.log.close()
            record.steps.close()
        return record

    async def lookup(self, handler_id: str) -> HandlerRecord | None:
        """The handler of run ``handler_id``: in memory, else as the database has it."""
        found = self.store.get(handler_id)
        if found is not None:
            return found
        run = await self.runtime.run(handler_id)
        return self._record(run) if run is not None else None

    async def query(
        self, statuses: Iterable[str] | None, workflows: Iterable[str] | None, keep: int
    ) -> list[HandlerRecord]:
        """Handlers in start order: every run not ended, and the newest ``keep`` ended ones."""
        going = await self.runtime.runs(ended=False)
        runs = [*going, *await self.runtime.runs(limit=keep, ended=True)]
        by_id: dict[str, HandlerRecord] = {}
        for run in runs:
            record = self.store.get(run.run_id) or self._record(run)
            if record is not None:
                by_id[record.handler_id] = record
        for record in self.store.query():  # started here, not in the database yet
            by_id.setdefault(record.handler_id, record)
        wanted_status = None if statuses is None else set(statuses)
        wanted_name = None if workflows is None else set(workflows)
        records = [
            r
            for r in by_id.values()
            if (wanted_status is None or r.status in wanted_status)
            and (wanted_name is None or r.workflow_name in wanted_name)
        ]
        return sorted(records, key=lambda r: r.started_at)

    async def taken(self, handler_id: str) -> bool:
        """Whether a run already has id ``handler_id`` (here or in the database)."""
        if self.store.get(handler_id) is not None:
            return True
        return await self.runtime.run(handler_id) is not None

    # -- waiting, cancelling, sending --------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        """A future resolved when a run resumes, parks or ends here (shared: do not cancel)."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    async def wait(self, record: HandlerRecord) -> HandlerRecord:
        """Return the handler's final record once its run has ended (parked runs too)."""
        run_id = record.run_id
        follower = None  # told of the commits of a run executing in another process
        try:
            while True:
                task = self._pumps.get(record.handler_id)
                if task is not None and not task.done():
                    await asyncio.wait({task})
                    continue
                current = await self.lookup(run_id)
                if current is None or current.finished:
                    return current or record
                if follower is None:
                    follower = self.runtime.follow(run_id)
                    continue  # look again: it may have ended before the follower listened
                told = asyncio.ensure_future(follower.wait(_RECHECK))
                try:
                    waiting: set[asyncio.Future[Any]] = {told, self.changed()}
                    await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
                finally:
                    told.cancel()
        finally:
            if follower is not None:
                follower.close()

    async def cancel(self, record: HandlerRecord) -> None:
        """Cancel the run for good: reloaded here first if it is parked."""
        if record.handler is None and not record.finished:
            run = await self.runtime.run(record.run_id)
            if run is not None and run.state == "running":  # executing elsewhere (a replica)
                await self.runtime.cancel(record.run_id)
            else:  # parked: reloaded here, so that its stream ends with the cancel
                handler = await self.runtime.handler(record.run_id)
                await handler.cancel_run()
        else:
            await super().cancel(record)
        await self.wait(record)

    async def send(self, record: HandlerRecord, event: Any, step: str | None) -> None:
        """Send ``event`` to a run that does not execute here (parked, or elsewhere)."""
        await self.runtime.send_event(record.run_id, event, step)
