"""What the tests share: the seed workflow, stream, span and subprocess helpers.

Everything here goes through stepstream's public API. A test records telemetry with the
``tel`` fixture of conftest.py (``stepstream.testing.capture_telemetry()``); one that must
hand providers to a Workflow itself uses the ``sdk`` fixture with ``providers_of()``.
"""

import asyncio
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from typing import Never

from opentelemetry.sdk.trace import ReadableSpan
from pydantic import BaseModel

from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowHandler
from stepstream import step
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry
from stepstream.testing import FakeStreamingLLM

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
EXAMPLES = ROOT / "examples"
HEX32 = r"[0-9a-f]{32}"
HEX16 = r"[0-9a-f]{16}"


# -- streams and outcomes ----------------------------------------------------------------


async def drain(handler: WorkflowHandler, timeout: float = 5) -> list[Event]:
    """Collect the rest of a run's stream, failing instead of hanging."""
    async with asyncio.timeout(timeout):
        return [ev async for ev in handler.stream_events()]


async def outcome(handler: WorkflowHandler) -> BaseException | None:
    """Await the run and return what it raised (None when it succeeded)."""
    try:
        async with asyncio.timeout(3):
            await handler
    except Exception as exc:  # noqa: BLE001 - the raised error is what the test inspects
        return exc
    return None


async def sleep_unless_cancelled(seconds: float, cancelled: asyncio.Event) -> None:
    """Sleep ``seconds``; if cancelled meanwhile, set ``cancelled`` and let the cancellation on."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        cancelled.set()
        raise


async def answer_prompts(
    handler: WorkflowHandler, *answers: HumanResponseEvent, timeout: float = 2
) -> list[Event]:
    """Read the whole stream, sending ``answers`` whenever an InputRequiredEvent appears."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        async for ev in handler.stream_events():
            events.append(ev)
            if isinstance(ev, InputRequiredEvent):
                for answer in answers:
                    handler.ctx.send_event(answer)
    return events


async def failure_of(handler: WorkflowHandler) -> BaseException | None:
    """Read the whole stream, then return what awaiting the run raised (None if nothing)."""
    await drain(handler)
    return await outcome(handler)


async def cancel_after(handler: WorkflowHandler, event_type: type[Event]) -> BaseException | None:
    """Read the stream up to the first ``event_type``, cancel the run, return what it raised."""
    async with asyncio.timeout(2):
        async for ev in handler.stream_events():
            if isinstance(ev, event_type):
                break
    await handler.cancel_run()
    return await outcome(handler)


# -- the seed workflow (examples/streaming.py, with an instant fake LLM) ---------------


class FirstEvent(Event):
    first_output: str


class SecondEvent(Event):
    second_output: str
    response: str


class ProgressEvent(Event):
    msg: str


class MyWorkflow(Workflow):
    """The seed workflow of examples/streaming.py; its fake LLM streams without delay."""

    @step
    async def step_one(self, ctx: Context[Any], ev: StartEvent) -> FirstEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="Step one is happening"))
        return FirstEvent(first_output="First step complete.")

    @step
    async def step_two(self, ctx: Context[Any], ev: FirstEvent) -> SecondEvent:
        llm = FakeStreamingLLM(model="gpt-4o-mini", delay=0)
        generator = await llm.astream_complete("Please give me the first 3 paragraphs.")
        text = ""
        async for response in generator:
            ctx.write_event_to_stream(ProgressEvent(msg=response.delta))
            text = str(response)
        return SecondEvent(second_output="Second step complete", response=text)

    @step
    async def step_three(self, ctx: Context[Any], ev: SecondEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="Step three is happening"))
        return StopEvent(result="Workflow complete.")


SEED_STEPS = ("step_one", "step_two", "step_three")


async def run_seed(**kwargs: Any) -> tuple[str, list[Event]]:
    """Run the seed workflow (``kwargs`` go to MyWorkflow) to the end; its run id and stream."""
    handler = MyWorkflow(timeout=5, **kwargs).run(first_input="Start the workflow.")
    events = await drain(handler)
    assert await handler == "Workflow complete."
    return handler.run_id, events


# -- workflows shared by several test modules --------------------------------------------


