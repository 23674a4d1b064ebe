"""The workflows the stepstream replicas of deploy/compose and deploy/k8s serve.

    stepstream serve deploy/cluster_app.py --host 0.0.0.0 --instance-id replica-1
        --durable=postgresql://stepstream:stepstream@postgres:5432/stepstream

Every replica serves the same three durable workflows on one Postgres database, so any
replica answers for any run (docs/durable.md):

- ``pipeline``: three steps that stream progress and take a little time each; a run
  survives the replica that runs it (another takes it over after ``--failover-after``);
- ``approval``: waits for a ``HumanResponseEvent``; a run waiting longer than
  ``--idle-release-after`` is parked (released from memory) until the answer comes;
- ``batch``: one slow step, at most two runs at once in the whole cluster
  (``num_concurrent_runs=2``): more wait in its queue (``stepstream.queue.depth``).

``STEPSTREAM_DEMO_STEP_SECONDS`` (default 0.5) sets how long a step of ``pipeline`` and
``batch`` takes.
"""

# ruff: noqa: INP001 - a file the replicas serve (copied into the image), not a package
import asyncio
import os

from stepstream import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

STEP_SECONDS = float(os.environ.get("STEPSTREAM_DEMO_STEP_SECONDS", "0.5"))


class Progress(Event):
    """A step of a run has done its part."""

    stage: str


class Fetched(Event):
    """The first stage's output."""

    items: int


class Scored(Event):
    """The second stage's output."""

    score: int


class Pipeline(Workflow):
    """Fetch, score, report: three steps, each streaming its progress."""

    @step
    async def fetch(self, ctx: Context, ev: StartEvent) -> Fetched:
        """Pretend to fetch some items (for ``seconds`` of the start event, if given)."""
        await asyncio.sleep(float(ev.get("seconds", STEP_SECONDS)))
        ctx.write_event_to_stream(Progress(stage="fetched"))
        return Fetched(items=int(ev.get("items", 3)))

    @step
    async def score(self, ctx: Context, ev: Fetched) -> Scored:
        """Score them."""
        await asyncio.sleep(STEP_SECONDS)
        ctx.write_event_to_stream(Progress(stage="scored"))
        return Scored(score=ev.items * 10)

    @step
    async def report(self, ctx: Context, ev: Scored) -> StopEvent:
        """Report the score."""
        await asyncio.sleep(STEP_SECONDS)
        ctx.write_event_to_stream(Progress(stage="reported"))
        return StopEvent(result={"score": ev.score})


class Approval(Workflow):
    """Ask a person for approval and wait, however long it takes, for the answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Ask, wait for the HumanResponseEvent, end with the answer."""
        question = str(ev.get("question", "approve?"))
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix=question), timeout=None
        )
        return StopEvent(result={"question": question, "answer": answer.get("response")})


class Batch(Workflow):
    """One slow step; at most two runs at once in the whole cluster."""

    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Work for a while."""
        await asyncio.sleep(STEP_SECONDS * 2)
        ctx.write_event_to_stream(Progress(stage="worked"))
        return StopEvent(result={"n": int(ev.get("n", 0))})


pipeline = Pipeline(timeout=None)
approval = Approval(timeout=None)
batch = Batch(timeout=None, num_concurrent_runs=2)
