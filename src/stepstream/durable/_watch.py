"""What other processes do to the runs executing here: cancel them, send them events.

``runtime.cancel(run_id)`` from another process (or DBOS's cancel) only marks the run
cancelled in the database, and ``runtime.send_event`` (the server's ``POST /events``)
from another process only records the event in the run's inbox; the process running
the run learns of either here. Once a second (one query for the statuses and one for
the inboxes of every watched run of the loop), and at once on Postgres: an inbox write
(and a cancel, see :func:`_dbos_replicas.poke`) notifies DBOS's streams channel, which DBOS's
listener thread hears; the watched run's nudge then wakes the poll for that run alone.
The poll runs only while some run of the loop is watched, and a failed read (the
database away) is simply tried again a second later: it never blocks the loop, nor the
process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable

from stepstream.durable import _dbos_io, _dbos_replicas
from stepstream.durable._park_io import PARKED

__all__ = ["watch_run"]

#: Seconds between two reads of the watched runs' statuses and inboxes.
INTERVAL = 1.0

#: Told the run was cancelled in the database; told its inbox's last offset (None: look).
Cancelled = Callable[[], None]
InboxChanged = Callable[[int | None], None]


class _Nudge(_dbos_replicas.LoopAwareEvent):
    """Set by DBOS's listener when one watched run's inbox is written (or it is poked)."""

    def __init__(self, run_id: str, watcher: _Watcher) -> None:
        super().__init__()
        self.run_id = run_id
        self.watcher = watcher

    def set(self) -> None:
        self.watcher.nudged.add(self.run_id)
        self.watcher.wake.set()


class _Watcher:
    """The watched runs of one event loop, and the task that polls their status."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[Cancelled, InboxChanged]] = {}
        self.task: asyncio.Task[None] | None = None
        self.wake = _dbos_replicas.LoopAwareEvent()
        self.nudged: set[str] = set()

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + INTERVAL
        while self.runs:
            await self.wake.wait_async(max(0.0, due - loop.time()))
            self.wake.clear()
            nudged, self.nudged = self.nudged, set()
            everything = loop.time() >= due
            if everything:
                due = loop.time() + INTERVAL
            # Only the runs watched when the read began: a later one may be a new attempt.
            watched = {
                run_id: told for run_id, told in self.runs.items() if everything or run_id in nudged
            }
            if not watched:
                continue
            with contextlib.suppress(Exception):  # the database is away: read again later
                ids = list(watched)
                found = await loop.run_in_executor(None, _dbos_io.cancelled_runs, ids, PARKED)
                for run_id in found:
                    if self.runs.get(run_id) is watched[run_id]:
                        del self.runs[run_id]
                        watched[run_id][0]()
                heads: dict[str, int | None] = dict.fromkeys(nudged & set(watched))
                if everything:
                    heads.update(await loop.run_in_executor(None, _dbos_replicas.inbox_heads, ids))
                for run_id, head in heads.items():
                    if self.runs.get(run_id) is watched.get(run_id):
                        watched[run_id][1](head)


_WATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watcher] = (
    weakref.WeakKeyDictionary()
)


def watch_run(run_id: str, cancelled: Cancelled, inbox: InboxChanged) -> Callable[[], None]:
    """Call ``cancelled()`` once run ``run_id`` is found cancelled; return the unwatch.

    ``inbox(head)`` is called when its inbox may have new events (``head``: the inbox's
    last offset; None when a notification said so).
    """
    loop = asyncio.get_running_loop()
    watcher = _WATCHERS.get(loop)
    if watcher is None:
        watcher = _WATCHERS[loop] = _Watcher()
    told = (cancelled, inbox)  # its identity tells this watch from a later one of the run
    watcher.runs[run_id] = told
    unlisten: Callable[[], None] | None = None
    with contextlib.suppress(Exception):  # no notifications (SQLite): the poll alone
        unlisten = _dbos_replicas.listen(run_id, _dbos_io.INBOX_KEY, _Nudge(run_id, watcher))
    if watcher.task is None or watcher.task.done():
        watcher.task = loop.create_task(watcher.poll(), name="stepstream durable run watch")

    def unwatch() -> None:
        if unlisten is not None:
            unlisten()
        if watcher.runs.get(run_id) is told:
            del watcher.runs[run_id]

    return unwatch
