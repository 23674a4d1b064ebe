"""The calls into DBOS Transact that replicas make (its private API too, pinned by ``dbos<4``).

Replicas on one Postgres database (docs/scale-out.md): DBOS's recovery of a dead
executor's runs, the DBOS queue of a workflow with a cluster-wide concurrency limit, and
DBOS's LISTEN/NOTIFY listener, which wakes a replica when another writes to a run's
journal or inbox.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from dbos._shard_keys import bind_shard_keys
from dbos._sys_db import _dbos_streams_channel
from dbos._utils import INTERNAL_QUEUE_NAME, GlobalParams, LoopAwareEvent

from stepstream.durable._dbos_io import INBOX_KEY, dbos_instance

__all__ = [
    "LoopAwareEvent",
    "declare_queue",
    "enqueue_workflow",
    "inbox_heads",
    "listen",
    "poke",
    "queue_depths",
    "recover_executor",
]


def declare_queue(name: str, concurrency: int) -> Any:
    """DBOS's queue ``name`` (made if missing), with a global concurrency.

    At most ``concurrency`` of its workflows run at once in all the processes sharing
    the database.
    """
    # From a thread of its own: DBOS refuses the synchronous call in an event loop's
    # thread, and the launch (which declares the queues) is synchronous.
    with ThreadPoolExecutor(max_workers=1) as pool:
        declared = pool.submit(
            DBOS.register_queue, name, global_concurrency=concurrency, on_conflict="always_update"
        )
        return declared.result()


async def enqueue_workflow(
    queue: Any, fn: Callable[..., Coroutine[Any, Any, Any]], run_id: str, *args: Any, **kwargs: Any
) -> None:
    """Enqueue the DBOS workflow ``fn(*args, **kwargs)`` with id ``run_id`` on ``queue``.

    Returns once it is recorded; the queue of whichever process dequeues it starts it.
    """
    with SetWorkflowID(run_id):
        await queue.enqueue_async(fn, *args, **kwargs)


def queue_depths(names: list[str]) -> dict[str, int]:
    """How many workflows wait (enqueued, not started) on each of the queues ``names``."""
    dbos = dbos_instance()
    if dbos is None or not names:
        return {}
    sys_db = dbos._sys_db  # noqa: SLF001 - a read outside any workflow context
    ws = sys_db.tables.workflow_status
    query = (
        sa.select(ws.c.queue_name, sa.func.count())
        .where(ws.c.queue_name.in_(names), ws.c.status == "ENQUEUED")
        .group_by(ws.c.queue_name)
    )
    with sys_db.engine.connect() as conn:
        found = {str(row[0]): int(row[1]) for row in conn.execute(query)}
    return {name: found.get(name, 0) for name in names}


def recover_executor(executor_id: str) -> list[str]:
    """DBOS's recovery of executor ``executor_id``'s pending runs (a dead replica's).

    Each pending run of the journal's version is re-enqueued on DBOS's internal queue
    (its ownership token cleared: the replica, if it was only slow, writes nothing more
    to it), as ``DBOS._recover_pending_workflows([executor_id])`` does; whichever
    process's queue takes it resumes it. Returns the ids of the runs re-enqueued now
    (a run another process re-enqueued first is not among them). Blocking.
    """
    dbos = dbos_instance()
    if dbos is None:
        return []
    sys_db = dbos._sys_db  # noqa: SLF001 - the recovery's own two calls, with their result
    moved: list[str] = []
    for pending in sys_db.get_pending_workflows(executor_id, GlobalParams.app_version):
        with bind_shard_keys({pending.workflow_id: pending.shard_key}):
            if sys_db.reenqueue_for_recovery(
                pending.workflow_id, [executor_id], INTERNAL_QUEUE_NAME
            ):
                moved.append(pending.workflow_id)
    return moved


def inbox_heads(run_ids: list[str]) -> dict[str, int]:
    """The last inbox offset of each of ``run_ids`` that has an inbox: one read, no retry."""
    dbos = dbos_instance()
    if dbos is None or not run_ids:
        return {}
    sys_db = dbos._sys_db  # noqa: SLF001 - a read outside any workflow context
    streams = sys_db.tables.streams
    query = (
        sa.select(streams.c.workflow_uuid, sa.func.max(streams.c["offset"]))
        .where(streams.c.workflow_uuid.in_(run_ids), streams.c.key == INBOX_KEY)
        .group_by(streams.c.workflow_uuid)
    )
    with sys_db.engine.connect() as conn:
        return {str(row[0]): int(row[1]) for row in conn.execute(query)}


def listen(run_id: str, key: str, event: Any) -> Callable[[], None]:
    """Have DBOS's listener set ``event`` when stream ``key`` of run ``run_id`` is written.

    On Postgres (LISTEN/NOTIFY on DBOS's streams channel, which every journal commit and
    inbox write notifies); returns the function that stops it. Raises LookupError where
    there are no notifications (SQLite: DBOS would poll the database for each listener).
    """
    dbos = dbos_instance()
    sys_db = getattr(dbos, "_sys_db", None)
    if sys_db is None or sys_db.engine.dialect.name != "postgresql" or not sys_db.use_listen_notify:
        raise LookupError(key)
    payload, components = sys_db._waiter(run_id, key)  # noqa: SLF001 - DBOS's own key
    sys_db.streams_map.add(payload, event, components)
    return lambda: sys_db.streams_map.pop(payload, event)


def poke(run_id: str) -> None:
    """Wake the process running ``run_id`` now (its inbox and status are read again).

    A notification on DBOS's streams channel, as an inbox write sends: on Postgres the
    process executing the run reads its status and inbox at once, not at its next poll.
    """
    dbos = dbos_instance()
    notify = getattr(getattr(dbos, "_sys_db", None), "_signal_notification", None)
    if notify is not None:
        notify(_dbos_streams_channel, f"{run_id}::{INBOX_KEY}")
