"""Retries: a flaky step fails twice, then succeeds on its third attempt.

``fetch`` is decorated with ``@step(retry_policy=retry_policy(wait=wait_fixed(0.05),
stop=stop_after_attempt(4)))``: up to 4 attempts, 0.05 s apart. It counts its attempts
in the run's ``ctx.store`` (which lives as long as the run, across attempts), so the
failures are deterministic: attempts 1 and 2 raise ``ConnectionError``, attempt 3
returns. Each attempt streams a line, and each attempt is its own step span
(``run_step fetch`` with ``stepstream.step.attempt`` = 1, 2, 3; the failed ones have
status ERROR).

Run it::

    python examples/retries.py
    stepstream run examples/retries.py
"""

import asyncio
from typing import Any

from stepstream import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from stepstream.retry_policy import retry_policy, stop_after_attempt, wait_fixed

FAILURES = 2  # the first FAILURES attempts of each run fail


class AttemptEvent(Event):
    attempt: int
    msg: str


class FlakyWorkflow(Workflow):
    """Fetches a value from a service that fails the first two times it is asked."""

    @step(retry_policy=retry_policy(wait=wait_fixed(0.05), stop=stop_after_attempt(4)))
    async def fetch(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        attempt: int = await ctx.store.get("attempts", 0) + 1
        await ctx.store.set("attempts", attempt)
        if attempt <= FAILURES:
            ctx.write_event_to_stream(
                AttemptEvent(attempt=attempt, msg=f"attempt {attempt}: service unavailable")
            )
            msg = f"service unavailable (attempt {attempt})"
            raise ConnectionError(msg)
        ctx.write_event_to_stream(AttemptEvent(attempt=attempt, msg=f"attempt {attempt}: ok"))
        return StopEvent(result=f"fetched after {attempt} attempts")


async def main() -> None:
    handler = FlakyWorkflow(timeout=30).run()
    async for ev in handler.stream_events():
        if isinstance(ev, AttemptEvent):
            print(ev.msg)
    print(await handler)


if __name__ == "__main__":
    asyncio.run(main())
