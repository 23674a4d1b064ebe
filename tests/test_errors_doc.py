"""docs/errors.md stays true: every documented message is produced by the code, verbatim.

Each entry of the errors document quotes its message template on a line of its own,
``> `` template `` `` (``<placeholders>`` stand for the parts that vary), and says how it
surfaces: ``**Raised as** `SomeError` ``, ``**Warned as** `SomeWarning` ``, ``**Logged**``
or ``**Printed**`` (by the command line). For every template this module has a trigger
that makes stepstream produce the message through its public API (or the ``stepstream``
command); the test checks that the template matches the real message and that the kind
is right. A documented template without a trigger, a trigger without a documented
template, or a template the code no longer produces fails.
"""

import asyncio
import functools
import json
import logging
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from pydantic import BaseModel

from _helpers import AcceptsStop
from _helpers import BadReturn
from _helpers import BadReturnAnnotation
from _helpers import Empty
from _helpers import JobStart
from _helpers import JobWorkflow
from _helpers import Middle
from _helpers import Minimal
from _helpers import MissingKey
from _helpers import NoEventParam
from _helpers import NonEvent
from _helpers import NoReturn
from _helpers import NoStart
from _helpers import NoStop
from _helpers import Other
from _helpers import RaisesCancelled
from _helpers import Slow
from _helpers import StepTimeout
from _helpers import StrAnnotated
from _helpers import Targeted
from _helpers import TwoEventParams
from _helpers import TwoStarts
from _helpers import Unannotated
from _helpers import Unconsumed
from _helpers import Unproduced
from _helpers import Unresolvable
from _helpers import Unrouted
from _helpers import run_command
from _helpers import stepstream_cli
from _helpers import without_otel
from stepstream import ConstantDelayRetryPolicy
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowError
from stepstream import WorkflowHandler
from stepstream import step

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
TEMPLATE_LINE = re.compile(r"^> `` (.+) ``$")
PLACEHOLDER = r"<[a-zA-Z][\w .-]*>"
KIND_LINE = re.compile(r"\*\*(Raised as|Warned as)\*\* `(\w+)`|\*\*(Logged|Printed)\*\*")


# -- the document -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One documented message: its template, how it surfaces, and its section title."""

    template: str
    kind: str
    title: str