class HumanLoop(Workflow):
    """Asks with a returned InputRequiredEvent; the caller's HumanResponseEvent ends the run."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev["response"])


class Task(Event):
    pass


class Flaky(Workflow):
    """The second step fails on its first attempt and succeeds on the retry."""

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> Task:
        return Task()

    @step(retry_policy=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(3)))
    async def flaky(self, ctx: Context[Any], ev: Task) -> StopEvent:
        tries: int = await ctx.store.get("tries", 0) + 1
        await ctx.store.set("tries", tries)
        if tries == 1:
            msg = "transient"
            raise ConnectionError(msg)
        return StopEvent(result=tries)


class Failing(Workflow):
    """Writes one event, then its only step raises ValueError."""

    @step
    async def explode(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="about to fail"))
        msg = "boom"
        raise ValueError(msg)


class BoomError(Exception):
    pass


def boom(n: int) -> BoomError:
    """A BoomError numbered ``n``: its message is "boom <n>"."""
    msg = f"boom {n}"
    return BoomError(msg)


def raise_next(raised: list[BoomError]) -> Never:
    """Raise the next numbered BoomError (one more than ``raised`` holds), recording it there."""
    error = boom(len(raised) + 1)
    raised.append(error)
    raise error


class KeepsComplex(Workflow):
    """Stores complex(1, 2), which JSON cannot hold, in the run's store under 'value'."""

    @step
    async def keep(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await ctx.store.set("value", complex(1, 2))
        return StopEvent()


class Big(Event):
    text: str


class BigWriter(Workflow):
    """Streams one Big event whose text length is given on the start event."""

    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Big(text="x" * ev["size"]))
        return StopEvent(result="written")


class Slow(Workflow):
    """Announces itself on the stream, then sleeps far longer than any test waits."""

    @step
    async def dawdle(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="started"))
        await asyncio.sleep(10)
        return StopEvent(result="late")


class Parked(Workflow):
    """A step that waits for a HumanResponseEvent for up to a minute."""

    @step
    async def park(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=60)
        return StopEvent(result=answer.get("response"))


class A(Event):
    pass


class B(Event):
    pass


class FansOut(Workflow):
    """Its start step sends one A and one B."""

    @step
    async def fan_out(self, ctx: Context[Any], ev: StartEvent) -> A | B | None:
        ctx.send_event(A())
        ctx.send_event(B())
        return None


class Job(Event):
    i: int


class JobDone(Event):
    i: int


class SendsJobs(Workflow):
    """Its start step sends ``jobs`` Job events, i = 0, 1, ...; subclasses take them."""

    jobs = 3

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Job | None:
        for i in range(self.jobs):
            ctx.send_event(Job(i=i))
        return None


class FanOutJobs(SendsJobs):
    """A join collects ``jobs`` JobDone events and ends the run with their i, sorted;
    subclasses add the step turning a Job into a JobDone."""

    @step
    async def join(self, ctx: Context[Any], ev: JobDone) -> StopEvent | None:
        done = ctx.collect_events(ev, [JobDone] * self.jobs)
        if done is None:
            return None
        return StopEvent(result=sorted(d.i for d in done if isinstance(d, JobDone)))


