"""`import stepstream` loads no recording machinery until something records.

An application that never observes its runs should not carry the OpenTelemetry SDK,
structlog, orjson or rich: they cost import time, and every object they create is
traversed by each full garbage collection for the life of the process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("opentelemetry.sdk", "structlog", "orjson", "rich", "click")


def _loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return which HEAVY modules it left loaded."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_import_and_unobserved_run_load_no_recording_machinery() -> None:
    """Defining, running and streaming an unobserved workflow loads none of them."""
    loaded = _loaded_after(
        """
        import asyncio
        from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step

        class Tick(Event):
            i: int

        class Flow(Workflow):
            @step
            async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
                ctx.write_event_to_stream(Tick(i=1))
                return StopEvent(result="done")

        async def main() -> None:
            handler = Flow().run()
            seen = [ev async for ev in handler.stream_events()]
            assert await handler == "done" and len(seen) == 2, seen

        asyncio.run(main())
        """
    )
    assert loaded == []


def test_configure_telemetry_is_still_one_attribute_away() -> None:
    """The lazily imported names resolve from both packages and show in dir()."""
    loaded = _loaded_after(
        """
        import stepstream, stepstream.telemetry
        assert "configure_telemetry" in dir(stepstream)
        assert stepstream.configure_telemetry is stepstream.telemetry.configure_telemetry
        from stepstream import TelemetryHandle
        from stepstream.telemetry import TelemetryWarning, add_correlation
        assert TelemetryHandle.__name__ == "TelemetryHandle"
        assert callable(add_correlation) and issubclass(TelemetryWarning, Warning)
        """
    )
    assert "opentelemetry.sdk" in loaded
    assert "structlog" in loaded


def test_unknown_attribute_names_the_module() -> None:
    """A misspelt name fails with the usual AttributeError, not a lazy-import error."""
    result = subprocess.run(
        [sys.executable, "-c", "import stepstream; stepstream.configure_telemtry"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert "module 'stepstream' has no attribute 'configure_telemtry'" in result.stderr


def test_structlog_configured_after_the_workflow_was_built_receives_lines() -> None:
    """The structlog check runs per run: configuring it late still routes the lines."""
    loaded = _loaded_after(
        """
        import asyncio
        from stepstream import Context, StartEvent, StopEvent, Workflow, step

        class Flow(Workflow):
            @step
            async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
                return StopEvent(result=1)

        wf = Flow()
        import structlog
        from structlog.testing import capture_logs

        async def main() -> list[dict[str, object]]:
            with capture_logs() as logs:
                await wf.run()
            return logs

        logs = asyncio.run(main())
        assert any(line["event"] == "run_started" for line in logs), logs
        """
    )
    assert "structlog" in loaded