def doc_entries() -> list[Entry]:
    """Every entry of docs/errors.md that quotes a message template."""
    entries: list[Entry] = []
    for section in re.split(r"^### ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0].strip()
        lines = section.splitlines()
        templates = [m.group(1) for line in lines if (m := TEMPLATE_LINE.match(line))]
        if not templates:
            continue
        assert len(templates) == 1, f"section {title!r} quotes {len(templates)} templates"
        kind = KIND_LINE.search(section)
        assert kind is not None, f"section {title!r} does not say how the message surfaces"
        name = kind.group(2) or {"Logged": "log", "Printed": "cli"}[kind.group(3)]
        entries.append(Entry(templates[0], name, title))
    return entries


def template_regex(template: str) -> re.Pattern[str]:
    """The template as a regex: each ``<placeholder>`` matches any text."""
    parts = re.split(PLACEHOLDER, template)
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


# -- triggers -------------------------------------------------------------------------------------

Produced = tuple[str, list[str]]
"""What a trigger returns: the kind (exception class name, ``log`` or ``cli``) and the
message(s) produced; the template must match one of them entirely."""

TRIGGERS: dict[str, Callable[[], Produced]] = {}


def trigger(template: str) -> Callable[[Callable[[], Produced]], Callable[[], Produced]]:
    """Register the decorated function as the trigger of ``template``."""

    def register(fn: Callable[[], Produced]) -> Callable[[], Produced]:
        assert template not in TRIGGERS, f"two triggers for {template!r}"
        TRIGGERS[template] = fn
        return fn

    return register


def raised(action: Callable[[], object]) -> Produced:
    """Call ``action`` and report the exception it raises: class name, message, problems."""
    try:
        action()
    except (WorkflowError, KeyError) as exc:
        problems = list(getattr(exc, "problems", ()))
        text = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        return type(exc).__name__, [text.split("\n")[0], text, *problems]
    msg = "the trigger raised nothing"
    raise AssertionError(msg)


def run_to_end(workflow: Workflow, **start: Any) -> None:
    """Run ``workflow`` in a fresh loop and await its handler."""

    async def main() -> None:
        async with asyncio.timeout(10):
            await workflow.run(**start)

    asyncio.run(main())


def start_job(**kwargs: Any) -> None:
    """Start JobWorkflow with ``kwargs`` inside a loop."""

    async def main() -> None:
        JobWorkflow(timeout=5).run(**kwargs)

    asyncio.run(main())


def decorate(**options: Any) -> None:
    """Decorate a free function with ``@step(**options)``."""

    async def work(ev: StartEvent) -> StopEvent:
        return StopEvent()

    step(**options)(work)


class StateA(BaseModel):
    n: int = 0


class StateB(BaseModel):
    m: int = 0


class TwoStates(Workflow):
    @step
    async def start(self, ctx: Context[StateA], ev: StartEvent) -> Middle:
        return Middle()

    @step
    async def finish(self, ctx: Context[StateB], ev: Middle) -> StopEvent:
        return StopEvent()


class Untyped(Workflow):
    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        return StopEvent(result=await ctx.store.get_state())


class CollectsNothing(Workflow):
    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.collect_events(ev, [])
        return StopEvent()


class CollectsWrong(Workflow):
    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.collect_events(ev, [Middle, Other])
        return StopEvent()


class Asks(Workflow):
    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await ctx.wait_for_event(HumanResponseEvent, timeout=0.05)
        return StopEvent()


#: Messages raised while a workflow is defined or instantiated, and what raises them.
DEFINING: dict[str, Callable[[], object]] = {
    "@step options for step '<step>' are invalid": partial(decorate, num_workers=0, timeout=0),
    "num_workers must be an int >= 1, got <value>": partial(decorate, num_workers=0),
    ("retry_policy must have a next(elapsed_time, attempts, error) method, got <type>"): partial(
        decorate, retry_policy=object()
    ),
    "timeout must be a positive number of seconds or None, got <value>": partial(
        decorate, timeout=-1
    ),
    "ConstantDelayRetryPolicy delay must be >= 0, got <delay>": partial(
        ConstantDelayRetryPolicy, delay=-1
    ),
    "ConstantDelayRetryPolicy maximum_attempts must be >= 1, got <n>": partial(
        ConstantDelayRetryPolicy, maximum_attempts=0
    ),
    ("<Workflow>(timeout=...) must be a positive number of seconds or None, got <value>"): partial(
        Minimal, timeout=0
    ),
    "workflow <Workflow> is invalid (<n> problem(s)):": NoStop,
    "workflow <Workflow> has no steps; decorate its methods with @step": Empty,
    (
        "step '<step>': cannot resolve an annotation (<NameError>); define that event class at "
        "module level or before the workflow class"
    ): Unresolvable,
    (
        "step '<step>' has no event parameter; add one annotated with the Event type it "
        "accepts, e.g. `ev: StartEvent`"
    ): NoEventParam,
    (
        "step '<step>': parameter '<parameter>' has no type annotation; annotate it with the "
        "Event type(s) the step accepts, e.g. `ev: StartEvent`"
    ): Unannotated,
    (
        "step '<step>': parameter '<parameter>' is annotated with <type>, which is not an Event "
        "type; annotate it with the Event subclass(es) the step accepts"
    ): StrAnnotated,
    (
        "step '<step>': more than one event parameter ('<parameter>'); a step takes one event "
        "parameter, annotated with a union for several types"
    ): TwoEventParams,
    (
        "step '<step>' has no return annotation; annotate it with the Event type(s) it may emit, "
        "or None"
    ): NoReturn,
    (
        "step '<step>': return annotation <annotation> includes <types>, which is not an Event "
        "type; steps return Event instances or None"
    ): BadReturnAnnotation,
    (
        "step '<step>' accepts <Event>, a StopEvent: a StopEvent ends the run and is never "
        "delivered to a step"
    ): AcceptsStop,
    (
        "no step accepts StartEvent; add a step whose event parameter is annotated with "
        "StartEvent (or one StartEvent subclass)"
    ): NoStart,
    (
        "more than one StartEvent type is accepted (<types and steps>); a workflow has one start "
        "event type"
    ): TwoStarts,
    (
        "no step can return a StopEvent; annotate the last step's return type with StopEvent "
        "(or a StopEvent subclass)"
    ): NoStop,
    (
        "event type <Event> is produced by <steps> but no step accepts it; add a step that takes "
        "<Event>, or remove it from the return annotation"
    ): Unconsumed,
    (
        "event type <Event> is accepted by step '<step>' but no step produces it; add <Event> to "
        "the return annotation of the step that sends it"
    ): Unproduced,
    "steps disagree on the Context state type (<states and steps>); use one state model": TwoStates,
    "<Event> has no field '<key>'": lambda: Middle()["missing"],
}

#: Messages raised by run() itself, and the call.
STARTING: dict[str, Callable[[], object]] = {
    (
        "<Workflow>.run() needs a running asyncio event loop; call it from async code, e.g. "
        "`async def main(): handler = wf.run(...)` with asyncio.run(main())"
    ): lambda: Minimal(timeout=5).run(),
    (
        "<Workflow>.run(): pass either start_event= or keyword fields, not both (got <fields>)"
    ): partial(start_job, start_event=JobStart(name="x", size=1), name="y"),
    "<Workflow>.run(): start_event must be a <StartEvent>, got <type>": partial(
        start_job, start_event=StartEvent()
    ),
    "<Workflow>.run(): <StartEvent> has no field(s) <fields>": partial(
        start_job, name="x", size=1, colour="red"
    ),
    "known fields: <fields>": partial(start_job, name="x", size=1, colour="red"),
    "<Workflow>.run(): the arguments do not fit <StartEvent>": partial(
        start_job, name="x", size="big"
    ),
    "field '<field>': <reason>": partial(start_job, name="x"),
}

#: Messages a run fails with (awaiting its handler raises them), and such a run.
RUNNING: dict[str, Callable[[], object]] = {
    (
        "send_event(..., step='<step>'): workflow <Workflow> has no step '<step>'; its steps "
        "are <steps>"
    ): lambda: run_to_end(Targeted(timeout=5), target="nope"),
    (
        "send_event(<Event>, step='<step>'): step '<step>' does not accept <Event> (it accepts "
        "<types>); steps that accept <Event>: <steps>"
    ): lambda: run_to_end(Targeted(timeout=5), target="finish"),
    (
        "no step of workflow <Workflow> accepts <Event> and no step is waiting for it; add a step "
        "that takes <Event>, or wait for it with ctx.wait_for_event"
    ): lambda: run_to_end(Unrouted(timeout=5)),
    "<method> takes an Event instance, got <type> (<value>)": lambda: run_to_end(
        NonEvent(timeout=5), method="write_event_to_stream"
    ),
    (
        "step '<step>' returned <type> (<value>); steps must return an Event instance or None"
    ): lambda: run_to_end(BadReturn(timeout=5), value="not an event"),
    (
        "step '<step>' raised asyncio.CancelledError without being cancelled; raise an ordinary "
        "exception to fail a step"
    ): lambda: run_to_end(RaisesCancelled(timeout=5)),
    (
        "the run's store has no key '<key>' (keys: <keys>); set it first with "
        "`await ctx.store.set('<key>', value)` or pass `default=`"
    ): lambda: run_to_end(MissingKey(timeout=5)),
    (
        "this workflow has no typed state; annotate a step's context parameter with the state "
        "model, e.g. `ctx: Context[MyState]`"
    ): lambda: run_to_end(Untyped(timeout=5)),
    "collect_events needs at least one expected event type": lambda: run_to_end(
        CollectsNothing(timeout=5)
    ),
    (
        "collect_events got <Event>, which is none of the expected types [<types>]; pass only "
        "events of the expected types"
    ): lambda: run_to_end(CollectsWrong(timeout=5)),
    (
        "workflow <Workflow> timed out after <timeout>s; steps still active: <steps>. Raise "
        "Workflow(timeout=...) or pass timeout=None"
    ): lambda: run_to_end(Slow(timeout=0.05)),
    (
        "step '<step>' timed out after <timeout>s (its @step timeout); steps still active: <steps>"
    ): lambda: run_to_end(StepTimeout(timeout=5)),
    (
        "step '<step>' waited <timeout>s for <Event> and none arrived; send it with "
        "ctx.send_event(...) or raise the timeout"
    ): lambda: run_to_end(Asks(timeout=5)),
}

for _template, _action in (DEFINING | STARTING | RUNNING).items():
    trigger(_template)(partial(raised, _action))


# ---- while a run is running


@trigger(
    "send_event(<Event>): run <run_id> of workflow <Workflow> has ended, so nothing can "
    "receive it; check handler.done() before sending"
)
def _sent_after_the_end() -> Produced:
    async def main() -> None:
        handler = Minimal(timeout=5).run()
        await handler
        handler.ctx.send_event(Other())

    return raised(lambda: asyncio.run(main()))


# ---- timeouts


class Parked(Workflow):
    """A step that waits for a HumanResponseEvent for up to a minute."""

    @step
    async def park(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=60)
        return StopEvent(result=answer.get("response"))


@trigger(
    "the caller waited <timeout>s for <Event> and none arrived; send it with "
    "ctx.send_event(...) or raise the timeout"
)
def _caller_wait_timeout() -> Produced:
    async def main() -> None:
        handler = Parked(timeout=5).run()
        try:
            await handler.ctx.wait_for_event(Other, timeout=0.05)
        finally:
            await handler.cancel_run()

    return raised(lambda: asyncio.run(main()))


# ---- cancellation


@trigger("the run was cancelled with cancel_run()")
def _cancel_run() -> Produced:
    async def main() -> None:
        handler = Parked(timeout=5).run()
        await asyncio.sleep(0.01)
        await handler.cancel_run()
        await handler

    return raised(lambda: asyncio.run(main()))


@trigger("the run's task was cancelled")
def _caller_cancelled() -> Produced:
    async def main() -> None:
        handler = Parked(timeout=5).run()
        waiting = asyncio.create_task(asyncio.wait_for(handler_result(handler), 5))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await handler

    return raised(lambda: asyncio.run(main()))


async def handler_result(handler: WorkflowHandler) -> Any:
    """Await ``handler`` (as a coroutine, for create_task)."""
    return await handler


# ---- the stream


@trigger(
    "this run's event stream was already consumed up to its StopEvent; iterate "
    "stream_events() once, or await the handler for the result"
)
def _consumed() -> Produced:
    async def main() -> None:
        handler = Minimal(timeout=5).run()
        async with asyncio.timeout(5):
            async for _ in handler.stream_events():
                pass
        handler.stream_events()

    return raised(lambda: asyncio.run(main()))


@trigger(
    "stream_events() is already being iterated by another task; a run's stream has a single "
    "consumer"
)
def _second_consumer() -> Produced:
    async def first_event(handler: WorkflowHandler) -> Event:
        return await anext(handler.stream_events())

    async def main() -> None:
        handler = Parked(timeout=5).run()
        first = asyncio.create_task(first_event(handler))
        await asyncio.sleep(0.01)
        try:
            await anext(handler.stream_events())
        finally:
            await handler.cancel_run()
            await asyncio.gather(first, return_exceptions=True)

    return raised(lambda: asyncio.run(main()))


# ---- logged diagnostics


@contextmanager
def logged(name: str) -> Iterator[list[str]]:
    """Collect the messages of records reaching logger ``name`` meanwhile."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(name)
    handler = Collect(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@trigger(
    "stepstream: step(s) <steps> of run <run_id> ignored cancellation for <seconds>s; the run "
    "has ended without them (a step must not swallow asyncio.CancelledError)"
)
def _swallowed_cancellation() -> Produced:
    class Stubborn(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> Middle | Other | None:
            ctx.send_event(Middle())
            await asyncio.sleep(0.02)
            return Other()

        @step
        async def stubborn(self, ev: Middle) -> StopEvent:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(2.3)  # longer than the 2 s grace period
            return StopEvent()

        @step
        async def stopper(self, ev: Other) -> StopEvent:
            return StopEvent(result="stopped")

    async def main() -> None:
        handler = Stubborn(timeout=10).run()
        async with asyncio.timeout(5):
            await handler
            while len(asyncio.all_tasks()) > 1:  # noqa: ASYNC110 - the stubborn step
                await asyncio.sleep(0.05)

    with logged("stepstream") as messages:
        asyncio.run(main())
    return "log", messages


class BrokenTracer(trace.Tracer):
    """A tracer whose every span fails to start."""

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        """Fail, as a broken telemetry backend would."""
        msg = "tracer is broken"
        raise RuntimeError(msg)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """Fail too."""
        msg = "tracer is broken"
        raise RuntimeError(msg)


class BrokenTracerProvider(trace.TracerProvider):
    """Hands out BrokenTracer."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        """Return a tracer that fails."""
        return BrokenTracer()


@trigger("stepstream: <sink>.<method> failed; later failures are not logged")
def _sink_failed() -> Produced:
    async def main() -> Any:
        handler = Minimal(timeout=5, tracer_provider=BrokenTracerProvider()).run()
        async with asyncio.timeout(5):
            return await handler

    with logged("stepstream") as messages:
        result = asyncio.run(main())
    assert result == "ok", "a failing telemetry sink broke the run"
    return "log", messages


TELEMETRY_SCRIPT = textwrap.dedent(
    """
    import json
    import logging
    import sys
    import warnings

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    import stepstream

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider())
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logging.getLogger().addHandler(Collect())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handle = stepstream.configure_telemetry(directory=sys.argv[1])
    sdk = logging.getLogger("opentelemetry.sdk.trace")
    for n in range(3):
        sdk.warning("export failed %d", n)
    handle.shutdown()
    print(json.dumps({
        "warnings": [[type(w.message).__name__, str(w.message)] for w in caught],
        "logged": messages,
    }))
    """
)


@functools.cache
def telemetry_script() -> dict[str, Any]:
    """Run configure_telemetry() over providers already set, in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "configure.py"
        script.write_text(TELEMETRY_SCRIPT, encoding="utf-8")
        proc = run_command(sys.executable, script, Path(tmp) / "telemetry", env=without_otel())
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


