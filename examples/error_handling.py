"""Error handling: retry a flaky step with exponential backoff, then recover with @catch_error.

A port of the LlamaIndex Workflows "Error handling" guide, with ``workflows`` renamed
``stepstream`` (and waits shortened so it runs in a moment). ``fetch`` calls a service
that is down: its retry policy retries ``ConnectionError`` with exponential backoff,
three attempts in all; when they are spent, the ``@catch_error`` handler receives a
``StepFailedEvent`` and finishes the run with a cached answer instead of failing it.
Each attempt is its own ``run_step fetch`` span (status ERROR), and the handler's span
links to the last failed one.

Run it::

    python examples/error_handling.py
    stepstream run examples/error_handling.py
"""

import asyncio

from stepstream import Context, Workflow, catch_error, step
from stepstream.events import StartEvent, StepFailedEvent, StopEvent
from stepstream.retry_policy import (
    retry_if_exception_type,
    retry_policy,
    stop_after_attempt,
    wait_exponential,
)


class ServiceDownError(ConnectionError):
    pass


def flaky_call(attempt: int) -> str:
    """The service: down for every attempt in this example."""
    msg = f"service unavailable (attempt {attempt})"
    raise ServiceDownError(msg)


class ResilientWorkflow(Workflow):
    @step(
        retry_policy=retry_policy(
            retry=retry_if_exception_type(ConnectionError),
            wait=wait_exponential(multiplier=0.01, max=0.1),
            stop=stop_after_attempt(3),
        )
    )
    async def fetch(self, ctx: Context, ev: StartEvent) -> StopEvent:
        info = ctx.retry_info()
        print(f"attempt {info.retry_number + 1}")
        return StopEvent(result=flaky_call(info.retry_number + 1))

    @catch_error
    async def recover(self, ev: StepFailedEvent) -> StopEvent:
        print(f"{ev.step_name} failed after {ev.attempts} attempts: {ev.exception}")
        return StopEvent(result="cached answer")


async def main() -> None:
    result = await ResilientWorkflow(timeout=10).run()
    print("Result:", result)


if __name__ == "__main__":
    asyncio.run(main())
