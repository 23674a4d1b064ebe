"""uvicorn's HTTP/1.1 protocol with a deadline for each request's line and headers.

uvicorn times out idle kept-alive connections, but a client that connects and sends its
request head a byte at a time (slowloris) holds its connection, and a file descriptor,
for as long as it likes: enough of them and the server cannot accept anyone else.
Here a connection waiting for a request head gets ``header_timeout`` seconds from the
moment it starts waiting (connection made, or previous response sent) to complete it,
then it is closed. uvicorn takes the protocol class as ``Config(http=...)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from stepstream.server._runs import logger

__all__ = ["guarded_protocol"]


class _GuardedH11Protocol(H11Protocol):
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None

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
        super().connection_lost(exc)

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
