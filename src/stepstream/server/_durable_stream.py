"""One subscriber's stream of a durable run: the journal is the event log.

A durable run's seq is its journal's: a subscriber resuming after seq N (``Last-Event-ID``
or ``after_sequence``) gets every recorded event after N once, in order, whether the run
executes here, was resumed here after a restart (its in-memory log starts at the resume),
is parked, or executes in another process. What the in-memory log holds is sent from it
(frames shared by the live subscribers, as for an in-memory run); what it does not hold
is read back from the journal. The subscriber of a run executing in another process (a
replica) reads the journal again when a commit to it is notified (Postgres: DBOS's
LISTEN/NOTIFY channel, which every journal commit notifies), and every half second
when none comes; a parked run's subscriber likewise waits (with heartbeats).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from stepstream.server._envelope import encode_event
from stepstream.server._log import Gap, RunLog
from stepstream.server._streaming import (
    BATCH,
    Sender,
    StreamClosedEvent,
    StreamOptions,
    closing_frame,
)

if TYPE_CHECKING:
    from stepstream.server._durable import DurableRuns

__all__ = ["DurableStream", "last_seq"]

#: Seconds between heartbeats on a stream without ``heartbeat`` set.
_POLL = 15.0
#: Seconds between looks at the journal of a run executing in another process when no
#: notification comes (SQLite, or a notification lost): the bound of a follower's delay.
_FOLLOW = 0.5


async def last_seq(runs: DurableRuns, run_id: str, workflow: str) -> int:
    """The seq of the run's last recorded event (-1: none): where ``now`` starts."""
    live = runs.live(run_id)
    if live is not None:
        record, first = live
        end = record.log.seq_at_end()
        return end if end >= 0 else first - 1
    events = await runs.runtime.events(run_id, workflow)
    return events[-1][0] if events else -1


class DurableStream:
    """Writes the frames of run ``run_id`` after seq ``after`` to one subscriber."""

    def __init__(  # noqa: PLR0917 - one per subscriber, built in one place
        self,
        runs: DurableRuns,
        run_id: str,
        workflow: str,
        after: int,
        options: StreamOptions,
        stop: asyncio.Event,
    ) -> None:
        self.runs = runs
        self.run_id = run_id
        self.workflow = workflow
        self.after = after
        self.options = options
        self.stop = stop
        self._offset = 0  # the journal's rows read up to here (all of them sent)

    async def __call__(self, send: Sender) -> None:
        """Write until the run's terminal event (or the server stops)."""
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        try:
            await self._write(send, stopped)
        finally:
            stopped.cancel()
        if self.stop.is_set():
            closed = StreamClosedEvent(
                reason="server_shutdown",
                detail="the server is shutting down; reconnect to go on where you are",
                resume_after_sequence=self.after,
            )
            await send(closing_frame(self.options, closed))

    async def _write(self, send: Sender, stopped: asyncio.Future[Any]) -> None:
        # Told of every commit to the run's journal, from any process (registered before
        # the first read: a commit between the read and the wait is not missed).
        follower = self.runs.runtime.follow(self.run_id)
        try:
            await self._write_following(send, stopped, follower)
        finally:
            follower.close()

    async def _write_following(
        self, send: Sender, stopped: asyncio.Future[Any], follower: Any
    ) -> None:
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        look = True  # read the run's status (a run cancelled while parked records no end)
        while not self.stop.is_set():
            live = self.runs.live(self.run_id)
            if live is not None:
                if await self._from_log(live[0].log, live[1], send, stopped):
                    return
                continue  # moved (parked, stopped), fell behind the log, or stopping
            before = self.after
            if await self._history(send, None):
                return
            if self.after != before:
                quiet_since = loop.time()
            if self.runs.live(self.run_id) is not None:
                continue
            if look:
                run = await self.runs.runtime.run(self.run_id)
                if run is None or run.ended:
                    return
            heartbeat = self.options.heartbeat or _POLL
            if self.options.sse and loop.time() - quiet_since >= heartbeat:
                await send(b": heartbeat\n\n")
                quiet_since = loop.time()
            told = asyncio.ensure_future(follower.wait(_FOLLOW))
            waiting = {told, self.runs.changed(), stopped}
            try:
                await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
            finally:
                told.cancel()
            look = not (told.done() and not told.cancelled() and told.result())

    async def _from_log(
        self, log: RunLog, first: int, send: Sender, stopped: asyncio.Future[Any]
    ) -> bool:
        """Catch up from the journal, then follow ``log``; True once the run's end is sent."""
        head = log.first_seq()
        if head is None:
            head = first
        if self.after + 1 < head:  # before what the log holds: from the journal
            return await self._history(send, head)
        return await self._follow(log, send, stopped) == "closed"

    async def _history(self, send: Sender, upto: int | None) -> bool:
        """Send the recorded events after ``after`` (below ``upto``); True if the last is sent."""
        events, following = await self.runs.runtime.events_from(
            self.run_id, self.workflow, self.after, self._offset
        )
        if upto is None:
            self._offset = following  # every event read is sent below
        form = self.options.form
        frames: list[bytes] = []
        for seq, event, terminal in events:
            if upto is not None and seq >= upto:
                break
            frames.append(encode_event(seq, event).render(form))
            self.after = seq
            if len(frames) >= BATCH or terminal:
                await send(b"".join(frames))
                frames = []
            if terminal:
                return True
        if frames:
            await send(b"".join(frames))
        return False

    async def _follow(
        self, log: RunLog, send: Sender, stopped: asyncio.Future[Any]
    ) -> Literal["closed", "moved", "behind", "stop"]:
        """Send the log's frames after ``after`` until it closes, moves or leaves us behind."""
        form = self.options.form
        position = log.position_after(self.after)
        while True:
            batch = log.read(position, BATCH)
            if isinstance(batch, Gap):
                return "behind"
            if batch:
                position += len(batch)
                if log.closed or log.moved:
                    await send(b"".join([e.render(form) for e in batch]))
                else:  # made once per event and form, shared by the live subscribers
                    log.shares_frames = True
                    await send(b"".join([e.frame(form) for e in batch]))
                self.after = batch[-1].seq
                continue
            if log.closed:
                return "closed"
            if log.moved:
                return "moved"
            if self.stop.is_set():
                return "stop"
            waiting = {log.changed(), stopped}
            done, _ = await asyncio.wait(
                waiting, timeout=self.options.heartbeat, return_when="FIRST_COMPLETED"
            )
            if not done and self.options.sse:
                await send(b": heartbeat\n\n")
