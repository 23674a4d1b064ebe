"""Every call into DBOS Transact, in one place (its private API too, pinned by ``dbos<4``).

The journal of a run is one DBOS stream (key :data:`STREAM`) of the run's DBOS workflow;
each value is one batch of journal entries: one row of DBOS's streams table, at the
stream's first free offset, as DBOS's own step-context stream write makes it (no
operation row, no DBOS step id spent: a recovering run reads its history back and
needs no replay of the writes). The rows are written by :mod:`._journal_writer`, one
thread per process that commits the batches queued by all runs in one transaction.
Reading it back is done with the system database's range read, which records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from dbos import _dbos as dbos_module
from dbos._context import get_local_dbos_context
from dbos._error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSWorkflowCancelledError,
)
from dbos._serialization import WorkflowSerializationFormat, deserialize_value, serialize_value

from stepstream.durable import _journal_writer
from stepstream.errors import DurableStoreError

__all__ = [
    "CANCELLED",
    "STREAM",
    "WORKFLOW",
    "cancel_run",
    "cancelled_runs",
    "current_run_id",
    "dbos_instance",
    "destroy_dbos",
    "launch_dbos",
    "prepare_sqlite",
    "read_batches",
    "read_batches_from",
    "register_function",
    "run_status",
    "settle",
    "sqlite_path",
    "start_workflow",
    "write_batch",
]

#: The DBOS stream that holds a run's journal (written by :mod:`._journal_writer`).
STREAM = _journal_writer.STREAM
#: The one DBOS workflow every run is.
#: The DBOS stream of a run that holds the events sent to it from outside (its inbox).
INBOX_KEY = "stepstream.in"
WORKFLOW = "stepstream.run"
_READ_BATCH = 256
_log = logging.getLogger("stepstream")

#: What DBOS raises in a workflow cancelled in its database (a BaseException), and to
#: one awaiting its result.
CANCELLED = (DBOSWorkflowCancelledError, DBOSAwaitedWorkflowCancelledError)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL; None for another database."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def dbos_instance() -> Any:
    """The process's DBOS instance, or None before ``DBOS(config=...)``."""
    return dbos_module._dbos_global_instance  # noqa: SLF001 - no public accessor


def register_function(fn: Callable[..., Coroutine[Any, Any, Any]]) -> None:
    """Register ``fn`` as the DBOS workflow :data:`WORKFLOW` unless it already is."""
    registry = dbos_module._get_or_create_dbos_registry()  # noqa: SLF001 - no public test
    if WORKFLOW not in registry.workflow_info_map:
        DBOS.workflow(name=WORKFLOW)(fn)


