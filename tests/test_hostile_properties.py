"""Property test: hostile strings and objects never cost a run its telemetry.

Hypothesis drives lone surrogates, invalid UTF-8 bytes, huge integers, NaN, cycles, deep
nesting and objects whose ``repr`` or ``str`` raises through event fields (declared and
dynamic), step and workflow names, error messages and results, with or without a
``redact`` hook. Every example runs under
``configure_telemetry()`` (files) and ``capture_telemetry()`` (memory) at once, in one
child process (the global set-up must not touch this one), and checks that the
telemetry is complete: each span started is ended once with the right status, every
lifecycle and stream line is written with its type and seq, every payload is JSON, and
``stepstream.runs.active`` is back to 0. Then this process checks that every line of
the three files is valid UTF-8 JSON (strict: no lone surrogate escapes either).
"""

from pathlib import Path
from typing import Any

import orjson

from _helpers import run_script
from stepstream.telemetry import attributes as attrs

EXAMPLES = 60

SCRIPT = """
import asyncio
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepstream
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step
from stepstream.testing import capture_telemetry


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class Payload(Event):
    value: Any = None


def cyclic(value: Any) -> dict[str, Any]:
    loop: dict[str, Any] = {"value": value}
    loop["self"] = loop
    return loop


def deep(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


# Joined from characters: st.text() leaves lone surrogates out.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
chars = st.one_of(st.characters(), surrogates)
texts = st.lists(chars, max_size=12).map("".join)
names = st.lists(chars, min_size=1, max_size=12).map("".join)
leaves = st.one_of(
    texts,
    st.binary(max_size=6),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.none(),
    st.builds(ReprRaises),
    st.builds(deep, st.integers(min_value=300, max_value=3000)),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(texts, inner, max_size=3),
        st.builds(cyclic, inner),
    ),
    max_leaves=8,
)
events = st.one_of(
    st.builds(Payload, value=values),
    st.builds(lambda key, value: Event(**{"f_" + key: value}), texts, values),
)
endings = st.one_of(
    st.tuples(st.just("result"), values),
    st.tuples(st.just("raise"), texts),
    st.tuples(st.just("unprintable"), st.none()),
    # None is not a non-event: a step returning None emits nothing (the run would wait).
    st.tuples(
        st.just("non-event"),
        st.one_of(values.filter(lambda v: v is not None), st.builds(ReprRaises)),
    ),
)


def keys_only(event: Event, payload: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(payload)}


redactors = st.sampled_from([None, lambda event, payload: payload, keys_only])


def workflow(step_name: str) -> type[Workflow]:
    async def body(self: Workflow, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        for event in ev["events"]:
            ctx.write_event_to_stream(event)
        kind, detail = ev["ending"]
        if kind == "raise":
            raise ValueError(detail)
        if kind == "unprintable":
            raise StrRaises
        if kind == "non-event":
            return detail
        return StopEvent(result=detail)

    body.__name__ = step_name
    return type("Hostile", (Workflow,), {"body": step(body)})


LIFECYCLE = ["run_started", "step_started"]
RUNS = 0


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # The same examples on every machine: CI stays deterministic (run the script with
    # more examples and derandomize=False to hunt for new cases).
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    step_name=names,
    workflow_name=names,
    streamed=st.lists(events, max_size=4),
    ending=endings,
    redact=redactors,
)
def test_hostile_run(
    step_name: str,
    workflow_name: str,
    streamed: list[Event],
    ending: tuple[str, Any],
    redact: Any,
) -> None:
    global RUNS
    RUNS += 1
    cls = workflow(step_name)

    async def main() -> BaseException | None:
        handler = cls(timeout=10, workflow_name=workflow_name, redact=redact).run(
            events=streamed, ending=ending
        )
        try:
            await handler
        except Exception as exc:
            return exc
        return None

    with capture_telemetry() as tel:
        error = asyncio.run(main())
    ok = ending[0] == "result"
    assert (error is None) == ok, repr(error)
    status = "ok" if ok else "error"
    assert tel.all_spans_ended_once()
    run_span, = [s for s in tel.spans if s.name.startswith("invoke_workflow ")]
    step_span, = [s for s in tel.spans if s.name.startswith("run_step ")]
    assert run_span.attributes["stepstream.run.status"] == status
    assert step_span.attributes["stepstream.step.status"] == status
    assert run_span.status.is_ok == ok and step_span.status.is_ok == ok
    kinds = [line["event"] for line in tel.logs]
    n = len(streamed)
    assert kinds == [
        *LIFECYCLE,
        *["stream_event"] * n,
        "step_finished" if ok else "step_failed",
        "stream_event",
        "run_finished",
    ], kinds
    lines = tel.lines("stream_event")
    assert [line["seq"] for line in lines] == list(range(n + 1))
    expected = [type(e).__name__ for e in streamed]
    expected.append("StopEvent" if ok else "WorkflowFailedEvent")
    assert [line["event_type"] for line in lines] == expected
    span_events = tel.span_events()
    assert [e.attributes["stepstream.event.seq"] for e in span_events] == list(range(n + 1))
    for line, span_event in zip(lines, span_events, strict=True):
        # strict JSON: orjson refuses NaN and lone surrogate escapes, which json accepts
        orjson.loads(line["payload"])
        orjson.loads(span_event.attributes["stepstream.event.payload"])
    assert tel.metric_sum("stepstream.runs.active") == 0


handle = stepstream.configure_telemetry(directory="tel")
test_hostile_run()
handle.shutdown()
print(json.dumps({"runs": RUNS}))
"""


def strict_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path``, decoded as strict UTF-8 and parsed by orjson (strict JSON)."""
    raw = path.read_bytes()
    raw.decode("utf-8")  # raises on invalid UTF-8, surrogates included
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


def runs_active(metrics_line: dict[str, Any]) -> list[int]:
    """The values of ``stepstream.runs.active`` (one per workflow) in a metrics export."""
    return [
        int(point["asInt"])
        for rm in metrics_line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for metric in sm["metrics"]
        if metric["name"] == attrs.METRIC_RUNS_ACTIVE
        for point in metric["sum"]["dataPoints"]
    ]


def test_hostile_values_never_cost_a_run_its_telemetry(tmp_path: Path) -> None:
    """Complete telemetry for every example; every file line strict JSON; no gauge left up."""
    proc = run_script(tmp_path, SCRIPT.replace("EXAMPLES", str(EXAMPLES)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stderr == ""
    runs = orjson.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    assert runs >= EXAMPLES
    folder = tmp_path / "tel"
    logs = strict_json_lines(folder / "logs.jsonl")
    assert strict_json_lines(folder / "traces.jsonl")
    metrics = strict_json_lines(folder / "metrics.jsonl")
    for message in (attrs.LOG_RUN_STARTED, attrs.LOG_RUN_FINISHED):
        assert len([line for line in logs if line["event"] == message]) == runs, message
    active = runs_active(metrics[-1])
    assert active
    assert set(active) == {0}
