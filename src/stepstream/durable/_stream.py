"""A durable run's stream: events reach readers once recorded; readers resume from a seq.

:class:`JournalStream` numbers each written event at once but hands it to the journal;
the journal publishes it (into the buffer ``stream_events()`` reads) after the batch that
holds it is committed, so a seq a reader saw is never issued again with other content.
``stream_events(after=seq)`` reads the recorded history from the database, then follows
the run live: :class:`Replay`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from stepstream._stream import EventStream
from stepstream.context.serializers import BaseSerializer
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event, StopEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stepstream.durable._journal import RunJournal

__all__ = ["JournalStream", "Replay"]


class JournalStream(EventStream):
    """The stream of a journaled run (see the module docstring)."""

    __slots__ = ("journal",)

    def __init__(self, loop: asyncio.AbstractEventLoop, seq: int, journal: RunJournal) -> None:
        super().__init__(loop, seq)
        self.journal = journal

    def push(self, event: Event) -> int:
        """Number ``event`` and give it to the journal; it is published once recorded."""
        seq = self.seq
        self.seq = seq + 1
        self.journal.streamed(event, seq)
        return seq

    def publish(self, event: Event) -> None:
        """Put a recorded event into the buffer and wake the reader."""
        buf = self.buf
        if buf is None:
            buf = self.buf = deque()
        buf.append(event)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def push_internal(self, event: Event) -> None:
        """Runtime-internal events are not recorded: they go to the buffer at once."""
        self.publish(event)

    def close(self, terminal: StopEvent) -> None:
        """Append the terminal event (after every recorded event) and tell the readers."""
        if self.terminal is None:
            seq = self.seq
            self.seq = seq + 1
            self.publish(terminal)
            self.terminal = terminal
            self.journal.closed(seq, terminal)

    def iterate(self, expose_internal: bool = False, after: int | None = None) -> Any:
        """The buffer's iterator; with ``after``, the events after that seq (history too)."""
        if after is None:
            return super().iterate(expose_internal)
        return Replay(self.journal, after).iterate()


class Replay:
    """The events of a journaled run after seq ``after``: recorded ones, then live ones."""

    def __init__(self, journal: RunJournal, after: int) -> None:
        self._journal = journal
        self._after = after
        self._live: asyncio.Queue[tuple[int, Event, bool]] = asyncio.Queue()

    def feed(self, seq: int, event: Event, terminal: bool) -> None:
        """A recorded event (or the terminal one) of the live run."""
        self._live.put_nowait((seq, event, terminal))

    async def iterate(self) -> AsyncIterator[Event]:
        """Yield each event with seq > ``after`` once, in order, through the terminal one."""
        journal = self._journal
        if not journal.live:
            async for _, event, _ in journal.history(self._after):
                yield event
            return
        journal.readers.append(self)  # before reading the history: nothing falls between
        try:
            last = self._after
            async for seq, event, terminal in journal.history(self._after):
                last = seq
                yield event
                if terminal:
                    return
            while True:
                seq, event, terminal = await self._live.get()
                if seq <= last:
                    continue
                last = seq
                yield event
                if terminal:
                    return
        finally:
            journal.readers.remove(self)


def decode_event(serializer: BaseSerializer, text: str, where: str) -> Event:
    """A recorded event, read back with the serializer it was written with."""
    value = serializer.deserialize(text)
    if not isinstance(value, Event):
        msg = f"{where} holds {type(value).__name__} where an event was recorded"
        raise WorkflowRuntimeError(msg)
    return value