def prepare_sqlite(path: Path, create: bool) -> None:
    """Check the database file before DBOS opens it; put a new one in WAL mode.

    WAL with SQLite's default ``synchronous=FULL`` (DBOS sets neither) keeps every
    committed transaction across a crash and a power loss, with one fsync per commit.
    """
    if not path.exists():
        if not create:
            msg = (
                f"the durable database {path} does not exist; start the runs that should "
                "resume with this file, or pass create=True to start with a new one"
            )
            raise DurableStoreError(msg, path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        msg = (
            f"the durable database {path} cannot be opened ({exc}); it is not a SQLite "
            "database or it is damaged. Restore it from a backup, or move it away to "
            "start with a new one (its runs are then lost)"
        )
        raise DurableStoreError(msg, path) from exc


def launch_dbos(config: dict[str, Any] | None, where: str) -> None:
    """Make the DBOS instance from ``config`` unless there is one, then launch it."""
    try:
        if dbos_instance() is None:
            assert config is not None  # noqa: S101 - the runtime passes one then
            DBOS(config=config)  # type: ignore[arg-type]
        DBOS.launch()
    except DurableStoreError:
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            DBOS.destroy()
        msg = f"the durable database {where} could not be opened: {type(exc).__name__}: {exc}"
        raise DurableStoreError(msg, where) from exc


def current_run_id() -> str | None:
    """The id of the DBOS workflow whose code is running (the run's id)."""
    return DBOS.workflow_id


async def start_workflow(
    fn: Callable[..., Coroutine[Any, Any, Any]], run_id: str, *args: Any, **kwargs: Any
) -> Any:
    """Start the DBOS workflow ``fn(*args, **kwargs)`` with id ``run_id``; its handle."""
    with SetWorkflowID(run_id):
        return await DBOS.start_workflow_async(fn, *args, **kwargs)


async def write_batch(entries: list[dict[str, Any]]) -> None:
    """Append one batch to the journal of the DBOS workflow in whose code this runs.

    Returns once the batch is committed. Raises DBOS's ``DBOSWorkflowCancelledError``
    when the workflow was cancelled, ``DBOSWorkflowConflictIDError`` when another
    execution took it over (nothing is written then).
    """
    ctx = get_local_dbos_context()
    if ctx is None or not ctx.is_workflow() or ctx.owner_xid is None:
        msg = "a durable run's journal is written only from its DBOS workflow"
        raise RuntimeError(msg)
    writer = _journal_writer.writer(dbos_instance()._sys_db)  # noqa: SLF001 - its engine
    value, serialization = serialize_value(
        orjson.dumps(entries).decode(), WorkflowSerializationFormat.DEFAULT, writer.serializer
    )
    done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    writer.submit(
        (ctx.workflow_id, ctx.owner_xid, max(ctx.function_id, 0), value, serialization, done)
    )
    error = await done
    if error is not None:
        raise error


def _read_rows(
    run_id: str, offset: int, read: list[int] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The batches from row ``offset`` on; ``read[0]`` counts the rows read."""
    dbos = dbos_instance()
    if dbos is None:
        return
    sys_db = dbos._sys_db  # noqa: SLF001 - the range read records no step
    while True:
        _, rows = sys_db.read_stream_values(run_id, STREAM, offset, _READ_BATCH)
        if read is not None:
            read[0] += len(rows)
        for value, serialization in rows:
            text = deserialize_value(value, serialization, sys_db.serializer)
            if isinstance(text, str):  # not DBOS's closing sentinel
                yield orjson.loads(text)
        if len(rows) < _READ_BATCH:
            return
        offset += len(rows)


async def read_batches(run_id: str, offset: int = 0) -> list[list[dict[str, Any]]]:
    """The journal batches of run ``run_id`` recorded so far, from batch ``offset`` on.

    Read in a worker thread that does not inherit the caller's DBOS context, so the
    read is not mistaken for a step of a running DBOS workflow.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: list(_read_rows(run_id, offset)))


async def read_batches_from(run_id: str, offset: int) -> tuple[list[list[dict[str, Any]]], int]:
    """The journal batches of run ``run_id`` from row ``offset`` on, and the next offset.

    A follower reading a growing journal reads only what it has not read yet.
    """
    read = [0]
    loop = asyncio.get_running_loop()
    batches = await loop.run_in_executor(None, lambda: list(_read_rows(run_id, offset, read)))
    return batches, offset + read[0]


async def run_status(run_id: str) -> tuple[str, int] | None:
    """The DBOS status of run ``run_id`` and its execution attempts; None if unknown."""
    dbos = dbos_instance()
    if dbos is None:
        return None
    sys_db = dbos._sys_db  # noqa: SLF001 - a read outside any workflow context

    def read() -> tuple[str, int] | None:
        found = sys_db.list_workflows(workflow_ids=[run_id], load_input=False, load_output=False)
        if not found:
            return None
        return str(found[0].status), int(found[0].recovery_attempts or 1)

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, read)


async def cancel_run(run_id: str) -> None:
    """Mark run ``run_id`` cancelled in the database (DBOS's cancel: final, not resumed)."""
    await DBOS.cancel_workflow_async(run_id)


def cancelled_runs(run_ids: list[str], parked: str) -> set[str]:
    """Which of ``run_ids`` are cancelled in the database: one read, no retry.

    A run parked (CANCELLED on the queue named ``parked``) is not cancelled.

    DBOS's own reads retry a lost connection forever (a thread that then outlives DBOS
    and holds up the process's exit); a poll rather fails and reads again later.
    """
    dbos = dbos_instance()
    if dbos is None or not run_ids:
        return set()
    sys_db = dbos._sys_db  # noqa: SLF001 - a read outside any workflow context
    table = sys_db.tables.workflow_status
    query = sa.select(table.c.workflow_uuid).where(
        table.c.workflow_uuid.in_(run_ids),
        table.c.status == "CANCELLED",
        sa.or_(table.c.queue_name.is_(None), table.c.queue_name != parked),
    )
    with sys_db.engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(query)}


async def settle(timeout: float) -> None:
    """Wait (up to ``timeout`` s) for DBOS to record the outcome of workflows that returned."""
    dbos = dbos_instance()
    if dbos is None:
        return
    loop = asyncio.get_running_loop()
    tasks = [t for t in list(dbos._workflow_tasks) if t.get_loop() is loop and not t.done()]  # noqa: SLF001
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


def destroy_dbos() -> None:
    """Shut DBOS down in this process (its registrations are kept for a new launch).

    DBOS makes its thread pool the running loop's default executor (``to_thread``, sync
    steps); once that pool is shut down the loop gets a new one of its own.
    """
    _journal_writer.stop_writer()
    shared = getattr(dbos_instance(), "_shared_executor_field", None)
    DBOS.destroy()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if shared is not None and getattr(loop, "_default_executor", None) is shared:
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))
