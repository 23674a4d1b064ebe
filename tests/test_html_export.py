"""``stepstream traces export RUN --html FILE``: one self-contained page per recorded run.

Runs are recorded through the CLI in a subprocess (``python -m stepstream run``), once per
module, and every assertion reads the page the CLI wrote.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _helpers import EXAMPLES
from _helpers import stepstream_cli

EXAMPLE = EXAMPLES / "streaming.py"
STEPS = ("step_one", "step_two", "step_three")
EVENTS_IN_OUT = {
    "step_one": ("StartEvent", "FirstEvent"),
    "step_two": ("FirstEvent", "SecondEvent"),
    "step_three": ("SecondEvent", "StopEvent"),
}
SVG_NAMESPACE = "http://www.w3.org/2000/svg"

# 1,200 streamed events with markup in their payloads, then a step that fails.
BIG_FAILING_WORKFLOW = """\
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Chunk(Event):
    text: str


class Produced(Event):
    n: int


class BigWorkflow(Workflow):
    @step
    async def produce(self, ctx: Context, ev: StartEvent) -> Produced:
        for i in range(1200):
            ctx.write_event_to_stream(Chunk(text=f"<script>alert({i})</script> & more"))
        return Produced(n=1200)

    @step
    async def fail(self, ctx: Context, ev: Produced) -> StopEvent:
        raise ValueError("bad <b>input</b>")
"""


@dataclass(frozen=True)
class Exported:
    """A recorded run, its export subprocess and the page it wrote."""

    directory: Path
    proc: subprocess.CompletedProcess[str]
    page: str
    run: dict[str, Any]


def export(directory: Path, ref: str = "last", name: str = "out.html") -> Exported:
    """Export ``ref`` from ``directory``'s telemetry and read back the page and the run's JSON."""
    proc = stepstream_cli("traces", "export", ref, "--html", name, cwd=directory)
    page = (directory / name).read_text(encoding="utf-8") if proc.returncode == 0 else ""
    shown = stepstream_cli("traces", "show", ref, "--json", cwd=directory)
    assert shown.returncode == 0, shown.stderr
    return Exported(directory, proc, page, json.loads(shown.stdout))


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The seed example's run, recorded and exported once for the module."""
    directory = tmp_path_factory.mktemp("streaming")
    recorded = stepstream_cli("run", str(EXAMPLE), cwd=directory)
    assert recorded.returncode == 0, recorded.stderr
    return export(directory)


@pytest.fixture(scope="module")
def big_failing(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A failing run with 1,200 streamed events carrying markup, recorded and exported once."""
    directory = tmp_path_factory.mktemp("big")
    (directory / "big.py").write_text(BIG_FAILING_WORKFLOW, encoding="utf-8")
    recorded = stepstream_cli("run", "big.py", cwd=directory)
    assert recorded.returncode == 1, recorded.stderr
    return export(directory)


def stream_events(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``stepstream.event`` span event of the run, from ``traces show --json``."""
    return [e for s in run["spans"] for e in s["events"] if e["name"] == "stepstream.event"]


def bar_fill(page: str, span_name: str) -> str:
    """The fill colour of the timeline bar whose hover title starts with ``span_name``."""
    match = re.search(rf'<rect class="bar"[^>]* fill="([^"]+)"><title>{span_name}\n', page)
    assert match is not None, f"no timeline bar for {span_name}"
    return match.group(1)


def test_export_exits_zero_and_writes_one_html_file(streaming: Exported) -> None:
    """The export command exits 0, says where it wrote, and writes an HTML document."""
    assert streaming.proc.returncode == 0, streaming.proc.stderr
    assert "wrote out.html" in streaming.proc.stderr
    assert streaming.page.startswith("<!DOCTYPE html>")
    assert streaming.page.rstrip().endswith("</html>")


def test_export_references_nothing_on_the_network(streaming: Exported) -> None:
    """The page has no URL but the SVG namespace: no remote script, stylesheet, font or image."""
    page = streaming.page
    urls = set(re.findall(r"https?://[^\s\"'<>)]*", page, flags=re.IGNORECASE))
    assert urls <= {SVG_NAMESPACE}
    lowered = page.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "@import", "@font-face", "src=", "href="):
        assert needle not in lowered, needle
    references = re.findall(r"url\(\s*['\"]?([^)'\"]*)", page)
    assert all(ref.startswith("#") for ref in references), references


def test_header_names_workflow_ids_status_duration_and_event_count(streaming: Exported) -> None:
    """The header shows the workflow, run_id, trace_id, status, duration and events streamed."""
    run, page = streaming.run, streaming.page
    root = run["spans"][0]
    assert "MyWorkflow" in page
    assert run["run_id"] in page
    assert root["trace_id"] in page
    assert ">ok<" in page
    assert f"{(root['end_ns'] - root['start_ns']) / 1e6:,.1f} ms" in page
    assert f"<dd>{len(stream_events(run))}</dd>" in page


