"""The embedded trace file is standard OTLP/JSON: equal to the OTLP protobuf encoding.

The file's spans are checked against the OpenTelemetry SDK's own protobuf encoder, seen
through protobuf's JSON mapping (the OTLP/JSON spec is that mapping, with hex ids).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import asyncio, base64, json, sys
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import stepstream
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step

class Note(Event):
    text: str
    n: int
    ok: bool
    ratio: float
    tags: list[str]

class Mid(Event):
    pass

class Flow(Workflow):
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Mid:
        # More events than INLINE_EVENTS: the export thread encodes this step's span
        # (the others are encoded where they end); both must match the SDK's encoding.
        for i in range(300):
            note = Note(text='quote " and \u00e9\n', n=i, ok=True, ratio=0.5, tags=["a"])
            ctx.write_event_to_stream(note)
        return Mid()

    @step
    async def second(self, ctx: Context, ev: Mid) -> StopEvent:
        raise ValueError("boom")

async def main() -> None:
    handle = stepstream.configure_telemetry(directory=sys.argv[1], service_name="fmt")
    memory = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))
    try:
        await Flow(timeout=5).run()
    except ValueError:
        pass
    # An application's own span with an attributed link goes through the same encoder.
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("app.first") as first:
        pass
    link = trace.Link(first.get_span_context(), {"why": "retry of", "n": 2})
    with tracer.start_as_current_span("app.second", links=[link]):
        pass
    handle.shutdown()
    request = MessageToDict(encode_spans(memory.get_finished_spans()), use_integers_for_enums=True)
    print(json.dumps(request))

asyncio.run(main())
"""


def _hex(value: str, width: int) -> str:
    import base64  # noqa: PLC0415

    return base64.b64decode(value).hex().rjust(width, "0")


def _normalise(span: dict[str, object]) -> dict[str, object]:
    """Map protobuf-JSON conventions to OTLP/JSON ones: hex ids, empty lists dropped."""
    out = dict(span)
    for key, width in (("traceId", 32), ("spanId", 16), ("parentSpanId", 16)):
        if key in out:
            out[key] = _hex(str(out[key]), width)
    links = out.get("links")
    if isinstance(links, list):
        out["links"] = [
            {**link, "traceId": _hex(link["traceId"], 32), "spanId": _hex(link["spanId"], 16)}
            for link in links
        ]
    out.setdefault("status", {})
    return out


def test_trace_file_equals_the_otlp_protobuf_encoding(tmp_path: Path) -> None:
    """Every span in traces.jsonl equals the SDK's OTLP encoding of the same span."""
    script = tmp_path / "fmt.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "tele")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    want = {
        s["spanId"]: s
        for rs in expected["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in (_normalise(x) for x in ss["spans"])
    }
    got = {}
    lines = (tmp_path / "tele" / "traces.jsonl").read_text().splitlines()
    for line in lines:
        for rs in json.loads(line)["resourceSpans"]:
            assert {"key": "service.name", "value": {"stringValue": "fmt"}} in rs["resource"][
                "attributes"
            ]
            for ss in rs["scopeSpans"]:
                assert ss["scope"]["name"] in {"stepstream", "app"}
                for s in ss["spans"]:
                    got[s["spanId"]] = s
    assert set(got) == set(want)
    assert len(got) == 5  # the run span, two step spans and the application's two
    linked = [s for s in got.values() if s["name"] == "app.second"]
    assert linked[0]["links"][0]["attributes"] == [
        {"key": "why", "value": {"stringValue": "retry of"}},
        {"key": "n", "value": {"intValue": "2"}},
    ]
    for span_id, span in got.items():
        assert span == want[span_id], span["name"]
