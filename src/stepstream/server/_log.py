"""A run's event log: every streamed event, encoded once, readable by any number of subscribers.

One consumer of ``handler.stream_events()`` per run appends here (see ``_runs``); each
HTTP subscriber keeps its own cursor (an absolute position in the log) and reads from
there in bounded batches, so a subscriber that falls behind is caught up from the log,
never buffered per subscriber, and never slows the run or the other subscribers.

The log keeps the last ``limit`` events of a run (None: all). A subscriber whose cursor
fell behind what is kept learns it (:class:`Gap`) and is closed with a final frame that
says which events are gone.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass

from stepstream.server._envelope import EncodedEvent

__all__ = ["Gap", "RunLog"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Events before ``first_seq`` are no longer in the log (``limit`` is what it keeps)."""

    first_seq: int
    limit: int


class RunLog:
    """The events of one run, in stream order (strictly increasing ``seq``)."""

    __slots__ = (
        "_base",
        "_changed",
        "_entries",
        "_seqs",
        "closed",
        "limit",
        "moved",
        "shares_frames",
    )

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._entries: list[EncodedEvent] = []
        self._seqs: list[int] = []
        self._base = 0  # absolute position of _entries[0]
        self._changed: asyncio.Future[None] | None = None
        #: True once the run's terminal event is in the log: nothing follows it.
        self.closed = False
        #: True once a subscriber has read the live log: its events keep their frames
        #: (``EncodedEvent.frame``) until the log closes.
        self.shares_frames = False
        #: True once the run's events no longer come here, though it did not end (a
        #: durable run parked or stopped with the server): readers follow it elsewhere.
        self.moved = False

    @property
    def end(self) -> int:
        """The absolute position after the last event."""
        return self._base + len(self._entries)

    @property
    def start(self) -> int:
        """The absolute position of the oldest event still kept."""
        return self._base

    def append(self, event: EncodedEvent) -> None:
        """Add the next event and wake the readers."""
        self._entries.append(event)
        self._seqs.append(event.seq)
        limit = self.limit
        if limit is not None and len(self._entries) >= 2 * limit:  # trim in batches: O(1) amortised
            cut = len(self._entries) - limit
            del self._entries[:cut]
            del self._seqs[:cut]
            self._base += cut
        self._wake()

    def close(self) -> None:
        """Mark the log complete (the run has ended) and wake the readers.

        The frames its live subscribers shared are released: a finished run's log keeps
        one encoding per event, however it was streamed (its readers make frames anew).
        """
        self.closed = True
        if self.shares_frames:
            for entry in self._entries:
                entry.release_frames()
        self._wake()

    def move(self) -> None:
        """The run goes on elsewhere (see :attr:`moved`): wake the readers."""
        self.moved = True
        if self.shares_frames:
            for entry in self._entries:
                entry.release_frames()
        self._wake()

    def first_seq(self) -> int | None:
        """The seq of the oldest event still kept (None when the log is empty)."""
        return self._seqs[0] if self._seqs else None

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            if not changed.done():
                changed.set_result(None)

    def position_after(self, seq: int) -> int:
        """The absolute position of the first event whose seq is greater than ``seq``.

        Before what the log keeps, it is a position before :attr:`start` (a Gap on read).
        """
        if seq < 0:
            return 0
        if self._seqs and seq < self._seqs[0]:
            # Resuming after an event the log no longer holds: the next one is gone too
            # unless it is the oldest kept one.
            return self._base if seq + 1 >= self._seqs[0] else self._base - 1
        return self._base + bisect.bisect_right(self._seqs, seq)

    def read(self, position: int, most: int) -> list[EncodedEvent] | Gap:
        """Up to ``most`` events from ``position`` on; a Gap if some are no longer kept."""
        if position < self._base:
            first = self._seqs[0] if self._seqs else 0
            return Gap(first, self.limit or 0)
        index = position - self._base
        return self._entries[index : index + most]

    def changed(self) -> asyncio.Future[None]:
        """A future resolved at the next append (shared by every waiting reader).

        Wait on it with ``asyncio.wait`` (never cancel it: other readers share it).
        """
        changed = self._changed
        if changed is None or changed.done():
            changed = self._changed = asyncio.get_running_loop().create_future()
        return changed

    def seq_at_end(self) -> int:
        """The seq of the last event in the log (-1 when empty)."""
        return self._seqs[-1] if self._seqs else -1