def test_timeline_has_a_bar_per_span_and_a_tick_per_streamed_event(streaming: Exported) -> None:
    """The Gantt chart draws one bar per span and one tick per streamed event, with links."""
    page, run = streaming.page, streaming.run
    assert page.count('<rect class="bar"') == len(run["spans"])
    assert page.count('<line class="tick"') == len(stream_events(run)) > len(STEPS)
    for step in STEPS:
        assert f"<title>run_step {step}\n" in page
    assert "caused by run_step step_one" in page
    assert "caused by run_step step_two" in page
    assert "#0 ProgressEvent at " in page
    assert "{&quot;msg&quot;:&quot;Step one is happening&quot;}" in page
    assert " ms</text>" in page  # the time axis


def test_graph_shows_the_observed_steps_and_events(streaming: Exported) -> None:
    """The observed graph has an edge from each step's input event and to its output event."""
    page = streaming.page
    for step, (ev_in, ev_out) in EVENTS_IN_OUT.items():
        assert f"<title>{ev_in} → {step}: 1 times</title>" in page
        assert f"<title>{step} → {ev_out}: 1 times</title>" in page
        assert f"<title>event {ev_in}</title>" in page


def test_events_table_lists_every_streamed_event_in_order(streaming: Exported) -> None:
    """The events table lists every seq from 0 in order, with step, type and payload."""
    page = streaming.page
    seqs = [int(s) for s in re.findall(r'<tr><td class="num">(\d+)</td>', page)]
    assert seqs == list(range(len(stream_events(streaming.run))))
    assert "<td>step_one</td><td>ProgressEvent</td>" in page
    assert "<td>(run)</td><td>StopEvent</td>" in page
    assert "Showing the first" not in page


def test_export_by_run_id_prefix_writes_the_same_page(streaming: Exported) -> None:
    """Naming the run by a run_id prefix exports the same page as ``last``."""
    again = export(streaming.directory, streaming.run["run_id"][:10], "again.html")
    assert again.proc.returncode == 0, again.proc.stderr
    assert again.page == streaming.page


def test_export_of_an_unknown_run_fails_with_a_message(streaming: Exported) -> None:
    """An unknown run id exits 2 with a message naming it, and writes nothing."""
    proc = stepstream_cli(
        "traces", "export", "ffffffffff", "--html", "nope.html", cwd=streaming.directory
    )
    assert proc.returncode == 2
    assert "no run with run_id or trace_id 'ffffffffff'" in " ".join(proc.stderr.split())
    assert not (streaming.directory / "nope.html").exists()


def test_export_without_telemetry_fails_with_a_message(tmp_path: Path) -> None:
    """Exporting where nothing was recorded exits 2 and tells how to record a run."""
    proc = stepstream_cli("traces", "export", "last", "--html", "out.html", cwd=tmp_path)
    assert proc.returncode == 2
    assert "run a workflow with `stepstream run FILE.py` first" in " ".join(proc.stderr.split())
    assert not (tmp_path / "out.html").exists()


def test_events_table_and_ticks_are_capped_with_a_note(big_failing: Exported) -> None:
    """With 1,201 streamed events the table lists 500 and a span draws 1,000 ticks, saying so."""
    page = big_failing.page
    assert len(stream_events(big_failing.run)) == 1201
    assert len(re.findall(r'<tr><td class="num">\d+</td>', page)) == 500
    assert "Showing the first 500 of 1201 events." in page
    assert page.count('<line class="tick"') == 1000 + 1  # the terminal event is on the run span
    assert "1200 streamed events, the first 1000 drawn" in page


def test_payloads_and_errors_are_escaped(big_failing: Exported) -> None:
    """Markup in payloads and exception messages appears escaped, never as live HTML."""
    page = big_failing.page
    assert big_failing.proc.returncode == 0, big_failing.proc.stderr
    assert "<script" not in page.lower()
    assert "<b>" not in page
    assert "&lt;script&gt;alert(0)&lt;/script&gt; &amp; more" in page
    assert "ValueError: bad &lt;b&gt;input&lt;/b&gt;" in page


def test_failed_step_and_run_are_coloured_apart_from_ok_steps(big_failing: Exported) -> None:
    """The failed step's bar has the run's error colour, unlike the step that succeeded."""
    page = big_failing.page
    assert ">error<" in page
    failed, run_bar = bar_fill(page, "run_step fail"), bar_fill(page, "invoke_workflow BigWorkflow")
    assert failed == run_bar
    assert bar_fill(page, "run_step produce") != failed