class StepTimeout(Workflow):
    """Its step has a 0.05 s @step timeout and sleeps longer."""

    @step(timeout=0.05)
    async def dawdle(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await asyncio.sleep(10)
        return StopEvent(result="late")


# -- workflows with a fault: checked at instantiation (defining a class checks nothing) --


class Middle(Event):
    pass


class Other(Event):
    pass


class Orphan(Event):
    pass


class Leftover(Event):
    pass


class StartA(StartEvent):
    pass


class StartB(StartEvent):
    pass


class JobStart(StartEvent):
    name: str
    size: int


class JobWorkflow(Workflow):
    @step
    async def start(self, ev: JobStart) -> StopEvent:
        return StopEvent(result=(ev.name, ev.size))


class Minimal(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="ok")


class NoStart(Workflow):
    @step
    async def a(self, ev: Middle) -> Other:
        return Other()

    @step
    async def b(self, ev: Other) -> Middle | StopEvent:
        return StopEvent()


class NoStop(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Middle:
        return Middle()

    @step
    async def mid(self, ev: Middle) -> None:
        return None


class Unconsumed(Workflow):
    """Declares Leftover, which no step accepts; runs (to "ran") only without the checks."""

    @step
    async def start(self, ev: StartEvent) -> StopEvent | Leftover:
        return StopEvent(result="ran")


class Unproduced(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def extra(self, ev: Orphan) -> StopEvent:
        return StopEvent()


class NoEventParam(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def lonely(self, ctx: Context[Any]) -> StopEvent:
        return StopEvent()


class TwoStarts(Workflow):
    @step
    async def first(self, ev: StartA) -> StopEvent:
        return StopEvent()

    @step
    async def second(self, ev: StartB) -> StopEvent:
        return StopEvent()


class AcceptsStop(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def after(self, ev: StopEvent) -> None:
        return None


class NoReturn(Workflow):
    @step
    async def start(self, ev: StartEvent):  # type: ignore[no-untyped-def]  # noqa: ANN202
        return StopEvent()


class ListParam(Workflow):
    @step
    async def start(self, ev: StartEvent, items: list[Middle]) -> StopEvent:
        return StopEvent()


class Empty(Workflow):
    def not_a_step(self, ev: StartEvent) -> StopEvent:
        return StopEvent()


class Unannotated(Workflow):
    @step
    async def start(self, ev) -> StopEvent:  # type: ignore[no-untyped-def]  # noqa: ANN001
        return StopEvent()


class StrAnnotated(Workflow):
    @step
    async def start(self, ev: str) -> StopEvent:
        return StopEvent()


class UnionAnnotated(Workflow):
    @step
    async def start(self, ev: StartEvent | int) -> StopEvent:
        return StopEvent()


class BadReturnAnnotation(Workflow):
    @step
    async def start(self, ev: StartEvent) -> str:
        return "x"


class Required(BaseModel):
    """A state model with a field without default: no run can start from Required()."""

    name: str


class NeedsArgs(Workflow):
    @step
    async def start(self, ctx: Context[Required], ev: StartEvent) -> StopEvent:
        return StopEvent()


class Unresolvable(Workflow):
    @step
    async def start(self, ev: "NoSuchEvent") -> StopEvent:  # type: ignore[name-defined]  # noqa: F821
        return StopEvent()


# -- workflows whose runs fail --------------------------------------------------------


class Targeted(Workflow):
    """Sends Other to the step named ``target`` on the start event."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Middle | None:
        ctx.send_event(Other(), step=ev["target"])
        return None

    @step
    async def finish(self, ev: Middle) -> StopEvent:
        return StopEvent()


class Unrouted(Workflow):
    """Sends Other, which no step accepts."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.send_event(Other())
        return StopEvent()


class NonEvent(Workflow):
    """Passes a dict to the Context method named ``method`` on the start event."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        getattr(ctx, ev["method"])({"not": "an event"})
        return StopEvent()


class Returns(Workflow):
    """Its step returns the start event's ``value``: a StopEvent ends the run, others fail it."""

    @step
    async def produce(self, ev: StartEvent) -> StopEvent:
        return ev["value"]  # type: ignore[no-any-return]


class Raises(Workflow):
    """Its step raises the start event's ``error``."""

    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise ev["error"]


class MissingKey(Workflow):
    """Sets the store's key 'other', then gets 'api_key' without a default."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await ctx.store.set("other", 1)
        return StopEvent(result=await ctx.store.get("api_key"))


class RaisesCancelled(Workflow):
    """Its step raises asyncio.CancelledError without being cancelled."""

    @step
    async def rogue(self, ev: StartEvent) -> StopEvent:
        raise asyncio.CancelledError


# -- spans ------------------------------------------------------------------------------


def providers_of(tel: CapturedTelemetry) -> dict[str, Any]:
    """Workflow keyword arguments that record into ``tel``'s providers."""
    return {"tracer_provider": tel.tracer_provider, "meter_provider": tel.meter_provider}


def run_span_name(workflow: str) -> str:
    """The contract's run span name, built from the constant."""
    return f"{attrs.RUN_SPAN_PREFIX} {workflow}"


def step_span_name(step_name: str) -> str:
    """The contract's step span name, built from the constant."""
    return f"{attrs.STEP_SPAN_PREFIX} {step_name}"


def run_span(tel: CapturedTelemetry) -> ReadableSpan:
    """The one finished run span, whatever its workflow."""
    (span,) = [s for s in tel.spans if s.name.startswith(attrs.RUN_SPAN_PREFIX)]
    return span


def step_spans(tel: CapturedTelemetry, step_name: str) -> list[ReadableSpan]:
    """The finished spans of ``step_name``'s attempts, by attempt number."""
    spans = tel.named(step_span_name(step_name))
    return sorted(spans, key=lambda s: int(str(attr(s, attrs.STEP_ATTEMPT))))


def assert_clean(tel: CapturedTelemetry) -> None:
    """Spans were recorded, each one ended exactly once, and no run is left active."""
    assert tel.spans, "no span was recorded"
    assert tel.all_spans_ended_once(), [s.name for s in tel.spans]
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


def assert_ended(tel: CapturedTelemetry, status: str) -> None:
    """The one run ended with ``status``; every span ended exactly once; no run is active."""
    assert attr(run_span(tel), attrs.RUN_STATUS) == status
    assert_clean(tel)


def attr(span: ReadableSpan, key: str) -> Any:
    """The attribute ``key`` of ``span`` (KeyError naming the span when absent)."""
    values = span.attributes or {}
    if key not in values:
        msg = f"span {span.name!r} has no attribute {key!r}; it has {sorted(values)}"
        raise KeyError(msg)
    return values[key]


def span_id(span: ReadableSpan) -> int:
    """The span id of ``span``."""
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    """The trace id of ``span``."""
    assert span.context is not None
    return int(span.context.trace_id)


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of ``span``'s parent, or None for a root span."""
    return span.parent.span_id if span.parent is not None else None


def stream_span_events(span: ReadableSpan) -> list[dict[str, Any]]:
    """The stepstream.event span events of ``span``, each as its attributes plus ``time``."""
    return [
        {**(ev.attributes or {}), "time": ev.timestamp}
        for ev in span.events
        if ev.name == attrs.STREAM_EVENT
    ]


def expected_stream(events: Sequence[Event]) -> list[tuple[str, int, str]]:
    """(type, seq, JSON payload) of each event the caller saw in the stream."""
    return [(type(ev).__name__, i, ev.model_dump_json()) for i, ev in enumerate(events)]


def recorded_stream(span_events: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, str]]:
    """(type, seq, payload) of recorded stream span events."""
    return [(e[attrs.EVENT_TYPE], e[attrs.EVENT_SEQ], e[attrs.EVENT_PAYLOAD]) for e in span_events]


# -- subprocesses and files -------------------------------------------------------------

SCRIPT_NAME = "script.py"


def import_file(path: Path, name: str) -> ModuleType:
    """Import the Python file at ``path`` as module ``name``, once (later calls return it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` from its path (once per test session)."""
    return import_file(EXAMPLES / f"{name}.py", f"_example_{name}")


def defined_here(module: ModuleType) -> set[str]:
    """The public classes and functions ``module`` defines itself (not the ones it imports)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }


def run_command(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end with its text output captured; the caller checks the code."""
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=None if env is None else dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def command_problem(
    *args: str | Path, what: str, timeout: float, cwd: Path | None = None
) -> str | None:
    """Why the command failed (timed out, or its code and last lines), or None if it succeeded."""
    try:
        done = run_command(*args, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{what} did not finish within {timeout:.0f} s"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"{what} failed ({done.returncode}): {' / '.join(tail)}"
    return None


def without_otel(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any OTEL_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra or {})
    return env


def stepstream_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stepstream ARGS`` in ``cwd`` (no OTEL_* settings inherited by default)."""
    env = without_otel() if env is None else env
    return run_command(sys.executable, "-m", "stepstream", *args, cwd=cwd, env=env, timeout=timeout)


def example_output(name: str, cwd: Path, *args: str, stdin: str = "") -> str:
    """Run ``python examples/<name>.py ARGS`` in ``cwd``, which must succeed; what it printed."""
    proc = run_command(sys.executable, EXAMPLES / f"{name}.py", *args, cwd=cwd, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def script_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test script: no OTEL_* variable, the tests on PYTHONPATH."""
    env = without_otel()
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


def run_script(
    tmp_path: Path,
    source: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to tmp_path/script.py and run it there with this interpreter."""
    script = tmp_path / SCRIPT_NAME
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    return run_command(sys.executable, script, cwd=tmp_path, env=script_env(env), timeout=timeout)


def last_json_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary a script printed as its last stdout line."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {proc.stderr}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file, parsed."""
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def otlp_spans(path: Path) -> list[dict[str, Any]]:
    """The spans of an OTLP/JSON Lines trace file (resourceSpans/scopeSpans/spans)."""
    return [
        span
        for line in read_json_lines(path)
        for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def otlp_attrs(item: Mapping[str, Any]) -> dict[str, Any]:
    """An OTLP/JSON attribute list as a plain dict (intValue strings become ints)."""
    out: dict[str, Any] = {}
    for kv in item.get("attributes", []):
        value = kv["value"]
        if "intValue" in value:
            out[kv["key"]] = int(value["intValue"])
        elif "stringValue" in value:
            out[kv["key"]] = value["stringValue"]
        else:
            out[kv["key"]] = next(iter(value.values()))
    return out


def otlp_metric_names(path: Path) -> set[str]:
    """Names of the metrics in an OTLP/JSON Lines metrics file."""
    return {
        metric["name"]
        for line in read_json_lines(path)
        for rm in line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for metric in sm["metrics"]
    }
