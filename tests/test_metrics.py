"""Metrics: run and step durations, streamed events, active runs and retries."""

import asyncio
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Histogram
from opentelemetry.sdk.metrics.export import Metric
from opentelemetry.sdk.metrics.export import Sum

from _helpers import Failing
from _helpers import Flaky
from _helpers import MyWorkflow
from _helpers import ProgressEvent
from _helpers import Slow
from _helpers import drain
from _helpers import outcome
from stepstream import WorkflowHandler
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

# -- helpers ----------------------------------------------------------------------------


def values(metric: Metric, *keys: str) -> dict[tuple[Any, ...], float]:
    """Per attribute-value tuple: a histogram's count, or a sum's value."""
    out: dict[tuple[Any, ...], float] = {}
    data = metric.data
    if isinstance(data, Histogram):
        for hp in data.data_points:
            labels = hp.attributes or {}
            out[tuple(labels.get(k) for k in keys)] = hp.count
    elif isinstance(data, Sum):
        for sp in data.data_points:
            labels = sp.attributes or {}
            out[tuple(labels.get(k) for k in keys)] = sp.value
    else:
        pytest.fail(f"{metric.name} is a {type(data).__name__}")
    return out


async def stream_of(handler: WorkflowHandler) -> Counter[str]:
    """Run to the end; count the streamed events by type as the caller sees them."""
    events = await drain(handler)
    await outcome(handler)
    return Counter(type(ev).__name__ for ev in events)


async def known_runs() -> dict[str, Counter[str]]:
    """Three seed runs, one failing run and one run with a retried step; streams by workflow."""
    seen: dict[str, Counter[str]] = {name: Counter() for name in ("MyWorkflow", "Failing", "Flaky")}
    for _ in range(3):
        seen["MyWorkflow"] += await stream_of(MyWorkflow(timeout=5).run(first_input="x"))
    seen["Failing"] += await stream_of(Failing(timeout=5).run())
    seen["Flaky"] += await stream_of(Flaky(timeout=5).run())
    return seen


# -- tests ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_duration_counts_runs_by_status(tel: CapturedTelemetry) -> None:
    """stepstream.run.duration counts each run once, labelled with workflow and run.status."""
    await known_runs()
    metric = tel.metrics()["stepstream.run.duration"]
    assert metric.name == attrs.METRIC_RUN_DURATION
    assert metric.unit == "s"
    counts = values(metric, "stepstream.workflow", "stepstream.run.status")
    assert counts == {
        ("MyWorkflow", "ok"): 3,
        ("Failing", "error"): 1,
        ("Flaky", "ok"): 1,
    }
    data = metric.data
    assert isinstance(data, Histogram)
    assert all(point.sum > 0 for point in data.data_points)


@pytest.mark.asyncio
async def test_step_duration_counts_each_attempt_per_step(tel: CapturedTelemetry) -> None:
    """stepstream.step.duration counts every step attempt, by workflow, step and status."""
    await known_runs()
    metric = tel.metrics()[attrs.METRIC_STEP_DURATION]
    assert metric.name == "stepstream.step.duration"
    assert metric.unit == "s"
    counts = values(metric, attrs.WORKFLOW, attrs.STEP, attrs.STEP_STATUS)
    assert counts == {
        ("MyWorkflow", "step_one", "ok"): 3,
        ("MyWorkflow", "step_two", "ok"): 3,
        ("MyWorkflow", "step_three", "ok"): 3,
        ("Failing", "explode", "error"): 1,
        ("Flaky", "begin", "ok"): 1,
        ("Flaky", "flaky", "error"): 1,
        ("Flaky", "flaky", "ok"): 1,
    }


@pytest.mark.asyncio
async def test_events_streamed_sums_per_event_type_match_the_streams(
    tel: CapturedTelemetry,
) -> None:
    """stepstream.events.streamed sums, per workflow and event type, equal what callers saw."""
    seen = await known_runs()
    metric = tel.metrics()["stepstream.events.streamed"]
    assert metric.name == attrs.METRIC_EVENTS_STREAMED
    data = metric.data
    assert isinstance(data, Sum)
    assert data.is_monotonic
    sums = values(metric, attrs.WORKFLOW, "stepstream.event.type")
    expected = {
        (workflow, event_type): n
        for workflow, counter in seen.items()
        for event_type, n in counter.items()
    }
    assert sums == expected
    assert expected["MyWorkflow", "StopEvent"] == 3
    assert expected["MyWorkflow", "ProgressEvent"] > 300
    assert expected["Failing", "WorkflowFailedEvent"] == 1


@pytest.mark.asyncio
async def test_runs_active_is_back_to_zero_after_the_runs(tel: CapturedTelemetry) -> None:
    """stepstream.runs.active returns to 0 for every workflow once its runs have ended."""
    await known_runs()
    metric = tel.metrics()["stepstream.runs.active"]
    assert metric.name == attrs.METRIC_RUNS_ACTIVE
    data = metric.data
    assert isinstance(data, Sum)
    assert not data.is_monotonic
    assert values(metric, attrs.WORKFLOW) == {("MyWorkflow",): 0, ("Failing",): 0, ("Flaky",): 0}


@pytest.mark.asyncio
async def test_runs_active_counts_runs_in_flight(tel: CapturedTelemetry) -> None:
    """stepstream.runs.active reads 2 while two runs are in flight, 0 once they are cancelled."""
    handlers = [Slow(timeout=5).run() for _ in range(2)]
    for handler in handlers:
        async with asyncio.timeout(2):
            async for ev in handler.stream_events():
                if isinstance(ev, ProgressEvent):
                    break
    assert values(tel.metrics()[attrs.METRIC_RUNS_ACTIVE], attrs.WORKFLOW) == {("Slow",): 2}
    for handler in handlers:
        await handler.cancel_run()
        await outcome(handler)
    assert values(tel.metrics()[attrs.METRIC_RUNS_ACTIVE], attrs.WORKFLOW) == {("Slow",): 0}
    statuses = values(tel.metrics()[attrs.METRIC_RUN_DURATION], attrs.RUN_STATUS)
    assert statuses == {("cancelled",): 2}


@pytest.mark.asyncio
async def test_step_retries_counts_the_retried_step(tel: CapturedTelemetry) -> None:
    """stepstream.step.retries counts one retry of Flaky.flaky and nothing for other steps."""
    await known_runs()
    metric = tel.metrics()["stepstream.step.retries"]
    assert metric.name == attrs.METRIC_STEP_RETRIES
    assert values(metric, attrs.WORKFLOW, attrs.STEP) == {("Flaky", "flaky"): 1}


@pytest.mark.asyncio
async def test_a_timed_out_run_is_measured_with_status_timeout(tel: CapturedTelemetry) -> None:
    """A run ending by Workflow(timeout=...) is counted under run.status timeout."""
    handler = Slow(timeout=0.1).run()
    seen = await stream_of(handler)
    assert seen["WorkflowTimedOutEvent"] == 1
    counts = values(tel.metrics()[attrs.METRIC_RUN_DURATION], attrs.WORKFLOW, attrs.RUN_STATUS)
    assert counts == {("Slow", "timeout"): 1}
    steps = values(tel.metrics()[attrs.METRIC_STEP_DURATION], attrs.STEP, attrs.STEP_STATUS)
    assert steps == {("dawdle", "cancelled"): 1}
    assert values(tel.metrics()[attrs.METRIC_RUNS_ACTIVE], attrs.WORKFLOW) == {("Slow",): 0}
