"""The one stream helper every test module uses: read a run's stream without hanging."""

import asyncio

from stepstream import Event, WorkflowHandler


async def drain(handler: WorkflowHandler, timeout: float = 5) -> list[Event]:
    """Collect the rest of a run's stream, failing instead of hanging."""
    async with asyncio.timeout(timeout):
        return [ev async for ev in handler.stream_events()]
