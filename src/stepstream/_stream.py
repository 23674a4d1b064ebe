"""The per-run stream buffer and its single-consumer iterator.

Writes append to a deque and wake the consumer if one is parked: one queue operation
per event. Events written before anyone iterates are kept. The buffer is shared by
every iterator of the run, so breaking out of ``async for`` and iterating again
resumes where the first loop stopped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

from stepstream.errors import WorkflowRuntimeError, WorkflowStreamOverflowError
from stepstream.events import Event, EventsDroppedEvent, InternalDispatchEvent, StopEvent

__all__ = ["BoundedEventStream", "EventStream", "Overflow"]

#: What a bounded stream does when its caller does not keep up.
Overflow = Literal["fail", "drop_oldest"]


class EventStream:
    """Buffer of one run's streamed events, closed by its terminal StopEvent."""

    __slots__ = ("buf", "consumed", "loop", "seq", "terminal", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, seq: int = 0) -> None:
        self.loop = loop
        # Created by the first push: a parked run that streamed nothing costs no deque.
        self.buf: deque[Event] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.terminal: StopEvent | None = None
        self.consumed = False
        self.seq = seq  # the position of the next event (a continued run goes on counting)

    def push(self, event: Event) -> int:
        """Append ``event`` and return its 0-based position in the stream."""
        seq = self.seq
        self.seq = seq + 1
        buf = self.buf
        if buf is None:
            buf = self.buf = deque()
        buf.append(event)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return seq

    def push_internal(self, event: Event) -> None:
        """Append a runtime-internal event: it takes no position in the stream (``seq``)."""
        seq = self.seq
        self.push(event)  # (push stays free of an extra call: it is the hot path)
        self.seq = seq

    def close(self, terminal: StopEvent) -> None:
        """Append the terminal event; nothing is pushed after it."""
        if self.terminal is None:
            EventStream.push(self, terminal)  # never refused, whatever the bound
            self.terminal = terminal

    def iterate(self, expose_internal: bool = False, after: int | None = None) -> _StreamIterator:
        """Return an iterator over the events not yet consumed (those after seq ``after``)."""
        if self.consumed:
            msg = (
                "this run's event stream was already consumed up to its StopEvent; "
                "iterate stream_events() once, or await the handler for the result"
            )
            raise WorkflowRuntimeError(msg)
        if after is not None:
            self._skip_through(after)
        return _StreamIterator(self, expose_internal)

    def _skip_through(self, after: int) -> None:
        """Drop the buffered events up to seq ``after``; refuse if some were consumed."""
        buf = self.buf or deque()
        numbered = [e for e in buf if not isinstance(e, InternalDispatchEvent)]
        first = self.seq - len(numbered)  # the seq of the oldest event still buffered
        if (
            after + 1 < first
            or after >= self.seq
            or any(type(e) is EventsDroppedEvent for e in buf)
        ):
            msg = (
                f"stream_events(after={after}): this run has written events up to seq "
                f"{self.seq - 1} and keeps those from seq {first} on (an in-memory run does "
                "not keep the events already read); pass a seq in that range, or make the "
                "workflow durable (durable=True) to read its stream again from any seq"
            )
            raise WorkflowRuntimeError(msg)
        drop = after + 1 - first
        while drop > 0:
            if not isinstance(buf.popleft(), InternalDispatchEvent):
                drop -= 1


class BoundedEventStream(EventStream):
    """A stream holding at most ``limit`` unread events (``Workflow(stream_limit=...)``).

    A separate class so that unbounded streams, the default, pay nothing for the check.
    At the bound, ``overflow="fail"`` refuses the write with WorkflowStreamOverflowError;
    ``"drop_oldest"`` drops the oldest unread event and counts it in the
    EventsDroppedEvent marker at the head of the buffer (one marker per gap, beside at
    most ``limit`` events).
    """

    __slots__ = ("limit", "overflow", "where")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        seq: int,
        limit: int,
        overflow: Overflow,
        where: str,
    ) -> None:
        super().__init__(loop, seq)
        self.limit = limit
        self.overflow = overflow
        self.where = where  # "run <id> of workflow <name>", for the error message

    def push(self, event: Event) -> int:
        """Append ``event`` unless the bound refuses it; make room if told to."""
        buf = self.buf
        if buf is not None and len(buf) >= self.limit:
            head = buf[0]
            if self.overflow == "fail":
                msg = (
                    f"{self.where}: {len(buf)} streamed events are unread, the bound set "
                    f"by Workflow(stream_limit={self.limit}); read handler.stream_events() "
                    "while the run goes, raise stream_limit, or pass "
                    "stream_overflow='drop_oldest' to drop the oldest unread events"
                )
                raise WorkflowStreamOverflowError(msg)
            if type(head) is EventsDroppedEvent:
                if len(buf) > 1:
                    del buf[1]
                    head.dropped += 1
            else:
                buf.popleft()
                buf.appendleft(EventsDroppedEvent(dropped=1, stream_limit=self.limit))
        return super().push(event)

    def push_internal(self, event: Event) -> None:
        """Append a runtime-internal event: it takes room in the buffer but is never refused."""
        seq = self.seq
        EventStream.push(self, event)
        self.seq = seq


class _StreamIterator:
    __slots__ = ("_done", "_internal", "_stream")

    def __init__(self, stream: EventStream, expose_internal: bool) -> None:
        self._stream = stream
        self._done = False
        self._internal = expose_internal

    def __aiter__(self) -> _StreamIterator:
        return self

    async def __anext__(self) -> Event:
        stream = self._stream
        while not stream.buf:
            if self._done or stream.consumed:
                raise StopAsyncIteration
            if stream.waiter is not None:
                msg = (
                    "stream_events() is already being iterated by another task; "
                    "a run's stream has a single consumer"
                )
                raise WorkflowRuntimeError(msg)
            waiter = stream.loop.create_future()
            stream.waiter = waiter
            try:
                await waiter
            finally:
                if stream.waiter is waiter:
                    stream.waiter = None
        event = stream.buf.popleft()
        if event is stream.terminal:
            stream.consumed = True
            self._done = True
        elif not self._internal and isinstance(event, InternalDispatchEvent):
            return await self.__anext__()  # shown only to iterators that asked for them
        return event
