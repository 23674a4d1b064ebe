"""Bounded work per pass of the event loop, for what arrives all at once.

One pass of an asyncio loop runs every callback that was ready when it began. When
hundreds of connections send a request at once, or hundreds of event streams end
together, their handling would run back to back in one pass: tens of milliseconds in
which no other callback (a timer, another stream's frame) runs. A :class:`PassBudget`
lets at most ``per_pass`` of them go on per pass, the others in order on the next passes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["PassBudget", "budget"]


class PassBudget:
    """At most ``per_pass`` turns per pass of one event loop, handed out in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_pass: int) -> None:
        self.per_pass = per_pass
        self._loop = loop
        self._used = 0
        self._waiting: deque[Callable[[], None]] = deque()
        self._next_pass: asyncio.Handle | None = None

    def take(self, later: Callable[[], None]) -> bool:
        """A turn now (True), or ``later()`` is called on the pass that has one (False)."""
        if self._next_pass is None:
            self._next_pass = self._loop.call_soon(self._new_pass)
        if self._used < self.per_pass and not self._waiting:
            self._used += 1
            return True
        self._waiting.append(later)
        return False

    async def turn(self) -> bool:
        """Return on a pass of the loop with a turn left; True if that was a later pass.

        At once (False) when this pass has a turn left.
        """
        if self._next_pass is None:
            self._next_pass = self._loop.call_soon(self._new_pass)
        if self._used < self.per_pass and not self._waiting:
            self._used += 1
            return False
        ready: asyncio.Future[None] = self._loop.create_future()

        def go() -> None:
            if not ready.done():  # the waiting task may have been cancelled
                ready.set_result(None)

        self._waiting.append(go)
        await ready
        return True

    def _new_pass(self) -> None:
        self._next_pass = None
        self._used = 0
        waiting = self._waiting
        while waiting and self._used < self.per_pass:
            self._used += 1
            waiting.popleft()()
        if waiting:
            self._next_pass = self._loop.call_soon(self._new_pass)


_BUDGETS: dict[tuple[asyncio.AbstractEventLoop, str], PassBudget] = {}


def budget(name: str, per_pass: int) -> PassBudget:
    """The running loop's budget called ``name`` (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _BUDGETS.get((loop, name))
    if found is None:
        if len(_BUDGETS) > 64:  # noqa: PLR2004 - budgets of loops long closed (tests make many)
            for key in [k for k in _BUDGETS if k[0].is_closed()]:
                del _BUDGETS[key]
        found = _BUDGETS[loop, name] = PassBudget(loop, per_pass)
    return found
