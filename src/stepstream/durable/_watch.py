"""Runs cancelled in the database, found by a poll: one query a second per event loop.

``runtime.cancel(run_id)`` from another process (or DBOS's cancel) only marks the run
cancelled in the database; the process running it learns of it here. The poll runs
only while some run of the loop is watched, and a failed read (the database away) is
simply tried again a second later: it never blocks the loop, nor the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable

from stepstream.durable import _dbos_io
from stepstream.durable._park_io import PARKED

__all__ = ["watch_cancel"]

#: Seconds between two reads of the watched runs' statuses.
INTERVAL = 1.0


class _Watcher:
    """The watched runs of one event loop, and the task that polls their status."""

    def __init__(self) -> None:
        self.runs: dict[str, Callable[[], None]] = {}
        self.task: asyncio.Task[None] | None = None

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        while self.runs:
            await asyncio.sleep(INTERVAL)
            # Only the runs watched when the read began: a later one may be a new attempt.
            watched = dict(self.runs)
            if not watched:
                return
            with contextlib.suppress(Exception):  # the database is away: read again later
                ids = list(watched)
                found = await loop.run_in_executor(None, _dbos_io.cancelled_runs, ids, PARKED)
                for run_id in found:
                    if self.runs.get(run_id) is watched[run_id]:
                        del self.runs[run_id]
                        watched[run_id]()


_WATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watcher] = (
    weakref.WeakKeyDictionary()
)


def watch_cancel(run_id: str, cancelled: Callable[[], None]) -> Callable[[], None]:
    """Call ``cancelled()`` once run ``run_id`` is found cancelled; return the unwatch."""
    loop = asyncio.get_running_loop()
    watcher = _WATCHERS.get(loop)
    if watcher is None:
        watcher = _WATCHERS[loop] = _Watcher()
    callback = cancelled  # its identity tells this watch from a later one of the run
    watcher.runs[run_id] = callback
    if watcher.task is None or watcher.task.done():
        watcher.task = loop.create_task(watcher.poll(), name="stepstream durable cancel watch")

    def unwatch() -> None:
        if watcher.runs.get(run_id) is callback:
            del watcher.runs[run_id]

    return unwatch
