"""The ports of LlamaIndex Workflows' documented examples, run as scripts and in-process."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stepstream.telemetry import attributes as attrs
from stepstream.testing import capture_telemetry

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    """Import examples/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"porting_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script(name: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run examples/<name>.py as a script in ``cwd``."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_resources_script_shares_the_cached_memory_between_steps(tmp_path: Path) -> None:
    """examples/resources.py: the second step sees the message the first stored."""
    proc = script("resources", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Memory before step 1 0 message(s)",
        "Memory after step 1 1 message(s)",
        "Memory before step 2 1 message(s)",
        "Memory after step 2 2 message(s)",
        "Result: ['This is the first step', 'This is an input for step 2']",
    ]


@pytest.mark.asyncio
async def test_resources_are_resolved_once_and_recorded_on_each_step_span() -> None:
    """Both steps record a stepstream.resources span event naming get_memory."""
    mod = load("resources")
    with capture_telemetry() as tel:
        result = await mod.WorkflowWithResource(timeout=10).run()
    assert result == ["This is the first step", "This is an input for step 2"]
    events = tel.span_events(attrs.RESOURCES_EVENT)
    assert len(events) == 2
    names = [e.attributes[attrs.RESOURCE_NAMES] for e in events if e.attributes]
    assert [list(n) for n in names if isinstance(n, tuple | list)] == [
        ["get_memory"],
        ["get_memory"],
    ]