@trigger(
    "configure_telemetry(): a TracerProvider (<type>) is already set; stepstream uses it and "
    "adds no exporter"
)
def _tracer_provider_kept() -> Produced:
    caught = telemetry_script()["warnings"]
    return "TelemetryWarning", [m for kind, m in caught if kind == "TelemetryWarning"]


@trigger(
    "configure_telemetry(): a MeterProvider (<type>) is already set; stepstream uses it and "
    "adds no exporter"
)
def _meter_provider_kept() -> Produced:
    return _tracer_provider_kept()


@trigger("<message> [stepstream: repeats are suppressed for <seconds>s]")
def _rate_limited() -> Produced:
    return "log", telemetry_script()["logged"]


@trigger("stepstream: <logger>: '<template>' was repeated <n> more times")
def _repeats_reported() -> Produced:
    return "log", telemetry_script()["logged"]


# ---- the command line


WORKFLOW_FILE = """
from stepstream import StartEvent, StopEvent, Workflow, step


class Hello(Workflow):
    @step
    async def hello(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="hello")
"""

TWO_WORKFLOWS_FILE = (
    WORKFLOW_FILE
    + """

class Bye(Workflow):
    @step
    async def bye(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="bye")
"""
)

INVALID_AT_IMPORT_FILE = """
from stepstream import StartEvent, StopEvent, Workflow, step


class Bad(Workflow):
    @step(num_workers=0)
    async def work(self, ev: StartEvent) -> StopEvent:
        return StopEvent()
"""


