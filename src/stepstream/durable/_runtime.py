"""``DBOSRuntime``: runs that survive a crash, on DBOS Transact (SQLite or Postgres).

Every durable run is one DBOS workflow (``stepstream.run``, id = the run id) whose body
is the run's journal writer (:mod:`._journal`); the run itself executes as any run does,
in its own task. On ``launch()`` DBOS re-invokes the workflows of runs that did not end;
:mod:`._recover` rebuilds each run from its journal and continues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepstream.context._snapshot import to_payload
from stepstream.context.serializers import BaseSerializer, JsonSerializer
from stepstream.durable import _dbos_io
from stepstream.durable._cluster import (
    DEFAULT_FAILOVER_AFTER,
    Cluster,
    check_failover_after,
    check_instance_id,
)
from stepstream.durable._journal import RunJournal
from stepstream.durable._park import Parking
from stepstream.durable._park_io import unpark
from stepstream.durable._records import RunWatcher
from stepstream.durable._replicas import ReplicaService
from stepstream.durable._service import RuntimeService
from stepstream.durable._versions import Versions
from stepstream.errors import WorkflowRuntimeError, WorkflowValidationError
from stepstream.events import Event

if TYPE_CHECKING:
    from stepstream._runtime import Run
    from stepstream.context._snapshot import SavedRun, Snapshot
    from stepstream.handler import WorkflowHandler
    from stepstream.workflow import Workflow

__all__ = ["DBOSRuntime", "default_runtime"]

#: Where ``Workflow(durable=True)`` keeps its runs: beside the embedded telemetry store.
DEFAULT_DATABASE = Path(".stepstream") / "durable.sqlite"

#: The journal format: DBOS's application version of stepstream's runs.
JOURNAL_VERSION = "stepstream-journal-1"

#: The options of the peer's ``DBOSRuntime`` (llama-agents-dbos), accepted so that its
#: users' code runs unchanged; those that configure its own tables have no effect here.
PEER_OPTIONS = frozenset(
    {
        "polling_interval_sec",
        "queue_polling_interval_sec",
        "run_migrations_on_launch",
        "schema",
        "state_table_name",
        "journal_table_name",
        "pool_size",
        "pool_min_size",
        "max_recovery_attempts",
    }
)

#: DBOS's thread pool (its database calls, ``asyncio.to_thread`` and sync steps) is
#: unbounded unless configured: a burst of N runs left N threads behind for good.
EXECUTOR_THREADS = 64

_log = logging.getLogger("stepstream")

_ACTIVE: list[DBOSRuntime] = []  # the launched runtime (DBOS is one per process)
_DEFAULTS: dict[str, DBOSRuntime] = {}


def default_runtime(database_url: str | None) -> DBOSRuntime:
    """The process's runtime for ``Workflow(durable=...)``: one per database, launched lazily."""
    url = database_url or f"sqlite:///{DEFAULT_DATABASE.resolve()}"
    runtime = _DEFAULTS.get(url)
    if runtime is None:
        runtime = _DEFAULTS[url] = DBOSRuntime(url)
        runtime._lazy = True  # noqa: SLF001 - launched by the first run that needs it
    return runtime


async def _run_function(
    workflow: str,
    start: dict[str, Any],
    trace: list[str] | None,
    started_ns: int,
    version: str | None = None,
) -> dict[str, Any]:
    """The DBOS workflow of every durable run: write its journal, or recover and go on.

    ``version`` is the version of the workflow's code that started the run (None for a
    run started before stepstream recorded it).
    """
    run_id = _dbos_io.current_run_id()
    if not _ACTIVE or run_id is None:
        _log.error(
            "stepstream: DBOS started durable run %s of workflow %s, but no stepstream "
            "DBOSRuntime is launched in this process; launch the runtime (await "
            "runtime.launch()) instead of DBOS.launch(). The run stays pending",
            run_id,
            workflow,
        )
        raise asyncio.CancelledError  # DBOS then records nothing: the run stays pending
    active = _ACTIVE[0]
    return await active._execute(run_id, workflow, start, trace, started_ns, version)  # noqa: SLF001


