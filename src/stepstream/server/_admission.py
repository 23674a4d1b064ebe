"""Admission: at most so many requests are being worked on at once; the rest wait their turn.

Every request costs the event loop a burst of work before it parks (the request span,
routing, parsing, starting the run, the log lines). When hundreds arrive together, the
loop would run all those bursts back to back in one pass, and every other callback (a
stream's next frame, a step's next turn) would wait for all of them: a burst of 500
``/run`` requests held the loop for a quarter of a second. With admission, requests
beyond ``limit`` wait (nothing is refused), so one pass of the loop holds at most
``limit`` of those bursts. A request stops counting as soon as it only waits: a ``/run``
once its run has started, an event stream once it streams (:func:`parked`).
"""

from __future__ import annotations

import asyncio
import contextvars

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Admission", "parked"]

# The current request's slot, while it holds one: [semaphore] (emptied when given back).
_SLOT: contextvars.ContextVar[list[asyncio.Semaphore] | None] = contextvars.ContextVar(
    "stepstream.server admission slot", default=None
)


def parked() -> None:
    """The current request now only waits (for its run, or for events): give its slot back."""
    slot = _SLOT.get()
    if slot:
        slot.pop().release()


class Admission:
    """ASGI layer: each HTTP request takes a slot first (at most ``limit`` at once)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wait for a slot, serve the request, give the slot back if it still holds it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slots = self._slots
        if slots is None:  # made on first use: inside the loop that serves
            slots = self._slots = asyncio.Semaphore(self.limit)
        await slots.acquire()
        slot = [slots]
        token = _SLOT.set(slot)
        try:
            await self.app(scope, receive, send)
        finally:
            _SLOT.reset(token)
            if slot:
                slot.pop().release()
