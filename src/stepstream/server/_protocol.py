"""uvicorn's HTTP/1.1 protocol (httptools), with a deadline and a size cap for request heads.

uvicorn times out idle kept-alive connections, but a client that connects and sends its
request head a byte at a time (slowloris) holds its connection, and a file descriptor,
for as long as it likes: enough of them and the server cannot accept anyone else.
Here a connection waiting for a request head gets ``header_timeout`` seconds from the
moment it starts waiting (connection made, or previous response sent) to complete it,
then it is closed. httptools sets no bound on a head's size: here a request line and
headers over :data:`MAX_HEAD_BYTES` get ``431`` and the connection is closed. uvicorn
takes the protocol class as ``Config(http=...)``.

Turns: when hundreds of connections send a request (or hang up) at once, one pass of
the event loop would parse every request head (and start its task), or close every
connection, back to back: tens of milliseconds in which nothing else runs. Here at most
``PER_TURN`` request heads and hang-ups are handled per pass of the loop; the others
wait, their reading paused, for the next passes, in the order they came.

httptools, not h11: parsing and writing a short request's messages with h11 was about a
sixth of the server's CPU per short run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stepstream.server._passes import budget
from stepstream.server._runs import logger

__all__ = ["MAX_HEAD_BYTES", "PER_TURN", "guarded_protocol"]

#: Request heads parsed, or hang-ups handled, per pass of the event loop (at most).
PER_TURN = 32

#: The most bytes a request line and its headers may take (names and values counted).
MAX_HEAD_BYTES = 64 * 1024


class _HeadTooLargeError(Exception):
    """Raised in the parser's callback; the parser's error path answers 431."""


class _GuardedProtocol(HttpToolsProtocol):
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._turns = budget("request heads", PER_TURN)
        #: What arrived while waiting for a turn (None: not waiting); b"" is the hang-up.
        self._held: list[bytes] | None = None
        self._in_request = False  # from a request's first byte to its end
        self._head_bytes = 0
        self._oversized = False

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            logger.info(
                "request_head_timeout",
                extra={"client": self.client, "header_timeout": self.header_timeout},
            )
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._held = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        elif self._in_request or self._turns.take(self.resume):
            super().data_received(data)  # a request in progress, or a new one's turn
        else:
            self._held = [data]
            self._unset_keepalive_if_required()  # it is a request: no idle timeout now
            self.flow.pause_reading()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._held is not None:
            self._held.append(b"")
            return True  # the transport stays open until the hang-up's turn
        if self._turns.take(self.resume):
            return None  # the transport closes; connection_lost cleans up
        self._held = [b""]
        return True

    def resume(self) -> None:
        """This connection's turn: handle what arrived meanwhile."""
        held, self._held = self._held, None
        if held is None or self.transport.is_closing():
            return
        hung_up = not held[-1]
        data = b"".join(held)
        if data:
            if not hung_up:
                self.flow.resume_reading()
            super().data_received(data)
        if hung_up:
            self.transport.close()

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_request = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._oversized = True
            raise _HeadTooLargeError

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()  # the head came in time
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_request = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._oversized:
            super().send_400_response(msg)
            return
        logger.info("request_head_too_large", extra={"client": self.client})
        detail = (
            f"request head too large: the request line and headers may take {MAX_HEAD_BYTES} bytes"
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(detail)).encode() + b"\r\n\r\n" + detail
        )
        self.transport.close()

    def on_response_complete(self) -> None:
        # Armed first, unless a pipelined request (its head read already) starts next.
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_timer()
        super().on_response_complete()


def guarded_protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    """A protocol class whose connections must send each request head in time, and small."""
    return type("GuardedHttpToolsProtocol", (_GuardedProtocol,), {"header_timeout": header_timeout})