class DBOSRuntime(ReplicaService, RuntimeService):
    """Durable execution for workflows: ``MyWorkflow(runtime=DBOSRuntime())``.

    ``database_url`` is DBOS's system database: ``sqlite:///path`` (one machine) or
    ``postgresql://...``; by default ``.stepstream/durable.sqlite``. When the application
    made the DBOS instance itself (``DBOS(config=...)``, as the peer's users do), that
    instance and its database are used. ``create=False`` refuses to create a missing
    SQLite database (so a wrong path does not silently start from nothing). The
    options of llama-agents-dbos's ``DBOSRuntime`` are accepted; see docs/durable.md.
    ``on_version_mismatch`` says what a run started by another version of its
    workflow's code does here: ``"leave"`` it pending (the default), ``"resume"`` it, or
    ``"fail"`` it (see docs/durable.md, "Versions"). ``instance_id`` names this process
    as a replica (its DBOS executor id: a launch resumes only the runs of its own id);
    on Postgres it also holds a lease, and the runs of a replica whose lease is not
    renewed for ``failover_after`` seconds are taken over by another (docs/scale-out.md).

    Construct the workflows (``MyWorkflow(runtime=runtime)``), then ``await
    runtime.launch()`` (or ``runtime.launch_sync()`` outside async code): the runs that
    did not end before a crash or restart resume then. ``await runtime.handler(run_id)``
    re-attaches to one of them.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        create: bool = True,
        idle_release_after: float | None = 60.0,
        on_version_mismatch: str = "leave",
        instance_id: str | None = None,
        failover_after: float | None = DEFAULT_FAILOVER_AFTER,
        **options: Any,
    ) -> None:
        check_idle_release(idle_release_after)
        check_failover_after(failover_after)
        if instance_id is not None:
            check_instance_id(instance_id)
        unknown = sorted(set(options) - PEER_OPTIONS)
        if unknown:
            msg = (
                f"DBOSRuntime(...) got unknown option(s) {', '.join(unknown)}; it takes "
                f"database_url, create, idle_release_after, on_version_mismatch, "
                f"instance_id, failover_after and {', '.join(sorted(PEER_OPTIONS))}"
            )
            raise WorkflowValidationError(msg)
        if options.get("run_migrations_on_launch") is False:
            create = False
        self.database_url = database_url or f"sqlite:///{DEFAULT_DATABASE.resolve()}"
        self.options = options
        self._create = create
        self._lazy = False
        self._launched = False
        self._workflows: dict[str, Workflow] = {}
        # New runs whose DBOS workflow has not picked up their journal yet.
        self._starting: dict[str, RunJournal] = {}
        # The runs executing in this process, by id, until they end.
        self._runs: dict[str, WorkflowHandler] = {}
        self._arrivals: dict[str, asyncio.Future[WorkflowHandler]] = {}
        # The version of each workflow's code; the runs that do not run here (another
        # version's, or ended before the restart) and what re-attaching says.
        self._versions = Versions(self, on_version_mismatch)
        self._refused: dict[str, Exception] = {}
        self.launch_context = contextvars.copy_context()
        #: Runs idle this long (every step waiting for an event) are released (parked).
        self._parking = Parking(self, idle_release_after)
        self._watchers: list[RunWatcher] = []
        #: This replica's name (its DBOS executor id), and its lease on Postgres.
        self.instance_id = instance_id
        self.failover_after = failover_after
        self._cluster: Cluster | None = None
        self._queues: dict[str, Any] = {}  # workflow name -> its DBOS queue (replicas)

    # -- registration and launch -----------------------------------------------------------

    def register(self, workflow: Workflow) -> None:
        """Know ``workflow`` by its ``workflow_name``: its runs resume with it."""
        if workflow._stream_bound[0] is not None:  # noqa: SLF001 - the engine is a friend
            msg = (
                f"{type(workflow).__name__}(stream_limit=...) does not apply to a durable "
                "workflow: its stream is kept in the database, and a reader resumes from any "
                "seq; leave stream_limit out"
            )
            raise WorkflowValidationError(msg)
        self._workflows[workflow.workflow_name] = workflow

    def track_workflow(self, workflow: Workflow) -> None:
        """The peer's name for :meth:`register`."""
        self.register(workflow)

    @property
    def is_launched(self) -> bool:
        """Whether :meth:`launch` has run (runs can start)."""
        return self._launched

    async def launch(self) -> None:
        """Open the database and resume the runs that did not end (idempotent).

        Call it from the event loop the runs should use: resumed runs execute there.
        """
        self._launch_now()

    def launch_sync(self) -> None:
        """Check the database from synchronous code; the runs resume at the first use.

        The launch itself happens when an event loop first uses the runtime (a run, a
        :meth:`handler` or :meth:`launch`), so that resumed runs execute in that loop.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            msg = "DBOSRuntime.launch_sync() cannot be called from async code; use await launch()"
            raise WorkflowRuntimeError(msg)
        self._check_database()
        self._lazy = True

    def _check_database(self) -> None:
        path = _dbos_io.sqlite_path(self.database_url)
        if path is not None and _dbos_io.dbos_instance() is None:
            _dbos_io.prepare_sqlite(path, self._create)

    def _launch_now(self) -> None:
        if self._launched:
            return
        if _ACTIVE and _ACTIVE[0] is not self:
            msg = (
                f"another DBOSRuntime (database {_ACTIVE[0].database_url}) is launched in "
                "this process; DBOS runs one per process: use that runtime (or "
                "durable=True everywhere), or destroy() it first"
            )
            raise WorkflowRuntimeError(msg)
        self._check_database()
        _dbos_io.register_function(_run_function)
        config = {
            "name": "stepstream",
            "system_database_url": self.database_url,
            "run_migrations": self._create,
            "log_level": "WARNING",
            # DBOS resumes only the workflows of its current application version; by
            # default a hash of the registered functions' source, here stepstream's one
            # function: a stepstream upgrade would strand every pending run. The version
            # is the journal format's instead (see docs/durable.md, "Versions").
            "application_version": JOURNAL_VERSION,
            "max_executor_threads": EXECUTOR_THREADS,
        }
        cluster = self._replica()
        if self.instance_id is not None:
            config["executor_id"] = self.instance_id
        if cluster is not None:
            try:
                cluster.check()  # before DBOS's recovery takes up this id's pending runs
            except BaseException:
                cluster.discard()
                raise
        # Resumed runs are observed as runs started here are (observe(), capture_telemetry()).
        self.launch_context = contextvars.copy_context()
        _ACTIVE.append(self)
        try:
            _dbos_io.launch_dbos(config, self.database_url)
            if cluster is not None:
                cluster.open()
                self._declare_queues(cluster)
        except BaseException:
            if cluster is not None:
                cluster.discard()
            _ACTIVE.clear()
            raise
        self._launched = True
        self._cluster = cluster
        if cluster is not None:
            with contextlib.suppress(RuntimeError):  # no loop yet: the first use starts it
                cluster.start()

    async def destroy(self, destroy_dbos: bool = True) -> None:
        """Stop this process's runs (they stay pending, to resume later) and DBOS.

        ``destroy_dbos=False`` (the peer's option) leaves the DBOS instance to the
        application that made it.
        """
        if not self._launched:
            return
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.aclose()
        await self._parking.aclose()
        for handler in list(self._runs.values()):
            handler._task.cancel()  # noqa: SLF001 - the runtime owns its runs' tasks
        await asyncio.gather(
            *(h._task for h in self._runs.values()),  # noqa: SLF001
            return_exceptions=True,
        )
        await _dbos_io.settle(timeout=5.0)
        if destroy_dbos:
            _dbos_io.destroy_dbos()
        _ACTIVE.clear()
        self._launched = False

    def _ready(self) -> None:
        if self._launched:
            if self._cluster is not None:
                with contextlib.suppress(RuntimeError):  # launched outside a loop: now
                    self._cluster.start()
            return
        if not self._lazy:
            msg = (
                "the DBOSRuntime is not launched; call await runtime.launch() (or "
                "runtime.launch_sync()) after constructing the workflows, before running them"
            )
            raise WorkflowRuntimeError(msg)
        self._launch_now()

    # -- runs ------------------------------------------------------------------------------

    def prepare(
        self, workflow: Workflow, run: Run, start: Event | Snapshot, saved: SavedRun | None
    ) -> None:
        """Journal ``run``: its DBOS workflow starts with the run (see RunJournal.run)."""
        self._ready()
        serializer = _serializer(workflow)
        payload: dict[str, Any]
        if isinstance(start, Event):
            payload = {"ev": serializer.serialize(start)}
        else:
            assert saved is not None  # noqa: S101 - a snapshot comes from a saved context
            payload = {"ctx": to_payload(saved, serializer)}
        journal = RunJournal(run, serializer, (workflow.workflow_name, payload))
        journal.starter = _run_function
        journal.start_kwargs = {"version": self._versions.of(workflow)}
        self.attach(journal, run, workflow.workflow_name)
        self._starting[run.info.run_id] = journal

    def attach(
        self,
        journal: RunJournal,
        run: Run,
        workflow: str,
        inbox_taken: int = -1,
        inbox: list[dict[str, Any]] | None = None,
    ) -> None:
        """Set ``journal``, of a run of ``workflow``, up for parking.

        Records the ``inbox`` events its run took. Handlers of the run's released self,
        if a caller holds any, follow it from now on.
        """
        journal.workflow_name = workflow
        journal.parking = self._parking
        self._parking.watch(journal)
        journal.inbox_taken = inbox_taken
        journal.take_inbox(inbox or [])
        self._parking.reloaded(run.info.run_id, journal, run)

    def started(self, handler: WorkflowHandler) -> None:
        """Keep ``handler``'s run findable by id (:meth:`handler`) until it ends."""
        run_id = handler.run_id
        self._runs[run_id] = handler
        handler._task.add_done_callback(lambda _: self._runs.pop(run_id, None))  # noqa: SLF001
        arrival = self._arrivals.pop(run_id, None)
        if arrival is not None and not arrival.done():
            arrival.set_result(handler)
        journal = handler._run.journal  # noqa: SLF001
        if isinstance(journal, RunJournal) and journal.claimed:  # resumed, not new
            resumed = journal.info.resumed
            trace_id = resumed[0] if resumed is not None else journal.info.trace_id
            self._resumed(handler, journal.workflow_name, journal.stream.seq, trace_id)

    async def handler(self, run_id: str, *, timeout: float = 30.0) -> WorkflowHandler:
        """A handler of durable run ``run_id`` executing in this process.

        A run resumed by :meth:`launch` is taken up a moment later (DBOS's recovery
        queue): this waits up to ``timeout`` seconds for it. Its stream resumes with
        ``handler.stream_events(after=seq)``.
        """
        self._ready()
        found = self._runs.get(run_id)
        if found is not None and not found.done():
            return _again(found)
        refused = self._refused.get(run_id)
        if refused is not None:
            raise refused
        status = await _dbos_io.run_status(run_id)
        if status is None:
            msg = f"there is no durable run {run_id} in the database {self.database_url}"
            raise WorkflowRuntimeError(msg)
        if status[0] == "CANCELLED" and await unpark(run_id):
            status = ("ENQUEUED", status[1])  # it was parked: reloaded now, taken up below
        if status[0] not in {"PENDING", "ENQUEUED"}:
            msg = (
                f"durable run {run_id} has ended (DBOS status {status[0]}); only a run that "
                "is still going can be re-attached"
            )
            raise WorkflowRuntimeError(msg)
        arrival = self._arrivals.setdefault(run_id, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(timeout):
                return _again(await asyncio.shield(arrival))
        except TimeoutError:
            msg = (
                f"durable run {run_id} is pending but was not resumed in this process within "
                f"{timeout}s; it may be running in another process, or its workflow is not "
                "constructed here with this runtime"
            )
            raise WorkflowRuntimeError(msg) from None

    async def _execute(  # noqa: PLR0917 - the DBOS workflow's arguments, passed on
        self,
        run_id: str,
        workflow: str,
        start: dict[str, Any],
        trace: list[str] | None,
        started_ns: int,
        version: str | None,
    ) -> dict[str, Any]:
        """The body of run ``run_id``'s DBOS workflow (in its DBOS context)."""
        journal = self._starting.pop(run_id, None)
        if journal is not None:
            return await journal.write_loop()
        from stepstream.durable._recover import recover  # noqa: PLC0415 - a cycle otherwise

        wf = self._workflows.get(workflow)
        if wf is None:
            _log.error(
                "stepstream: durable run %s of workflow %s cannot resume in this process: no "
                "workflow of that name is constructed with this runtime; construct it "
                "(MyWorkflow(runtime=runtime)) before the runtime launches. The run stays "
                "pending and resumes at a launch that has it",
                run_id,
                workflow,
            )
            raise asyncio.CancelledError  # DBOS then records nothing: the run stays pending
        refused = await self._versions.check(wf, run_id, version)
        if refused is not None:  # another version's run, ended as failed here
            return refused
        return await recover(self, wf, run_id, start, trace, started_ns)

    def _ended_before(self, run_id: str) -> None:
        """Run ``run_id`` ended before the restart (only DBOS's record of it was missing)."""
        msg = f"durable run {run_id} has ended; only a run that is still going can be re-attached"
        self._refuse(run_id, WorkflowRuntimeError(msg))

    def _refuse(self, run_id: str, error: Exception) -> None:
        """Run ``run_id`` does not run here: re-attaching to it raises ``error``."""
        self._refused[run_id] = error
        arrival = self._arrivals.pop(run_id, None)
        if arrival is not None and not arrival.done():
            arrival.set_exception(error)


def check_idle_release(seconds: object) -> None:
    """Refuse an ``idle_release_after`` that is not None or a positive number of seconds."""
    if seconds is None or (
        isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0
    ):
        return
    msg = (
        f"idle_release_after={seconds!r}: give the seconds a durable run may wait for an "
        "event before it is released (a positive number), or None to keep waiting runs "
        "in memory"
    )
    raise WorkflowValidationError(msg)


def _serializer(workflow: Workflow) -> BaseSerializer:
    return workflow.serializer or JsonSerializer()


def _again(handler: WorkflowHandler) -> WorkflowHandler:
    """Another handler of the same run (its stream, result and context are shared)."""
    from stepstream.handler import WorkflowHandler  # noqa: PLC0415

    return WorkflowHandler(handler._run, handler._task)  # noqa: SLF001