@dataclass(frozen=True)
class CliCase:
    """A ``stepstream`` command run in a fresh directory holding ``files``."""

    args: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    # Commands run first (e.g. `run hello.py` to record runs).
    before: tuple[tuple[str, ...], ...] = ()


RECORDED = (("run", "hello.py", "--telemetry-dir", "t"),) * 2

CLI_CASES: dict[str, CliCase] = {
    "cannot read <path>: no such file": CliCase(("run", "nope.py")),
    "cannot import <path>: not a Python file": CliCase(
        ("run", "hello.txt"), {"hello.txt": WORKFLOW_FILE}
    ),
    "cannot import <path>: syntax error at line <n>: <reason>": CliCase(
        ("run", "broken.py"), {"broken.py": "def (:\n"}
    ),
    "cannot import <path>: <WorkflowError message>": CliCase(
        ("run", "bad.py"), {"bad.py": INVALID_AT_IMPORT_FILE}
    ),
    "cannot import <path>: <ExceptionType>: <message>": CliCase(
        ("run", "raises.py"), {"raises.py": "raise RuntimeError('import-time boom')\n"}
    ),
    "<path> has no Workflow class '<name>' (workflows in it: <names>)": CliCase(
        ("run", "hello.py:Nope"), {"hello.py": WORKFLOW_FILE}
    ),
    "<path> defines no Workflow subclass; define one or name it as FILE.py:Class": CliCase(
        ("run", "empty.py"), {"empty.py": "x = 1\n"}
    ),
    "<path> defines several workflows (<names>); pick one as <path>:<name>": CliCase(
        ("run", "two.py"), {"two.py": TWO_WORKFLOWS_FILE}
    ),
    "--input-json is not valid JSON: <reason>": CliCase(
        ("run", "hello.py", "--input-json", "{nope"), {"hello.py": WORKFLOW_FILE}
    ),
    """--input-json must be a JSON object, e.g. '{"topic": "whales"}'""": CliCase(
        ("run", "hello.py", "--input-json", "[1]"), {"hello.py": WORKFLOW_FILE}
    ),
    "--input '<pair>' is not key=value": CliCase(
        ("run", "hello.py", "--input", "novalue"), {"hello.py": WORKFLOW_FILE}
    ),
    "no telemetry directory at <dir>; run a workflow with `stepstream run FILE.py` first, "
    "or pass --telemetry-dir": CliCase(("traces", "list", "--telemetry-dir", "missing")),
    "cannot read <path>: <reason>": CliCase(
        ("traces", "list", "--telemetry-dir", "t"), {"t/traces.jsonl/keep": ""}
    ),
    "no runs recorded in <path>": CliCase(
        ("traces", "show", "last", "--telemetry-dir", "t"), {"t/logs.jsonl": ""}
    ),
    "no run with run_id or trace_id '<ref>'; `stepstream traces list` shows them": CliCase(
        ("traces", "show", "zzzz", "--telemetry-dir", "t"),
        {"hello.py": WORKFLOW_FILE},
        RECORDED,
    ),
    "'<ref>' matches <n> runs; give more characters of the id": CliCase(
        ("traces", "show", "", "--telemetry-dir", "t"), {"hello.py": WORKFLOW_FILE}, RECORDED
    ),
    "--events takes a number or 'all', got '<value>'": CliCase(
        ("traces", "show", "last", "--events", "lots", "--telemetry-dir", "t"),
        {"t/logs.jsonl": ""},
    ),
    "cannot write <path>: <reason>": CliCase(
        ("traces", "export", "last", "--html", "no/such/dir/run.html", "--telemetry-dir", "t"),
        {"hello.py": WORKFLOW_FILE},
        RECORDED[:1],
    ),
    "--since takes a duration like 30s, 10m, 2h or 1d, got '<value>'": CliCase(
        ("logs", "--since", "5y", "--telemetry-dir", "t"), {"t/logs.jsonl": ""}
    ),
    "give exactly one of -o FILE.html or --mermaid": CliCase(
        ("draw", "hello.py"), {"hello.py": WORKFLOW_FILE}
    ),
    "<path>:<line>: damaged line skipped (not valid JSON)": CliCase(
        ("logs", "--telemetry-dir", "t"), {"t/logs.jsonl": "{not json\n"}
    ),
    "<path>:<line>: damaged line skipped (not a JSON object)": CliCase(
        ("logs", "--telemetry-dir", "t"), {"t/logs.jsonl": "[1, 2]\n"}
    ),
    "<path>:<line>: damaged line skipped (not an OTLP span batch)": CliCase(
        ("traces", "list", "--telemetry-dir", "t"), {"t/traces.jsonl": "[1, 2]\n"}
    ),
}


def cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the stepstream command in ``directory`` (no OTLP, wide plain output)."""
    env = without_otel({"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"})
    return stepstream_cli(*args, cwd=directory, env=env, timeout=60)


def run_cli_case(case: CliCase) -> list[str]:
    """The messages the command printed on stderr (``error: ``/``warning: `` removed)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in case.files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for before in case.before:
            done = cli(root, *before)
            assert done.returncode == 0, done.stderr
        proc = cli(root, *case.args)
    stderr = proc.stderr
    messages = [stderr.split("error: ", 1)[1].rstrip("\n")] if "error: " in stderr else []
    warnings = [line for line in stderr.splitlines() if "warning: " in line]
    messages += [line.split("warning: ", 1)[1] for line in warnings]
    return messages


@functools.cache
def cli_results() -> dict[str, list[str]]:
    """Every CLI case's messages, the commands run two at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(run_cli_case, CLI_CASES.values())
        return dict(zip(CLI_CASES, results, strict=True))


for _template in CLI_CASES:
    TRIGGERS[_template] = functools.partial(lambda t: ("cli", cli_results()[t]), _template)


# -- tests ----------------------------------------------------------------------------------


def test_every_documented_message_has_a_trigger_and_back() -> None:
    """The templates quoted in docs/errors.md are exactly those this module can trigger."""
    documented = [e.template for e in doc_entries()]
    assert len(documented) == len(set(documented)), "a template is documented twice"
    assert sorted(set(documented) - set(TRIGGERS)) == [], "documented but never triggered"
    assert sorted(set(TRIGGERS) - set(documented)) == [], "triggered but not documented"


@pytest.mark.parametrize("entry", doc_entries(), ids=lambda e: e.title)
def test_documented_message_is_what_the_code_produces(entry: Entry) -> None:
    """Triggering the documented error yields a message matching its template, of its kind."""
    produce = TRIGGERS.get(entry.template)
    assert produce is not None, f"no trigger for the documented message {entry.template!r}"
    kind, messages = produce()
    assert kind == entry.kind, f"documented as {entry.kind}, produced as {kind}"
    pattern = template_regex(entry.template)
    assert any(pattern.fullmatch(m) for m in messages), (entry.template, messages)


def test_template_placeholders_do_not_match_everything() -> None:
    """A template must keep literal text: one made only of placeholders checks nothing."""
    for entry in doc_entries():
        literal = re.sub(PLACEHOLDER, "", entry.template)
        assert len(literal.strip(" :.'()[]")) >= 5, entry.template
