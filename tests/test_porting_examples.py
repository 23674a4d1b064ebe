"""The ports of LlamaIndex Workflows' documented examples, run as scripts and in-process."""

import json
import textwrap
from pathlib import Path

import pytest

from _helpers import example_output
from _helpers import load_example
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry


def test_resources_script_shares_the_cached_memory_between_steps(tmp_path: Path) -> None:
    """examples/resources.py: the second step sees the message the first stored."""
    assert example_output("resources", tmp_path) == textwrap.dedent(
        """\
        Memory before step 1 0 message(s)
        Memory after step 1 1 message(s)
        Memory before step 2 1 message(s)
        Memory after step 2 2 message(s)
        Result: ['This is the first step', 'This is an input for step 2']
        """
    )


@pytest.mark.asyncio
async def test_resources_are_resolved_once_and_recorded_on_each_step_span(
    tel: CapturedTelemetry,
) -> None:
    """Both steps record a stepstream.resources span event naming get_memory."""
    mod = load_example("resources")
    result = await mod.WorkflowWithResource(timeout=10).run()
    assert result == ["This is the first step", "This is an input for step 2"]
    events = tel.span_events(attrs.RESOURCES_EVENT)
    assert len(events) == 2
    names = [e.attributes[attrs.RESOURCE_NAMES] for e in events if e.attributes]
    assert [list(n) for n in names if isinstance(n, tuple | list)] == [
        ["get_memory"],
        ["get_memory"],
    ]


def test_hitl_saved_context_continues_in_a_second_process(tmp_path: Path) -> None:
    """examples/hitl_saved_context.py: one process asks and saves, another continues."""
    assert example_output("hitl_saved_context", tmp_path, "ask") == "Enter a number: \n"
    saved = json.loads((tmp_path / "hitl-run-123.json").read_text())
    assert saved["is_running"] is True
    assert example_output("hitl_saved_context", tmp_path, "answer", "42") == "Result: 42\n"


@pytest.mark.asyncio
async def test_hitl_saved_context_is_one_trace_across_both_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tel: CapturedTelemetry
) -> None:
    """Both requests' run spans share a trace; the second links to the first."""
    monkeypatch.chdir(tmp_path)
    mod = load_example("hitl_saved_context")
    assert await mod.first_request() == "Enter a number: "
    assert await mod.second_request("7") == "7"
    first, second = tel.named("invoke_workflow NumberWorkflow")
    assert first.context is not None
    assert second.context is not None
    assert first.context.trace_id == second.context.trace_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]


def test_error_handling_script_retries_then_recovers(tmp_path: Path) -> None:
    """examples/error_handling.py: three attempts, then the handler's cached answer."""
    assert example_output("error_handling", tmp_path) == textwrap.dedent(
        """\
        attempt 1
        attempt 2
        attempt 3
        fetch failed after 3 attempts: service unavailable (attempt 3)
        Result: cached answer
        """
    )


@pytest.mark.asyncio
async def test_error_handling_records_each_attempt_and_links_the_handler(
    tel: CapturedTelemetry,
) -> None:
    """Three ERROR spans for fetch; the handler's span links to the last; the run is ok."""
    mod = load_example("error_handling")
    assert await mod.ResilientWorkflow(timeout=10).run() == "cached answer"
    attempts = tel.named("run_step fetch")
    assert [s.status.status_code.name for s in attempts] == ["ERROR", "ERROR", "ERROR"]
    assert len(tel.lines("step_retry")) == 2
    handler = tel.one("run_step recover")
    last = attempts[-1].context
    assert last is not None
    assert [link.context.span_id for link in handler.links] == [last.span_id]
    run = tel.one("invoke_workflow ResilientWorkflow")
    assert run.attributes is not None
    assert run.attributes["stepstream.run.status"] == "ok"


def test_fan_in_script_runs_the_concurrent_execution_guide(tmp_path: Path) -> None:
    """examples/fan_in.py: whole-batch join, Take(1), nested joins, a three-parameter step."""
    assert example_output("fan_in", tmp_path) == textwrap.dedent(
        """\
        concurrent: {'finished': [3, 2, 1, 0], 'sorted': [0, 1, 2, 3]}
        fastest: 3
        nested: [(0, 2), (1, 2), (2, 2)]
        assemble: ['Query 1', 'Query 2', 'Query 3']
        """
    )


@pytest.mark.asyncio
async def test_fan_in_join_span_links_the_worker_spans(tel: CapturedTelemetry) -> None:
    """The join of ConcurrentFlow links to the four workers whose Done it collected."""
    mod = load_example("fan_in")
    assert (await mod.ConcurrentFlow(timeout=10).run())["sorted"] == [0, 1, 2, 3]
    join = tel.one("run_step join")
    workers = {s.context.span_id: s for s in tel.named("run_step work") if s.context}
    linked = [link.context.span_id for link in join.links]
    assert len(linked) == len(set(linked)) == 4
    assert set(linked) <= set(workers)
