"""One subscriber's stream of a run: SSE or NDJSON frames read from the run's event log.

Every SSE frame carries ``id:`` (the run-wide seq, what ``Last-Event-ID`` resumes
after) and ``event:`` (the event type); every NDJSON line carries ``seq``. A subscriber
reads the log from its own cursor in batches of at most ``BATCH`` frames, so its memory
is bounded whatever the run writes; a subscriber too slow to take a frame within
``send_timeout`` is dropped; one whose cursor fell behind what the log keeps gets a
final ``StreamClosedEvent`` frame saying which events are gone. Idle SSE streams get a
``: heartbeat`` comment every ``heartbeat`` seconds. The stream of a finished run
replays what the log holds and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import Message, Receive, Scope, Send

from stepstream.events import Event
from stepstream.server._envelope import EncodedEvent, encode_event, frame_form
from stepstream.server._log import Gap, RunLog
from stepstream.server._passes import budget
from stepstream.server._runs import logger

__all__ = [
    "BATCH",
    "Sender",
    "StreamClosedEvent",
    "StreamLimiter",
    "StreamOptions",
    "Writer",
    "closing_frame",
    "event_stream",
]

#: The most frames a subscriber takes from the log per write.
BATCH = 256
#: The most loop turns a subscriber waits for more events before writing what it has.
COALESCE_TURNS = 16
#: Subscribers that write a batch of frames per pass of the loop, at most.
WRITES_PER_PASS = 32
#: Streams that end (their run's end reached) per pass of the loop, at most.
ENDS_PER_PASS = 16


class StreamClosedEvent(Event):
    """The last frame of a stream the server closed before the run's end, and why.

    ``reason`` is ``events_dropped`` (the server no longer holds the events after
    ``resume_after_sequence``: the run's log keeps its last ``event_log_limit`` events) or
    ``server_shutdown``. Reconnect with ``after_sequence`` to go on from what is kept.
    """

    reason: Literal["events_dropped", "server_shutdown"]
    detail: str
    resume_after_sequence: int


class StreamLimiter:
    """A cap on the concurrent event streams of one server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def try_acquire(self) -> bool:
        """Take a slot; False when every slot is taken."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        self.open -= 1


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How one subscriber wants its frames."""

    sse: bool
    qualified_name: bool
    heartbeat: float | None
    send_timeout: float

    @property
    def form(self) -> int:
        """The frame form (:func:`frame_form`) of these options."""
        return frame_form(self.sse, self.qualified_name)


def closing_frame(options: StreamOptions, closed: StreamClosedEvent) -> bytes:
    encoded = encode_event(closed.resume_after_sequence, closed)
    envelope = encoded.envelope(options.qualified_name)
    if options.sse:  # no id: the frame is not a position in the run's stream
        return b"event: %s\ndata: %s\n\n" % (encoded.type.encode(), envelope)
    return envelope + b"\n"


def _gap_event(gap: Gap) -> StreamClosedEvent:
    return StreamClosedEvent(
        reason="events_dropped",
        detail=(
            f"events before seq {gap.first_seq} are no longer held: the server keeps the last "
            f"{gap.limit} events of a run (WorkflowServer(event_log_limit=...)); resume with "
            f"after_sequence={gap.first_seq - 1} to read on from the oldest one kept"
        ),
        resume_after_sequence=gap.first_seq - 1,
    )


async def _watch_disconnect(receive: Receive) -> None:
    """Return when the client goes away (the request body is already read)."""
    for _ in range(1_000_000):  # bounded: a client sends one disconnect, not a million
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Sender:
    """Sends body chunks, each within ``timeout`` seconds (a reader that stalls is dropped)."""

    def __init__(self, send: Send, timeout: float) -> None:
        self._send = send
        self._timeout = timeout

    async def __call__(self, body: bytes, more: bool = True) -> None:
        message: Message = {"type": "http.response.body", "body": body, "more_body": more}
        async with asyncio.timeout(self._timeout):
            await self._send(message)


async def _gather(log: RunLog, position: int) -> list[EncodedEvent] | Gap:
    """What the log holds from ``position``, once the events arriving right now are in.

    While the run keeps appending, give it up to ``COALESCE_TURNS`` turns of the loop
    before reading, so that a fast stream goes out in one write (one send through the
    ASGI layers, one syscall) per batch rather than per event. A run that is not
    appending costs one turn: an event is never held back waiting for another.
    """
    for _ in range(COALESCE_TURNS):
        end = log.end
        if end - position >= BATCH:
            break
        await asyncio.sleep(0)
        if log.end == end:
            break
    return log.read(position, BATCH)


async def _pump_frames(
    log: RunLog, position: int, options: StreamOptions, send: Sender, stop: asyncio.Event
) -> None:
    """Write the log's frames from ``position`` on until the run's end (or a Gap, or stop)."""
    form = options.form
    # Many subscribers of a fast run: WRITES_PER_PASS of them write per pass of the loop
    # (the others on the next passes, with what came meanwhile in the same write).
    writes = budget("stream writes", WRITES_PER_PASS)
    stopped: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            batch = log.read(position, BATCH)
            if batch and not isinstance(batch, Gap) and len(batch) < BATCH and not log.closed:
                batch = await _gather(log, position)
            if batch and not isinstance(batch, Gap) and await writes.turn():
                batch = log.read(position, BATCH)  # it waited: take what came meanwhile
            if isinstance(batch, Gap):
                await send(closing_frame(options, _gap_event(batch)))
                return
            if batch:
                position += len(batch)
                if log.closed:  # a finished run's frames are made for this reader only
                    await send(b"".join([e.render(form) for e in batch]))
                else:  # made once per event and form, shared by the live subscribers
                    log.shares_frames = True
                    await send(b"".join([e.frame(form) for e in batch]))
                continue
            if log.closed:
                return
            waiting: set[asyncio.Future[Any]] = {log.changed(), stopped}
            done, _ = await asyncio.wait(
                waiting, timeout=options.heartbeat, return_when=asyncio.FIRST_COMPLETED
            )
            if not done and options.sse:
                await send(b": heartbeat\n\n")
    finally:
        stopped.cancel()
    if stop.is_set() and not log.closed:
        closed = StreamClosedEvent(
            reason="server_shutdown",
            detail="the server is shutting down; reconnect to another instance to go on",
            resume_after_sequence=-1,
        )
        await send(closing_frame(options, closed))


#: Writes one subscriber's frames with the sender it is given (a durable run's stream).
Writer = Callable[[Sender], Coroutine[Any, Any, None]]


async def event_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    log: RunLog,
    position: int,
    options: StreamOptions,
    stop: asyncio.Event,
    writer: Writer | None = None,
) -> None:
    """Answer one subscriber with the run's frames from ``position``; ends at the run's end.

    ``writer``, when given, writes the frames instead of reading them from ``log``.
    """
    del scope
    media = b"text/event-stream" if options.sse else b"application/x-ndjson"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", media + b"; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),  # proxies must not hold frames back
            ],
        }
    )
    sender = Sender(send, options.send_timeout)
    if writer is None:
        writing = asyncio.ensure_future(_pump_frames(log, position, options, sender, stop))
    else:
        writing = asyncio.ensure_future(writer(sender))
    watcher = asyncio.ensure_future(_watch_disconnect(receive))
    try:
        await asyncio.wait({writing, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writing, watcher):
            task.cancel()
        await asyncio.wait({writing, watcher})
    if not watcher.cancelled() and watcher.exception() is not None:
        return  # the connection broke under us: nothing more can be sent
    if writing.cancelled():
        return  # the client went away
    problem = writing.exception()
    if problem is None:
        # The streams of a run end together; ending one (the last chunk, the request's
        # span, metrics and log line) is work: ENDS_PER_PASS of them per pass of the loop.
        await budget("stream ends", ENDS_PER_PASS).turn()
        with contextlib.suppress(OSError, TimeoutError):
            await sender(b"", more=False)
    elif isinstance(problem, TimeoutError):
        logger.warning("subscriber_too_slow", extra={"send_timeout": options.send_timeout})
    elif not isinstance(problem, OSError):
        raise problem
