"""Property-based tests: random workflow graphs and random event payloads.

Valid random graphs run to completion with every streamed event accounted for in the
stream, the trace (span events) and the logs (``stream_event`` lines), with matching
``seq``. Invalid random graphs are rejected at construction with every problem listed
(checked against a small model of the documented rules). Random payloads — unicode,
very long strings, nested models, values JSON cannot encode, hundreds of fields — never
break a run: logs carry the whole payload, span attributes a truncated one.

Each example runs in its own ``asyncio.run`` loop, with fresh in-memory providers and
``structlog.testing.capture_logs()`` (structlog is put back as it was afterwards).
"""

import asyncio
import functools
import json
import operator
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Iterator
from collections.abc import MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import hypothesis
import pydantic
import pytest
import structlog
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider
from structlog.testing import capture_logs

from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.telemetry import attributes as attrs

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- harness ----------------------------------------------------------------------------------


@contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """capture_logs(), then structlog as it was (unconfigured, unless it was configured)."""
    was_configured = structlog.is_configured()
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        if not was_configured:
            structlog.reset_defaults()


@dataclass
class Recorded:
    """What one run left behind: its stream, its spans and its log lines."""

    result: Any
    streamed: list[Event]
    spans: list[ReadableSpan]
    logs: list[MutableMapping[str, Any]]

    def stream_span_events(self) -> dict[int, tuple[ReadableSpan, dict[str, Any]]]:
        """Span events named stepstream.event, by seq, with the span they are on."""
        out: dict[int, tuple[ReadableSpan, dict[str, Any]]] = {}
        for span in self.spans:
            for event in span.events:
                if event.name == attrs.STREAM_EVENT:
                    attributes = dict(event.attributes or {})
                    seq = int(str(attributes[attrs.EVENT_SEQ]))
                    assert seq not in out, f"seq {seq} recorded twice"
                    out[seq] = (span, attributes)
        return out

    def stream_log_lines(self) -> dict[int, MutableMapping[str, Any]]:
        """stream_event log lines, by seq."""
        out: dict[int, MutableMapping[str, Any]] = {}
        for line in self.logs:
            if line.get("event") == attrs.LOG_STREAM_EVENT:
                seq = int(line[attrs.KEY_SEQ])
                assert seq not in out, f"seq {seq} logged twice"
                out[seq] = line
        return out


