"""Runs started by another version of a workflow's code: left pending, resumed or failed.

A "restart" here is ``runtime.destroy()`` (the runs stay pending) and a new runtime on the
same database; tests/test_durable_ops.py does it with two processes and kill -9.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stepstream import Workflow
from stepstream import step
from stepstream.errors import DurableVersionError
from stepstream.errors import WorkflowRuntimeError
from stepstream.errors import WorkflowValidationError
from stepstream.events import Event
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.events import WorkflowFailedEvent

pytest.importorskip("dbos")

from stepstream.durable import DBOSRuntime


class Sum(Event):
    """A partial result."""

    total: int


class Other(Event):
    """Only the second version has it."""

    note: str


class Gated(Workflow):
    """Version 1: two steps; the second waits for ``gate``."""

    gate: asyncio.Event
    waiting: asyncio.Event

    @step
    async def first(self, ev: StartEvent) -> Sum:
        """One."""
        return Sum(total=1)

    @step
    async def second(self, ev: Sum) -> StopEvent:
        """Wait for the gate; two."""
        self.waiting.set()
        await self.gate.wait()
        return StopEvent(result=ev.total + 1)


class GatedV2(Gated):
    """Version 2: another step graph (first may return Other, which a new step takes)."""

    @step
    async def first(self, ev: StartEvent) -> Sum | Other:  # type: ignore[override]
        """One, as before."""
        return Sum(total=1)

    @step
    async def noted(self, ev: Other) -> StopEvent:
        """New."""
        return StopEvent(result=ev.note)


def make(cls: type[Gated], runtime: DBOSRuntime, **options: Any) -> Gated:
    """A workflow named Gated (both versions share the name), its gate shut."""
    wf = cls(runtime=runtime, timeout=30, workflow_name="Gated", **options)
    wf.gate, wf.waiting = asyncio.Event(), asyncio.Event()
    return wf


def sqlite(tmp_path: Path) -> str:
    """A SQLite database in the test's directory."""
    return f"sqlite:///{tmp_path / 'durable.sqlite'}"


async def pending_run(url: str, cls: type[Gated], **options: Any) -> str:
    """Start a run of ``cls``, stop the runtime while it waits: the run stays pending."""
    runtime = DBOSRuntime(url)
    wf = make(cls, runtime, **options)
    await runtime.launch()
    handler = wf.run()
    await wf.waiting.wait()
    await asyncio.sleep(0.3)  # its checkpoint is committed
    await runtime.destroy()
    return handler.run_id


async def finish_with(url: str, cls: type[Gated], run_id: str, **options: Any) -> Any:
    """Resume ``run_id`` with ``cls``, open its gate, return its result."""
    runtime = DBOSRuntime(url)
    wf = make(cls, runtime, **options)
    await runtime.launch()
    try:
        handler = await runtime.handler(run_id)
        wf.gate.set()
        return await handler
    finally:
        await runtime.destroy()


@pytest.mark.asyncio
async def test_a_run_of_another_step_graph_is_left_pending_for_its_version(
    durable_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another graph refuses it (naming run, workflow, versions); the old one drains it."""
    url = durable_url
    run_id = await pending_run(url, Gated)
    runtime = DBOSRuntime(url)
    make(GatedV2, runtime)
    await runtime.launch()
    try:
        with pytest.raises(DurableVersionError) as refused:
            await runtime.handler(run_id, timeout=20)
        with pytest.raises(DurableVersionError):  # asked again: the same answer at once
            await runtime.handler(run_id, timeout=0.1)
    finally:
        await runtime.destroy()
    error = refused.value
    assert (error.run_id, error.workflow) == (run_id, "Gated")
    assert error.recorded.startswith("graph-")
    assert error.current.startswith("graph-")
    assert error.recorded != error.current
    assert str(error) == (
        f"durable run {run_id} of workflow Gated was started by version {error.recorded} of "
        f"its code, and this process has version {error.current}; it is left pending: a "
        f"process running version {error.recorded} resumes it when it launches; or construct "
        "the DBOSRuntime with on_version_mismatch='resume' to resume it on this version, or "
        "'fail' to end it"
    )
    assert str(error) in caplog.text  # logged when the launch refused it
    assert await finish_with(url, Gated, run_id) == 2  # pending, not failed


@pytest.mark.asyncio
async def test_an_explicit_version_replaces_the_graph_hash(tmp_path: Path) -> None:
    """Workflow(version=...): the same graph with another version is refused by default."""
    url = sqlite(tmp_path)
    run_id = await pending_run(url, Gated, version="1")
    with pytest.raises(DurableVersionError, match=r"started by version 1 of its code, and this "
                       r"process has version 2; it is left pending"):  # fmt: skip
        await finish_with(url, Gated, run_id, version="2")
    assert await finish_with(url, GatedV2, run_id, version="1") == 2  # same version


@pytest.mark.asyncio
async def test_on_version_mismatch_resume_resumes_the_run(tmp_path: Path) -> None:
    """'resume': the run goes on with this version's code."""
    url = sqlite(tmp_path)
    run_id = await pending_run(url, Gated, version="1")
    runtime = DBOSRuntime(url, on_version_mismatch="resume")
    wf = make(Gated, runtime, version="2")
    await runtime.launch()
    try:
        handler = await runtime.handler(run_id)
        wf.gate.set()
        assert await handler == 2
    finally:
        await runtime.destroy()


@pytest.mark.asyncio
async def test_on_version_mismatch_fail_ends_the_run_failed(durable_url: str) -> None:
    """'fail': the run is recorded as failed with DurableVersionError; it stays so."""
    url = durable_url
    run_id = await pending_run(url, Gated, version="1")
    runtime = DBOSRuntime(url, on_version_mismatch="fail")
    make(Gated, runtime, version="2")
    await runtime.launch()
    try:
        with pytest.raises(DurableVersionError, match=r"it is ended as failed"):
            await runtime.handler(run_id, timeout=20)
    finally:
        await runtime.destroy()
    runtime = DBOSRuntime(url)
    make(Gated, runtime, version="1")
    await runtime.launch()
    try:
        with pytest.raises(WorkflowRuntimeError, match=r"has ended \(DBOS status SUCCESS\)"):
            await runtime.handler(run_id)
    finally:
        await runtime.destroy()


def test_bad_versions_and_policies_are_named(tmp_path: Path) -> None:
    """version= takes a non-empty string; on_version_mismatch one of three words."""
    url = sqlite(tmp_path)
    with pytest.raises(WorkflowValidationError, match=r"Gated\(version=...\) must be a non-empty"):
        Gated(version="  ")
    with pytest.raises(WorkflowValidationError, match=r"on_version_mismatch=...\) must be one of"):
        DBOSRuntime(url, on_version_mismatch="drain")


def test_the_failed_terminal_names_the_version_error() -> None:
    """The terminal event of a run failed for its version reads back as that error."""
    event = WorkflowFailedEvent(step_name="<version>", exception=DurableVersionError("m"))
    again = WorkflowFailedEvent.model_validate_json(event.model_dump_json())
    assert again.exception_type == "DurableVersionError"
    assert again.message == "m"
