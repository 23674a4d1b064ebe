"""The database side of parked runs (DBOS's system database, its private API: ``dbos<4``).

A parked run's DBOS workflow is ``CANCELLED`` with the queue name :data:`PARKED`: DBOS's
recovery does not take it up, nor does any queue. :func:`unpark` moves exactly such a
workflow to ``ENQUEUED`` on DBOS's internal queue (as ``DBOS.resume_workflow`` does,
but only from the parked state, so two processes unparking at once start it once), and
whichever process's queue takes it continues the run. Events sent to a run that is not
executing here go to its *inbox*, a second DBOS stream of its workflow (key
:data:`INBOX`), one row per event, written from outside the workflow in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from dbos._serialization import WorkflowSerializationFormat, deserialize_value
from dbos._utils import INTERNAL_QUEUE_NAME

from stepstream.durable._dbos_io import INBOX_KEY, dbos_instance

__all__ = ["INBOX", "PARKED", "is_parked", "mark_parked", "post_inbox", "read_inbox", "unpark"]

#: The queue name that marks a CANCELLED workflow as a parked run (no such queue exists).
PARKED = "stepstream.parked"
#: The DBOS stream of a run's workflow that holds the events sent to it from outside.
INBOX = INBOX_KEY
_READ = 256

T = TypeVar("T")


def _sys_db() -> Any:
    dbos = dbos_instance()
    if dbos is None:
        msg = "DBOS is not launched in this process"
        raise RuntimeError(msg)
    return dbos._sys_db  # noqa: SLF001 - no public API for a conditional status change


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread, outside any DBOS workflow context."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def mark_parked(run_id: str) -> bool:
    """PENDING -> parked; False if the workflow was not PENDING (left as it is)."""
    sys_db = _sys_db()
    ws = sys_db.tables.workflow_status

    def update() -> bool:
        with sys_db.engine.begin() as c:
            result = c.execute(
                sa.update(ws)
                .where(*sys_db._wf(ws, run_id))  # noqa: SLF001
                .where(ws.c.status == "PENDING")
                .values(
                    status="CANCELLED",
                    queue_name=PARKED,
                    owner_xid=None,
                    started_at_epoch_ms=None,
                    updated_at=sys_db._now_ms_sql(),  # noqa: SLF001
                )
            )
            return bool(result.rowcount)

    return await _in_thread(update)


async def unpark(run_id: str) -> bool:
    """Parked -> ENQUEUED on DBOS's internal queue; False if the run was not parked."""
    sys_db = _sys_db()
    ws = sys_db.tables.workflow_status

    def update() -> bool:
        with sys_db.engine.begin() as c:
            result = c.execute(
                sa.update(ws)
                .where(*sys_db._wf(ws, run_id))  # noqa: SLF001
                .where(ws.c.status == "CANCELLED")
                .where(ws.c.queue_name == PARKED)
                .values(
                    status="ENQUEUED",
                    queue_name=INTERNAL_QUEUE_NAME,
                    owner_xid=None,
                    # Each dispatch counts against DBOS's recovery limit: a run parked
                    # and reloaded many times must not reach it.
                    recovery_attempts=0,
                    workflow_deadline_epoch_ms=None,
                    deduplication_id=None,
                    started_at_epoch_ms=None,
                    updated_at=sys_db._now_ms_sql(),  # noqa: SLF001
                    completed_at=None,
                )
            )
            return bool(result.rowcount)

    return await _in_thread(update)


async def is_parked(run_id: str) -> bool:
    """Whether run ``run_id`` is parked now."""
    sys_db = _sys_db()
    ws = sys_db.tables.workflow_status

    def read() -> bool:
        with sys_db.engine.begin() as c:
            row = c.execute(
                sa.select(ws.c.status, ws.c.queue_name).where(*sys_db._wf(ws, run_id))  # noqa: SLF001
            ).first()
        return row is not None and row[0] == "CANCELLED" and row[1] == PARKED

    return await _in_thread(read)


async def post_inbox(run_id: str, entry: dict[str, Any]) -> None:
    """Append ``entry`` (an ``in`` entry) to run ``run_id``'s inbox, in one transaction."""
    sys_db = _sys_db()
    text = orjson.dumps(entry).decode()
    await _in_thread(
        lambda: sys_db.write_stream_from_step(
            run_id, 0, INBOX, text, serialization_type=WorkflowSerializationFormat.DEFAULT
        )
    )


async def read_inbox(run_id: str, offset: int) -> list[dict[str, Any]]:
    """The inbox entries of run ``run_id`` from ``offset`` on, each with its ``inbox`` offset."""
    sys_db = _sys_db()

    def read() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        at = offset
        while True:
            _, rows = sys_db.read_stream_values(run_id, INBOX, at, _READ)
            for value, serialization in rows:
                text = deserialize_value(value, serialization, sys_db.serializer)
                if isinstance(text, str):
                    entry = orjson.loads(text)
                    entry["inbox"] = at
                    found.append(entry)
                at += 1
            if len(rows) < _READ:
                return found

    return await _in_thread(read)
