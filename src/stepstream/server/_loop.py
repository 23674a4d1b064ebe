"""The event loop ``stepstream serve`` runs on: asyncio's, accepting in bounded batches.

When the listening socket is readable, asyncio accepts every connection that waits, up to
the listen backlog (uvicorn's: 2,048), in one callback, and sets each one up (a task per
connection, then its protocol and transport) in the next passes of the loop: a burst of
500 connections took 10-13 ms of one pass. This loop accepts at most
:data:`ACCEPTS_PER_PASS` per callback; the socket stays readable, so the rest are accepted
on the next passes, and other callbacks run in between.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

__all__ = ["ACCEPTS_PER_PASS", "ServingLoop"]

#: Connections accepted per pass of the loop, at most (per listening socket).
ACCEPTS_PER_PASS = 32


class ServingLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, accepting at most ACCEPTS_PER_PASS connections per pass."""

    def _accept_connection(
        self,
        protocol_factory: Any,
        sock: socket.socket,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *more: Any,
    ) -> None:
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory, sock, sslcontext, server, min(backlog, ACCEPTS_PER_PASS), *more
        )
