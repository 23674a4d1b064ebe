"""uvicorn's HTTP/1.1 protocol with a deadline for each request's head, and turns for bursts.

uvicorn times out idle kept-alive connections, but a client that connects and sends its
request head a byte at a time (slowloris) holds its connection, and a file descriptor,
for as long as it likes: enough of them and the server cannot accept anyone else.
Here a connection waiting for a request head gets ``header_timeout`` seconds from the
moment it starts waiting (connection made, or previous response sent) to complete it,
then it is closed. uvicorn takes the protocol class as ``Config(http=...)``.

Turns: when hundreds of connections send a request (or hang up) at once, one pass of
the event loop would parse every request head (and start its task), or close every
connection, back to back: tens of milliseconds in which nothing else runs. Here at most
``PER_TURN`` request heads and hang-ups are handled per pass of the loop; the others
wait, their reading paused, for the next passes, in the order they came.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from stepstream.server._passes import budget
from stepstream.server._runs import logger

__all__ = ["PER_TURN", "guarded_protocol"]

#: Request heads parsed, or hang-ups handled, per pass of the event loop (at most).
PER_TURN = 32


class _GuardedH11Protocol(H11Protocol):
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None
        self._turns = budget("request heads", PER_TURN)
        #: What arrived while waiting for a turn (None: not waiting); b"" is the hang-up.
        self._held: list[bytes] | None = None

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
        elif self.conn.their_state is not h11.IDLE or self._turns.take(self.resume):
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
            return super().eof_received()
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
        if hung_up and not super().eof_received():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._seen_cycle:  # a request head was read: it is in time
            self._seen_cycle = self.cycle
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request that the base class reads next disarms it.
        if not self.transport.is_closing():
            self._arm_head_timer()
        super().on_response_complete()


def guarded_protocol(header_timeout: float) -> type[H11Protocol]:
    """An H11Protocol class whose connections must send each request head in time."""
    return type("GuardedH11Protocol", (_GuardedH11Protocol,), {"header_timeout": header_timeout})