def record_run(workflow_cls: type[Workflow], **start: Any) -> Recorded:
    """Run ``workflow_cls`` once in a fresh loop, recording stream, spans and logs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main() -> tuple[Any, list[Event]]:
        handler = workflow_cls(timeout=10, tracer_provider=provider).run(**start)
        async with asyncio.timeout(10):
            streamed = [ev async for ev in handler.stream_events()]
            return await handler, streamed

    try:
        with captured_logs() as logs:
            result, streamed = asyncio.run(main())
        return Recorded(result, streamed, list(exporter.get_finished_spans()), list(logs))
    finally:
        provider.shutdown()


def union(types: list[type[Event]]) -> Any:
    """``A | B | ...`` of ``types``."""
    return functools.reduce(operator.or_, types)


def make_event_type(name: str) -> type[Event]:
    """A new Event subclass called ``name``."""
    return type(name, (Event,), {"__module__": __name__})


# -- (a) random valid graphs ---------------------------------------------------------------------


class Note(Event):
    """What the random steps write to the stream."""

    step: str
    k: int


class Leaf(Event):
    """What every leaf step of a random graph emits; the finish step joins them."""

    origin: str


@dataclass
class GraphSpec:
    """A random tree of steps: parents[i] is node i's parent (node 0 takes StartEvent)."""

    parents: list[int]
    writes: list[int]
    is_async: list[bool]
    workers: list[int]
    node_types: list[type[Event]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of tree nodes (steps besides finish)."""
        return len(self.writes)

    def children(self, node: int) -> list[int]:
        """The nodes whose parent is ``node``."""
        return [i for i in range(1, self.size) if self.parents[i - 1] == node]

    def leaves(self) -> list[int]:
        """The nodes without children."""
        return [i for i in range(self.size) if not self.children(i)]


@st.composite
def graph_specs(draw: st.DrawFn) -> GraphSpec:
    """A random tree of 1-8 steps, each writing 0-5 events, async or sync, 1-3 workers."""
    size = draw(st.integers(1, 8))
    parents = [draw(st.integers(0, i - 1)) for i in range(1, size)]
    writes = draw(st.lists(st.integers(0, 5), min_size=size, max_size=size))
    is_async = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    workers = draw(st.lists(st.integers(1, 3), min_size=size, max_size=size))
    return GraphSpec(parents, writes, is_async, workers)


def node_step(spec: GraphSpec, node: int) -> Callable[..., Any]:
    """The @step function of ``node``: write its notes, then send its children's events."""
    name = f"s{node}"
    writes = spec.writes[node]
    child_types = [spec.node_types[c] for c in spec.children(node)]

    def emit(ctx: Context[Any]) -> Event | None:
        if not child_types:
            return Leaf(origin=name)
        for t in child_types[1:]:
            ctx.send_event(t())
        return child_types[0]()

    async def run_async(self: Workflow, ctx: Context[Any], ev: Event) -> Event | None:
        for k in range(writes):
            ctx.write_event_to_stream(Note(step=name, k=k))
            await asyncio.sleep(0)
        return emit(ctx)

    def run_sync(self: Workflow, ctx: Context[Any], ev: Event) -> Event | None:
        for k in range(writes):
            ctx.write_event_to_stream(Note(step=name, k=k))
        return emit(ctx)

    fn: Callable[..., Any] = run_async if spec.is_async[node] else run_sync
    fn.__name__ = fn.__qualname__ = name
    fn.__annotations__ = {
        "ctx": Context[Any],
        "ev": spec.node_types[node],
        "return": union(child_types) | None if child_types else Leaf,
    }
    decorated: Callable[..., Any] = step(num_workers=spec.workers[node])(fn)
    return decorated


def build_valid(spec: GraphSpec) -> type[Workflow]:
    """The Workflow class of ``spec``: the tree, plus a finish step joining every Leaf."""
    spec.node_types = [StartEvent] + [make_event_type(f"E{i}") for i in range(1, spec.size)]
    expected = [Leaf] * len(spec.leaves())

    async def finish(self: Workflow, ctx: Context[Any], ev: Leaf) -> StopEvent | None:
        joined = ctx.collect_events(ev, expected)
        if joined is None:
            return None
        return StopEvent(result=sorted(e.origin for e in joined if isinstance(e, Leaf)))

    namespace: dict[str, Any] = {f"s{i}": node_step(spec, i) for i in range(spec.size)}
    namespace["finish"] = step(finish)
    namespace["__module__"] = __name__
    return type("RandomGraph", (Workflow,), namespace)


@SETTINGS
@given(spec=graph_specs())
def test_random_valid_graph_accounts_for_every_event(spec: GraphSpec) -> None:
    """A random valid graph completes; each streamed event is in the trace and logs by seq."""
    workflow_cls = build_valid(spec)
    hypothesis.event(f"{spec.size} step(s), {len(spec.leaves())} lea(f|ves)")
    recorded = record_run(workflow_cls)
    assert recorded.result == sorted(f"s{i}" for i in spec.leaves())
    notes = [ev for ev in recorded.streamed if isinstance(ev, Note)]
    for node in range(spec.size):
        # Each step's notes arrive complete and in write order.
        assert [n.k for n in notes if n.step == f"s{node}"] == list(range(spec.writes[node]))
    assert len(notes) == sum(spec.writes)
    assert len(recorded.streamed) == len(notes) + 1
    assert type(recorded.streamed[-1]) is StopEvent
    span_events = recorded.stream_span_events()
    log_lines = recorded.stream_log_lines()
    assert sorted(span_events) == list(range(len(recorded.streamed)))
    assert sorted(log_lines) == list(range(len(recorded.streamed)))
    for seq, event in enumerate(recorded.streamed):
        span, attributes = span_events[seq]
        line = log_lines[seq]
        name = type(event).__name__
        assert attributes[attrs.EVENT_TYPE] == name
        assert line[attrs.KEY_EVENT_TYPE] == name
        assert json.loads(line[attrs.KEY_PAYLOAD]) == json.loads(event.model_dump_json())
        assert attributes[attrs.EVENT_PAYLOAD] == line[attrs.KEY_PAYLOAD]
        if isinstance(event, Note):
            # Recorded on the writing step's span, and logged with its name.
            assert (span.attributes or {})[attrs.STEP] == event.step
            assert line[attrs.KEY_STEP] == event.step
        else:
            assert span.name.startswith(attrs.RUN_SPAN_PREFIX)
    # Every step span reports how many events its attempt streamed.
    for span in recorded.spans:
        if span.name.startswith(attrs.STEP_SPAN_PREFIX):
            step_attributes = span.attributes or {}
            step_name = str(step_attributes[attrs.STEP])
            written = spec.writes[int(step_name[1:])] if step_name != "finish" else 0
            assert step_attributes[attrs.EVENTS_STREAMED] == written


# -- (b) random invalid graphs -------------------------------------------------------------------

MUTATIONS = (
    "drop_start",
    "drop_finish",
    "orphan_consumer",
    "unconsumed_producer",
    "bad_parameter",
    "no_return_annotation",
)


@dataclass
class StepModel:
    """A step as the validation rules see it: what it accepts and returns, if readable."""

    name: str
    accepts: list[type[Event]]
    returns: list[type[Event]] | None  # None: no return annotation
    bad_parameter: bool = False


def expected_problems(steps: list[StepModel]) -> list[str]:
    """Identifying fragments of every problem the documented rules find in ``steps``."""
    if not steps:
        return ["has no steps; decorate its methods with @step"]
    problems: list[str] = []
    for s in steps:
        if s.bad_parameter:
            problems.append(f"step {s.name!r}: parameter 'ev' is annotated with int")
        if s.returns is None:
            problems.append(f"step {s.name!r} has no return annotation")
    accepts_known = not any(s.bad_parameter for s in steps)
    returns_known = all(s.returns is not None for s in steps)
    accepted = {t for s in steps for t in s.accepts}
    produced = {t for s in steps for t in s.returns or [] if not issubclass(t, StopEvent)}
    if accepts_known and StartEvent not in accepted:
        problems.append("no step accepts StartEvent")
    if returns_known and not any(issubclass(t, StopEvent) for s in steps for t in s.returns or []):
        problems.append("no step can return a StopEvent")
    if accepts_known:
        problems.extend(
            f"event type {t.__name__} is produced by"
            for t in sorted(produced - accepted, key=lambda t: t.__name__)
        )
    if returns_known:
        problems.extend(
            f"event type {t.__name__} is accepted by step {s.name!r} but no step produces it"
            for s in steps
            for t in s.accepts
            if t is not StartEvent and t not in produced
        )
    return problems


def model_of(spec: GraphSpec) -> list[StepModel]:
    """The step models of a valid graph built from ``spec`` (tree plus finish)."""
    models = []
    for node in range(spec.size):
        children = [spec.node_types[c] for c in spec.children(node)]
        models.append(StepModel(f"s{node}", [spec.node_types[node]], children or [Leaf]))
    models.append(StepModel("finish", [Leaf], [StopEvent]))
    return models


def extra_step(model: StepModel) -> Callable[..., Any]:
    """A @step function with the signature ``model`` describes."""

    async def fn(self: Workflow, ctx: Context[Any], ev: Any) -> Any:
        return None

    fn.__name__ = fn.__qualname__ = model.name
    annotations: dict[str, Any] = {"ctx": Context[Any], "ev": int}
    if not model.bad_parameter:
        annotations["ev"] = union(model.accepts)
    if model.returns is not None:
        annotations["return"] = union(model.returns) | None
    fn.__annotations__ = annotations
    decorated: Callable[..., Any] = step(fn)
    return decorated


def break_graph(spec: GraphSpec, mutations: set[str]) -> tuple[type[Workflow], list[StepModel]]:
    """The valid graph of ``spec`` with ``mutations`` applied, and its step models."""
    valid = build_valid(spec)
    namespace = {k: v for k, v in vars(valid).items() if k.startswith("s") or k == "finish"}
    models = model_of(spec)
    dropped = {"drop_start": "s0", "drop_finish": "finish"}
    for mutation, name in dropped.items():
        if mutation in mutations:
            del namespace[name]
            models = [m for m in models if m.name != name]
    added = {
        "orphan_consumer": StepModel("orphan", [make_event_type("Orphan")], [Leaf]),
        "unconsumed_producer": StepModel("spare", [StartEvent], [make_event_type("Unused")]),
        "bad_parameter": StepModel("typo", [], [Leaf], bad_parameter=True),
        "no_return_annotation": StepModel("mute", [StartEvent], None),
    }
    for mutation, model in added.items():
        if mutation in mutations:
            namespace[model.name] = extra_step(model)
            models.append(model)
    namespace["__module__"] = __name__
    return type("BrokenGraph", (Workflow,), namespace), models


@SETTINGS
@given(
    spec=graph_specs(),
    mutations=st.sets(st.sampled_from(MUTATIONS), min_size=1),
)
def test_random_invalid_graph_is_rejected_listing_every_problem(
    spec: GraphSpec, mutations: set[str]
) -> None:
    """A random graph broken in random ways raises one error listing each problem exactly."""
    broken, models = break_graph(spec, mutations)
    expected = expected_problems(models)
    hypothesis.event(f"{len(expected)} problem(s)")
    with pytest.raises(WorkflowValidationError) as raised:
        broken()
    problems = list(raised.value.problems)
    message = str(raised.value)
    assert message.startswith(f"workflow BrokenGraph is invalid ({len(expected)} problem(s)):")
    assert len(problems) == len(expected), (problems, expected)
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    for problem in problems:
        assert f"\n  - {problem}" in message


# -- (c) random payloads --------------------------------------------------------------------------


class Inner(pydantic.BaseModel):
    label: str
    values: list[int]


class Outer(pydantic.BaseModel):
    name: str
    items: list[Inner]
    index: dict[str, Inner]
    child: "Outer | None" = None


class Opaque:
    """A value pydantic cannot serialise: rendered with its repr."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Opaque({self.token!r})"


def long_text() -> st.SearchStrategy[str]:
    """Strings of 4,000-12,000 characters built from a random unicode seed."""
    return st.tuples(st.text(min_size=1, max_size=8), st.integers(4000, 12000)).map(
        lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]]
    )


inner_models = st.builds(Inner, label=st.text(max_size=20), values=st.lists(st.integers()))
outer_models = st.recursive(
    st.builds(
        Outer,
        name=st.text(max_size=20),
        items=st.lists(inner_models, max_size=3),
        index=st.dictionaries(st.text(max_size=5), inner_models, max_size=3),
    ),
    lambda children: st.builds(
        Outer,
        name=st.text(max_size=20),
        items=st.lists(inner_models, max_size=2),
        index=st.just({}),
        child=children,
    ),
    max_leaves=4,
)

#: Field values: what the payload JSON must hold for each (as json.loads gives it back).
field_values: st.SearchStrategy[tuple[Any, Any]] = st.one_of(
    st.text().map(lambda s: (s, s)),
    long_text().map(lambda s: (s, s)),
    st.integers().map(lambda n: (n, n)),
    outer_models.map(lambda m: (m, m.model_dump(mode="json"))),
    st.text(max_size=10).map(lambda s: (Opaque(s), repr(Opaque(s)))),
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, tuple[Any, Any]]:
    """Field name -> (value, expected JSON value): a mix, a long text first, or 200 ints."""
    shape = draw(st.sampled_from(["mixed", "long", "many"]))
    values: list[tuple[Any, Any]]
    if shape == "many":
        ints = draw(st.lists(st.integers(), min_size=200, max_size=200))
        values = [(n, n) for n in ints]
    else:
        values = [draw(field_values) for _ in range(draw(st.integers(1, 6)))]
        if shape == "long":
            text = draw(long_text())
            values.insert(0, (text, text))
    return {f"f{i}": value for i, value in enumerate(values)}


class Echo(Workflow):
    """Writes one event carrying every field of the start event to the stream."""

    @step
    async def echo(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Event(**ev.to_dict()))
        return StopEvent(result="echoed")


def run_coroutine(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``make()`` in a fresh event loop."""
    return asyncio.run(make())


@SETTINGS
@given(fields=payloads())
def test_random_payload_is_logged_whole_and_cut_in_span_attributes(
    fields: dict[str, tuple[Any, Any]],
) -> None:
    """Any payload streams intact; logs hold all of it; span attributes cut it at 4096."""
    values = {name: value for name, (value, _) in fields.items()}
    expected_json = {name: as_json for name, (_, as_json) in fields.items()}
    recorded = record_run(Echo, **values)
    assert recorded.result == "echoed"
    streamed, terminal = recorded.streamed
    assert type(terminal) is StopEvent
    for name, value in values.items():
        assert streamed[name] is value  # the stream delivers the very objects
    line = recorded.stream_log_lines()[0]
    payload = line[attrs.KEY_PAYLOAD]
    assert json.loads(payload) == expected_json  # logs: complete, repr for the opaque
    _, attributes = recorded.stream_span_events()[0]
    cut = attributes[attrs.EVENT_PAYLOAD]
    limit = attrs.DEFAULT_PAYLOAD_LIMIT
    hypothesis.event("payload cut in span attributes" if len(payload) > limit else "payload whole")
    if len(payload) <= limit:
        assert cut == payload
    else:
        marker = attrs.TRUNCATED_MARKER.format(n=len(payload) - limit)
        assert cut == payload[:limit] + marker
        assert cut.endswith(f"...[truncated {len(payload) - limit} chars]")


@SETTINGS
@given(fields=payloads())
def test_random_payload_never_breaks_an_untraced_run(fields: dict[str, tuple[Any, Any]]) -> None:
    """With no SDK (no-op spans) and no logging configured, any payload streams intact."""
    values = {name: value for name, (value, _) in fields.items()}

    async def main() -> list[Event]:
        wf = Echo(timeout=10, tracer_provider=NoOpTracerProvider())
        handler = wf.run(**values)
        async with asyncio.timeout(10):
            streamed = [ev async for ev in handler.stream_events()]
            assert await handler == "echoed"
        return streamed

    streamed = run_coroutine(main)
    assert [type(ev) for ev in streamed] == [Event, StopEvent]
    assert streamed[0].to_dict() == values
