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
import http.server
import json
import logging
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest.mock
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import Annotated
from typing import Any

import pytest
from opentelemetry import trace
from pydantic import BaseModel
from pydantic import ConfigDict

import _fan_helpers as fan
from _helpers import AcceptsStop
from _helpers import BadReturnAnnotation
from _helpers import Empty
from _helpers import JobStart
from _helpers import JobWorkflow
from _helpers import ListParam
from _helpers import Middle
from _helpers import Minimal
from _helpers import MissingKey
from _helpers import MyWorkflow
from _helpers import NeedsArgs
from _helpers import NoEventParam
from _helpers import NonEvent
from _helpers import NoReturn
from _helpers import NoStart
from _helpers import NoStop
from _helpers import Other
from _helpers import Parked
from _helpers import RaisesCancelled
from _helpers import Required
from _helpers import Returns
from _helpers import Slow
from _helpers import StepTimeout
from _helpers import StrAnnotated
from _helpers import Targeted
from _helpers import TwoStarts
from _helpers import Unannotated
from _helpers import Unconsumed
from _helpers import Unproduced
from _helpers import Unresolvable
from _helpers import Unrouted
from _helpers import answer_prompts
from _helpers import run_command
from _helpers import stepstream_cli
from _helpers import without_otel
from stepstream import ConstantDelayRetryPolicy
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowError
from stepstream import WorkflowHandler
from stepstream import step
from stepstream.context import JsonSerializer
from stepstream.context import PickleSerializer
from stepstream.context.state_store import DictState
from stepstream.context.state_store import InMemoryStateStore
from stepstream.resource import Resource
from stepstream.resource import ResourceConfig
from stepstream.resource import ResourceManager
from stepstream.retry_policy import ExponentialBackoffRetryPolicy
from stepstream.retry_policy import retry_any
from stepstream.retry_policy import retry_if_exception_message
from stepstream.retry_policy import retry_if_exception_type
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_chain
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import configure_telemetry

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
TEMPLATE_LINE = re.compile(r"^> `` (.+) ``$")
PLACEHOLDER = r"<[a-zA-Z][\w .-]*>"
KIND_LINE = re.compile(r"\*\*(Raised as|Warned as)\*\* `(\w+)`|\*\*(Logged|Printed|Answered)\*\*")


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
        name = (
            kind.group(2) or {"Logged": "log", "Printed": "cli", "Answered": "http"}[kind.group(3)]
        )
        entries.append(Entry(templates[0], name, title))
    return entries


def template_regex(template: str) -> re.Pattern[str]:
    """The template as a regex: each ``<placeholder>`` matches any text."""
    parts = re.split(PLACEHOLDER, template)
    return re.compile(".*?".join(re.escape(p) for p in parts), re.DOTALL)


# -- triggers -------------------------------------------------------------------------------------

Produced = tuple[str, list[str]]
"""What a trigger returns: the kind (exception class name, ``log``, ``cli`` or ``http``), the
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
    except (
        WorkflowError,
        KeyError,
        # the resources, retry policies, state store and serializers raise builtins, as
        # LlamaIndex does
        ValueError,
        TypeError,
        OSError,
        RuntimeError,
        ImportError,
        AttributeError,
    ) as exc:
        problems = list(getattr(exc, "problems", ()))
        text = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        return type(exc).__name__, [text.split("\n")[0], text, *problems]
    msg = "the trigger raised nothing"
    raise AssertionError(msg)


def warned(action: Callable[[], object]) -> Produced:
    """Call ``action`` and report the warnings it emits: the first one's class, the messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    assert caught, "the trigger warned nothing"
    return caught[0].category.__name__, [str(w.message) for w in caught]


def wrong(value: object) -> Any:
    """``value`` typed as Any: an argument of the wrong type, which mypy would refuse."""
    return value


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


@dataclass
class PlainState:
    n: int = 0


class PlainStateFlow(Workflow):
    @step
    async def start(self, ctx: Context[PlainState], ev: StartEvent) -> StopEvent:  # type: ignore[type-var]
        return StopEvent()


class TypedSet(Workflow):
    @step
    async def start(self, ctx: Context[StateA], ev: StartEvent) -> StopEvent:
        await ctx.store.set("missing.field", 1)
        return StopEvent()


class HoldsAnything(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    thing: Any = None


def run_in_a_step(body: Callable[[Context[Any]], Any]) -> None:
    """Run a one-step workflow whose step awaits ``body(ctx)``."""

    class OneStep(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            return StopEvent(result=await body(ctx))

    run_to_end(OneStep(timeout=5))


async def set_inside_edit(ctx: Context[Any]) -> None:
    """Call a store writer inside ``edit_state()``."""
    async with ctx.store.edit_state():
        await ctx.store.set("k", 1)


def snapshot_of(**values: Any) -> Callable[[], object]:
    """An action that snapshots a DictState store holding ``values`` with JsonSerializer."""
    store = InMemoryStateStore(DictState(**values))
    return lambda: store.to_dict(JsonSerializer())


def restore(payload: dict[str, Any]) -> object:
    """Restore an InMemoryStateStore from ``payload`` with JsonSerializer."""
    return InMemoryStateStore.from_dict(payload, JsonSerializer())


def local_state() -> type[BaseModel]:
    """A new model class ``Dup``, defined inside this function (so it cannot be imported)."""

    class Dup(BaseModel):
        n: int = 0

    return Dup


def payload_naming(qualified_name: str) -> str:
    """A JsonSerializer payload of a model whose class is ``qualified_name``."""
    return json.dumps({"__is_pydantic": True, "value": {}, "qualified_name": qualified_name})


def deserialize(payload: str) -> object:
    """Read ``payload`` with a default JsonSerializer."""
    return JsonSerializer().deserialize(payload)


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


class Picky(Workflow):
    """Waits for a HumanResponseEvent from user 'ada' only."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(), requirements={"user": "ada"}
        )
        return StopEvent(result=answer)


class PositionalOnly(Workflow):
    @step
    async def start(self, port: Annotated[int, Resource(int)], /, ev: StartEvent) -> StopEvent:
        return StopEvent()


class Port(BaseModel):
    port: int


class Opaque:
    """A plain class: pydantic has no schema for it."""


def make_a(b: "Annotated[int, Resource(make_b)]") -> int:
    return b


def make_b(a: "Annotated[int, Resource(make_a)]") -> int:
    return a


def port_from_nowhere(port: int) -> int:
    return port


def port_positional(port: Annotated[int, Resource(int)], /) -> int:
    return port


def run_resourced(annotation: Any) -> None:
    """Run a one-step workflow whose step has a parameter annotated ``annotation``."""

    async def start(ev: StartEvent, value: Any) -> StopEvent:
        return StopEvent(result=value)

    start.__annotations__["value"] = annotation

    class Resourced(Workflow):
        pass

    step(workflow=Resourced)(start)
    run_to_end(Resourced(timeout=5))


def run_configured(data: str, model: type, *selector: str) -> None:
    """run_resourced() with a ``model`` read by ResourceConfig from a JSON file holding ``data``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "app.json"
        path.write_text(data, encoding="utf-8")
        run_resourced(Annotated[model, ResourceConfig(str(path), *selector)])


async def resolve_two_named_alike() -> None:
    """Resolve two different lambda resources through one ResourceManager."""
    manager = ResourceManager()
    await manager.get(Resource(lambda: 1))
    await manager.get(Resource(lambda: 2))


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
    "<name>(<arg>=...) must be a number of seconds or a timedelta, got <value>": partial(
        wait_fixed, wrong("soon")
    ),
    "<name>(<arg>=...) must be a number, got <value>": partial(stop_after_attempt, wrong(None)),
    "<name>(<arg>=...) must be callable, like <example>, got <value>": partial(
        retry_policy, wait=wrong(5)
    ),
    ("<name>() arguments must be callable, like <example>, got <value> as argument <n>"): lambda: (
        retry_any(retry_if_exception_type(OSError), wrong("busy"))
    ),
    (
        "<name>(exception_types=...) must be an exception class or a tuple of exception classes, "
        "got <value>"
    ): partial(retry_if_exception_type, wrong([OSError])),
    (
        "<name>(match=...) must be a str or a compiled str pattern (re.Pattern[str]), got <value>"
    ): partial(retry_if_exception_message, match=wrong(42)),
    (
        "retry_if_exception_message() missing 1 required argument 'message' or 'match'"
    ): retry_if_exception_message,
    "retry_if_exception_message() takes either 'message' or 'match', not both": partial(
        retry_if_exception_message, "busy", match="busy"
    ),
    "wait_chain requires at least one strategy": wait_chain,
    ("<Workflow>(timeout=...) must be a positive number of seconds or None, got <value>"): partial(
        Minimal, timeout=0
    ),
    ("<call>(redact=...) must be a function (event, payload) -> payload or None, got <type>"): (
        partial(Minimal, redact=wrong("password"))
    ),
    "class <Event>(Event, telemetry_payload=...) must be True or False, got <value>": lambda: type(
        "Secretive", (Event,), {}, telemetry_payload=wrong("no")
    ),
    (
        "configure_telemetry(<option>=...) must be a whole number of characters, 0 or more, or "
        "None; got <value>"
    ): partial(configure_telemetry, payload_limit=-1),
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
        "step '<step>': parameter '<parameter>' is a list[E] fan-in, which must be the step's "
        "only event parameter; join the other events in a step of their own"
    ): ListParam,
    (
        "step '<step>': parameter '<parameter>' is annotated with <types>, but a step with "
        "several event parameters fires once one event of each has arrived, so each takes a "
        "single event type; split the union into parameters of their own, or take one "
        "parameter annotated with the union"
    ): fan.UnionSlots,
    (
        "step '<step>': parameter '<parameter>' is marked Collect(...), which applies only to "
        "a list[E] fan-in parameter; annotate it `Annotated[list[<Event>], Collect(...)]` or "
        "drop the marker"
    ): fan.CollectOnEvent,
    (
        "step '<step>': parameter '<parameter>' is marked <cardinality> without Collect; wrap "
        "it: `Annotated[list[E], Collect(<cardinality>)]`"
    ): fan.TakeWithoutCollect,
    (
        "step '<step>': parameter '<parameter>' is marked Collect(<cardinality>); Collect takes "
        "All() or Take(n)"
    ): fan.WeirdCardinality,
    (
        "step '<step>': parameter '<parameter>' takes list[<types>], a fan-in, but no step "
        "returns a list (a fan-out) whose events lead to <types>; return `list[...]` from the "
        "step that starts the batch, or take one event and join with "
        "ctx.collect_events(ev, [E] * n)"
    ): fan.UnboundJoin,
    (
        "step '<step>' is an async generator: a fan-out returns its events as one list "
        "(annotate `-> list[E]` and `return [...]`); to emit events while it runs, use "
        "ctx.send_event"
    ): fan.AsyncGenerator,
    (
        "step '<step>' has no return annotation; annotate it with the Event type(s) it may emit, "
        "or None"
    ): NoReturn,
    (
        "step '<step>': return annotation <annotation> includes <types>, which is not an Event "
        "type; steps return Event instances, a list of them (a fan-out), or None"
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
    (
        "steps disagree on the Context state type (<states and steps>); the state types must form "
        "one inheritance chain (each a subclass of the next), whose most derived type is the "
        "state of every step: use one model, or derive one from the other"
    ): TwoStates,
    (
        "the Context state type <type> of <steps> is not a pydantic model; declare the state as "
        "a BaseModel subclass whose fields have defaults, e.g. `class MyState(BaseModel): count: "
        "int = 0`"
    ): PlainStateFlow,
    (
        "the Context state type <State> cannot be created without arguments: field(s) <fields> "
        "have no default; give every field a default (each run starts from <State>())"
    ): NeedsArgs,
    "<Event> has no field '<key>'": lambda: Middle()["missing"],
    (
        "Resource(factory) takes a callable that returns the resource, got <type> (<value>); pass "
        "the function itself, e.g. Resource(make_client), not Resource(make_client())"
    ): partial(Resource, wrong(42)),
    (
        "Only JSON files can be used to load Pydantic-based resources. ResourceConfig got "
        "config_file=<file>; give the path of a .json file"
    ): partial(ResourceConfig, "app.yaml"),
    (
        "ResourceConfig(<file>, path_selector=<selector>): the selector has an empty key; give "
        "dot-separated keys such as 'db.primary'"
    ): partial(ResourceConfig, "app.json", path_selector="db..primary"),
    (
        "step '<step>': resource parameter '<parameter>' is positional-only, but resources are "
        "passed by keyword; move it after the '/'"
    ): PositionalOnly,
    (
        "<Workflow>(resource_manager=...) must be a stepstream.resource.ResourceManager (or None "
        "for a new one), got <type>"
    ): partial(Minimal, resource_manager=wrong({})),
}

#: Messages warned (DeprecationWarning and the like), and what warns them.
WARNING: dict[str, Callable[[], object]] = {
    (
        "ConstantDelayRetryPolicy is deprecated, use retry_policy(wait=wait_fixed(delay), "
        "stop=stop_after_attempt(n)) instead"
    ): ConstantDelayRetryPolicy,
    (
        "ExponentialBackoffRetryPolicy is deprecated, use retry_policy(wait=wait_exponential(...), "
        "stop=stop_after_attempt(n)) instead"
    ): ExponentialBackoffRetryPolicy,
    (
        "state key '<key>' cannot be serialized and is left out of the snapshot (<error>); set it "
        "again after restoring the state"
    ): snapshot_of(memory=threading.Lock()),
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
    ): lambda: run_to_end(Returns(timeout=5), value="not an event"),
    (
        "step '<step>' raised asyncio.CancelledError without being cancelled; raise an ordinary "
        "exception to fail a step"
    ): lambda: run_to_end(RaisesCancelled(timeout=5)),
    (
        "step '<step>' returned a list (<value>), but its return annotation declares no "
        "list[E]; annotate it `-> list[E]` to fan out, or return one Event"
    ): lambda: run_to_end(Returns(timeout=5), value=[StopEvent()]),
    (
        "step '<step>' returned a list holding <type> (<value>); a fan-out returns a list of "
        "Event instances"
    ): lambda: run_to_end(fan.ReturnsNonEvents(timeout=5)),
    (
        "step '<step>' returned a bare <Event>, but its return annotation lists <Event> only "
        "inside list[...]; return [event] (a batch of one), or add <Event> to the annotation"
    ): lambda: run_to_end(fan.ReturnsBare(timeout=5)),
    (
        "send_event(<Event>, step='<step>'): step '<step>' takes list[<types>], a fan-in that "
        "collects only the events returned inside a fan-out batch; return the event from a "
        "step of the batch instead"
    ): lambda: run_to_end(fan.SendsToJoin(timeout=5)),
    (
        "path '<path>' not found in the state: <where> <what is missing>; check the path, set it "
        "first with `await ctx.store.set('<path>', value)`, or pass `default=`"
    ): lambda: run_to_end(MissingKey(timeout=5)),
    (
        "path cannot be empty: ctx.store.set(path, value) needs a dot-separated path such as "
        "'count' or 'user.name'; use set_state(...) to replace the whole state"
    ): partial(run_in_a_step, lambda ctx: ctx.store.set("", 1)),
    "path has <n> segments, more than MAX_DEPTH (1000); use a shorter path": partial(
        run_in_a_step, lambda ctx: ctx.store.get(".".join(["a"] * 1001), default=None)
    ),
    "cannot set path '<path>': <where> <what is wrong>; <fix>": lambda: run_to_end(
        TypedSet(timeout=5)
    ),
    (
        "set_state got a <Type>, but the state is a <State>; pass a <State> (or an instance of "
        "one of its parent classes, whose fields are merged in)"
    ): partial(run_in_a_step, lambda ctx: ctx.store.set_state(StateA())),
    "writer called inside edit_state: mutate the yielded state instead": partial(
        run_in_a_step, set_inside_edit
    ),
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
    (
        "No such file: <path> (ResourceConfig(<file>); a relative path is read from the current "
        "directory, <cwd>); create the file or correct the path"
    ): lambda: run_resourced(Annotated[Port, ResourceConfig("no-such-config.json")]),
    (
        "<reason> in <path> (ResourceConfig(<file>)): line <line> column <column> (char <char>)"
    ): partial(run_configured, '{"port": 1,}', Port),
    (
        "Expected dictionary for configuration from <file> at path <path>, got: <what>; <fix>"
    ): partial(run_configured, '{"db": {"port": 1}}', Port, "db.port"),
    "<n> validation error<s> for <Model> from <path><at selector>": partial(
        run_configured, '{"db": {"port": "eighty"}}', Port, "db"
    ),
    (
        "ResourceConfig(<file>) cannot validate into <type>: pydantic has no schema for it; "
        "annotate the parameter with a pydantic model"
    ): partial(run_configured, '{"port": 1}', Opaque),
    (
        "Circular resource dependency detected: <chain>; a resource cannot depend on itself: "
        "remove one of these Annotated[..., Resource(...)] factory parameters"
    ): lambda: run_resourced(Annotated[int, Resource(make_a)]),
    (
        "two different resources are named <name> (<first> and <second>); a ResourceManager keeps "
        "values by name, so one would get the other's value: give each factory its own name (a "
        "def rather than a lambda), or use a separate ResourceManager"
    ): lambda: asyncio.run(resolve_two_named_alike()),
    (
        "resource factory <factory> cannot be called: required parameter(s) <parameters> get no "
        "value; annotate each with Annotated[T, Resource(...)] or Annotated[T, "
        "ResourceConfig(...)], or give it a default"
    ): lambda: run_resourced(Annotated[int, Resource(port_from_nowhere)]),
    (
        "resource factory <factory> cannot be called: resource parameter(s) <parameters> are "
        "positional-only, but resources are passed by keyword; move them after the '/'"
    ): lambda: run_resourced(Annotated[int, Resource(port_positional)]),
}

#: Messages of the state store and serializers called directly, and the call.
STATE: dict[str, Callable[[], object]] = {
    (
        "cannot reset the state: <State>() fails without arguments (required fields: <fields>; "
        "<n> error(s)); give every field of the state model a default"
    ): lambda: asyncio.run(InMemoryStateStore(Required(name="Ada")).clear()),
    (
        "cannot serialize a value of type <type> to JSON (<reason>; value: <value>); store JSON "
        "data (dict, list, str, int, float, bool, None) or a pydantic model, or use "
        "PickleSerializer() for any picklable object"
    ): lambda: JsonSerializer().serialize({1, 2}),
    (
        "cannot serialize a value of type <type>: it is not JSON data (<reason>) and cannot be "
        "pickled (<error>); store plain data or a pydantic model instead, or leave it out of the "
        "state"
    ): lambda: PickleSerializer().serialize(threading.Lock()),
    "cannot serialize state key '<key>': <error>": snapshot_of(tags={"a", "b"}),
    "cannot serialize the state (<State>): <error>": lambda: InMemoryStateStore(
        HoldsAnything(thing=object())
    ).to_dict(JsonSerializer()),
    (
        "cannot restore an InMemoryStateStore from store_type '<type>'; pass the payload to the "
        "from_dict() of the store that wrote it"
    ): partial(restore, {"store_type": "durable", "state_data": None}),
    (
        "cannot deserialize state key '<key>': <error>; read the snapshot with the serializer "
        "that wrote it"
    ): partial(restore, {"store_type": "in_memory", "state_data": {"_data": {"k": "not json"}}}),
    (
        "cannot restore the state: its data holds a <type>, not a state model; pass the 'state' "
        "dict that InMemoryStateStore.to_dict() returned"
    ): partial(restore, {"store_type": "in_memory", "state_data": "[1, 2]"}),
    (
        "class <module.Class> is not in the serializer's allowed types, so a payload naming it is "
        "refused; allow it with JsonSerializer(allowed_types=[..., <Class>]) (the class, or the "
        "string '<module.Class>'), or use JsonSerializer() to resolve classes by import"
    ): lambda: JsonSerializer(allowed_types=[StateB]).deserialize(
        JsonSerializer().serialize(StateA())
    ),
    (
        "allowed_types entries must be classes or 'module.Class' strings, got <entry> (<type>); "
        "pass the class itself, e.g. JsonSerializer(allowed_types=[MyState])"
    ): lambda: JsonSerializer(allowed_types=[list[int]]),
    (
        "allowed_types has two classes written under the name <module.Class>: <class> and "
        "<class>; a payload cannot tell them apart, so allow only one of them (or rename or move "
        "the other)"
    ): lambda: JsonSerializer(allowed_types=[local_state(), local_state()]),
    (
        "cannot import module '<module>' to rebuild <module.Class> named by a payload (<error>); "
        "make that module importable where the payload is read, or pass the class in "
        "JsonSerializer(allowed_types=[...])"
    ): partial(deserialize, payload_naming("stepstream_no_such_module.State")),
    (
        "module '<module>' has no attribute '<Class>', so <module.Class> named by a payload cannot "
        "be rebuilt; a class defined inside a function cannot be imported: define it at module "
        "level, or pass the class in JsonSerializer(allowed_types=[...])"
    ): lambda: deserialize(JsonSerializer().serialize(local_state()())),
    "<module.name> named by a payload is a <type>, not a class; only classes are rebuilt": partial(
        deserialize, payload_naming("json.dumps")
    ),
    "cannot resolve class '<name>' named by a payload: expected 'module.Class'": partial(
        deserialize, payload_naming("State")
    ),
}

for _template, _action in (DEFINING | STARTING | RUNNING | STATE).items():
    trigger(_template)(partial(raised, _action))
for _template, _action in WARNING.items():
    trigger(_template)(partial(warned, _action))


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


@trigger(
    "<Event> does not meet the requirements of the step waiting for it (<requirements>) and no "
    "step of workflow <Workflow> accepts it; send a <Event> whose fields match"
)
def _fails_requirements() -> Produced:
    async def main() -> None:
        handler = Picky(timeout=5).run()
        try:
            await answer_prompts(handler, HumanResponseEvent(user="bob"))
        finally:
            await handler.cancel_run()

    return raised(lambda: asyncio.run(main()))


# ---- timeouts


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


def _failing_factory() -> str:
    msg = "DATABASE_URL is not set"
    raise KeyError(msg)


class FailingResource(Workflow):
    @step
    async def start(
        self, ev: StartEvent, db: Annotated[str, Resource(_failing_factory)]
    ) -> StopEvent:
        return StopEvent()


@trigger("step '<step>', parameter '<param>': <ErrorType>: <message> (resolving <resource>)")
def _resource_fails_in_validate() -> Produced:
    return raised(lambda: FailingResource().validate(validate_resources=True))


@trigger(
    "<Workflow>.validate(validate_resources=True) resolves the resources in an event loop of "
    "its own and cannot run inside one; call it before asyncio.run(...), or from a worker "
    "thread (asyncio.to_thread)"
)
def _validate_resources_in_a_loop() -> Produced:
    async def main() -> None:
        Minimal().validate(validate_resources=True)

    return raised(lambda: asyncio.run(main()))


@trigger(
    "run <run_id> of workflow <Workflow>: <n> streamed events are unread, the bound set by "
    "Workflow(stream_limit=<n>); read handler.stream_events() while the run goes, raise "
    "stream_limit, or pass stream_overflow='drop_oldest' to drop the oldest unread events"
)
def _stream_overflow() -> Produced:
    return raised(lambda: run_to_end(MyWorkflow(timeout=5, stream_limit=2)))


@trigger(
    "<Workflow>(stream_limit=...) must be a positive integer (the most unread events a run's "
    "stream holds) or None for no bound, got <value>"
)
def _bad_stream_limit() -> Produced:
    return raised(lambda: MyWorkflow(stream_limit=-1))


@trigger("<Workflow>(stream_overflow=...) must be 'fail' or 'drop_oldest', got <value>")
def _bad_stream_overflow() -> Produced:
    return raised(lambda: MyWorkflow(stream_limit=5, stream_overflow="newest"))  # type: ignore[arg-type]


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


@trigger(
    "stepstream: run <run_id> of <Workflow>: <Event> was not collected by step '<step>', "
    "because <reason>; a list[E] step collects only the events returned inside a fan-out "
    "batch (further such events are not reported)"
)
def _not_collected() -> Produced:
    with logged("stepstream") as messages:
        run_to_end(fan.SendsIntoBatch(timeout=5))
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


# ---- the embedded telemetry files

FILES_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import json
    import logging
    import os
    import resource
    import signal
    import sys

    from stepstream import StartEvent, StopEvent, Workflow, step
    from stepstream.telemetry import TelemetryFileError, configure_telemetry


    class Hello(Workflow):
        @step
        async def hello(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="hello " * 400)


    messages = []


    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())


    logging.getLogger("stepstream").addHandler(Collect())
    case, options = sys.argv[1], {}
    if case == "symlink":
        os.mkdir("tele")
        os.symlink(os.devnull, "tele/logs.jsonl")
    elif case == "not-a-directory":
        open("tele", "w").close()
    elif case == "rotate":
        os.makedirs("tele/logs.1.jsonl/in-the-way")
        options = {"max_file_bytes": 1000}
    try:
        handle = configure_telemetry(directory="tele", **options)
    except TelemetryFileError as exc:
        print(json.dumps({"raised": [type(exc).__name__, str(exc)]}))
        sys.exit()
    if case == "full":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    async def main():
        for _ in range(3):
            await Hello(timeout=5).run()


    asyncio.run(main())
    handle.force_flush()
    handle.shutdown()
    print(json.dumps({"logged": messages}))
    """
)


@functools.cache
def files_script(case: str) -> dict[str, Any]:
    """Run configure_telemetry() over a damaged telemetry directory, in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "files.py"
        script.write_text(FILES_SCRIPT, encoding="utf-8")
        proc = run_command(sys.executable, script, case, cwd=Path(tmp), env=without_otel())
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


@trigger("cannot open telemetry file <path>: <reason>; <fix>, or pass another directory")
def _store_file_refused() -> Produced:
    kind, message = files_script("symlink")["raised"]
    return kind, [message]


@trigger("cannot create telemetry directory <dir>: <reason>; <fix>, or pass another directory")
def _store_directory_refused() -> Produced:
    kind, message = files_script("not-a-directory")["raised"]
    return kind, [message]


@trigger("stepstream: cannot write <path>: <reason>")
def _store_write_failed() -> Produced:
    return "log", files_script("full")["logged"]


@trigger("stepstream: cannot rotate <path>: <reason>; it grows on without rotation")
def _store_rotation_failed() -> Produced:
    return "log", files_script("rotate")["logged"]


FILE_OPTIONS: dict[str, Callable[[], object]] = {
    "configure_telemetry(log_flush_interval=<value>): give a positive number of seconds": (
        lambda: configure_telemetry(log_flush_interval=-1)
    ),
    (
        "configure_telemetry(max_file_bytes=<value>): give a positive number of bytes, or None "
        "(no rotation)"
    ): lambda: configure_telemetry(max_file_bytes=0),
    "configure_telemetry(rotated_files=<value>): keep at least 1 rotated file": (
        lambda: configure_telemetry(rotated_files=0)
    ),
}
for _template, _action in FILE_OPTIONS.items():
    trigger(_template)(partial(raised, _action))


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
    env: dict[str, str] = field(default_factory=dict)


RECORDED = (("run", "hello.py", "--telemetry-dir", "t"),) * 2

# One span batch line: the span's name and extra keys go in the %s.
SPAN_LINE = (
    '{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{},"spans":[{'
    '"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","name":%s%s,'
    '"kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2","status":{}}]}]}]}\n'
)

CLI_CASES: dict[str, CliCase] = {
    (
        "<source> has no module-level Workflow instance to serve<hint>; or name a dict of "
        "them as <source>:ATTR"
    ): CliCase(("serve", "hello.py"), {"hello.py": WORKFLOW_FILE}),
    (
        "--durable <value>: give a database URL (sqlite:///path or postgresql://...), or "
        "--durable alone for the default database; write --durable=URL before FILE"
    ): CliCase(("serve", "--durable", "hello.py"), {"hello.py": WORKFLOW_FILE}),
    (
        "--workers <n>: each worker would keep its own runs in memory, so a run started on one "
        "could not be streamed from another; run one process per port (behind a sticky load "
        "balancer) until a shared handler store exists"
    ): CliCase(("serve", "hello.py", "--workers", "2"), {"hello.py": WORKFLOW_FILE}),
    "cannot read <path>: no such file": CliCase(("run", "nope.py")),
    "URL must be an http:// or https:// URL, got '<value>'": CliCase(
        ("watch", "localhost:8000", "h")
    ),
    "URL '<value>' is not valid: <reason>": CliCase(("watch", "http://127.0.0.1:80x", "h")),
    (
        "cannot reach a stepstream server at <url>: <reason>; start one with `stepstream serve` "
        "or check the URL"
    ): CliCase(("watch", "http://127.0.0.1:9", "h")),
    "--timeout is for a run in this process; a served workflow has its own timeout": CliCase(
        ("run", "--server", "http://127.0.0.1:9", "jobs", "--timeout", "1")
    ),
    "KEY=VALUE argument '<pair>' is not key=value (the workflow comes first)": CliCase(
        ("run", "hello.py", "oops"), {"hello.py": WORKFLOW_FILE}
    ),
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
    "<path>:<line>: damaged span skipped (<reason>)": CliCase(
        ("traces", "list", "--telemetry-dir", "t"), {"t/traces.jsonl": SPAN_LINE % (5, "")}
    ),
    (
        "<path>:<line>: span <span_id> is its own ancestor (a parentSpanId loop); its parent "
        "link is ignored"
    ): CliCase(
        ("traces", "list", "--telemetry-dir", "t"),
        {"t/traces.jsonl": SPAN_LINE % ('"run_step x"', ',"parentSpanId":"00f067aa0ba902b7"')},
    ),
    (
        "<path>:<line>: damaged line skipped (longer than <n> bytes; set "
        "STEPSTREAM_MAX_LINE_BYTES to read longer lines)"
    ): CliCase(
        ("logs", "--telemetry-dir", "t"),
        {"t/logs.jsonl": '{"event": "' + "x" * 200 + '"}\n'},
        env={"STEPSTREAM_MAX_LINE_BYTES": "100"},
    ),
    "STEPSTREAM_MAX_LINE_BYTES must be a positive number of bytes, got '<value>'": CliCase(
        ("logs", "--telemetry-dir", "t"),
        {"t/logs.jsonl": ""},
        env={"STEPSTREAM_MAX_LINE_BYTES": "lots"},
    ),
    "--endpoint must be an http:// or https:// URL, got '<value>'": CliCase(
        ("traces", "push", "--endpoint", "localhost:4318", "--telemetry-dir", "t"),
        {"hello.py": WORKFLOW_FILE},
        RECORDED,
    ),
    # Port 9 of 127.0.0.1 (discard): nothing listens there on a test machine.
    "cannot reach a collector at <url>: <reason>; start one (deploy/README.md) or pass "
    "--endpoint": CliCase(
        ("traces", "push", "--endpoint", "http://127.0.0.1:9", "--telemetry-dir", "t"),
        {"hello.py": WORKFLOW_FILE},
        RECORDED,
    ),
}


def cli(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the stepstream command in ``directory`` (no OTLP, wide plain output)."""
    full = without_otel({"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb", **(env or {})})
    return stepstream_cli(*args, cwd=directory, env=full, timeout=60)


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
        proc = cli(root, *case.args, env=case.env)
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


@trigger("the collector at <url> answered <status>: <text>")
def _push_refused() -> Produced:
    """`stepstream traces push` to a loopback HTTP server that answers 404 to everything."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_error(404, "no OTLP here")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - hook signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        case = CliCase(
            ("traces", "push", "--endpoint", endpoint, "--telemetry-dir", "t"),
            {"hello.py": WORKFLOW_FILE},
            RECORDED,
        )
        return "cli", run_cli_case(case)
    finally:
        server.shutdown()
        server.server_close()


for _template in CLI_CASES:
    TRIGGERS[_template] = functools.partial(lambda t: ("cli", cli_results()[t]), _template)


UNSHOWABLE_FILE = """
from typing import Any

from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Opaque(Event):
    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("cannot dump")


class Odd:
    def __repr__(self) -> str:
        raise RuntimeError("cannot repr")


class Unshowable(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Opaque())
        return StopEvent(result=Odd())
"""


@functools.cache
def unshowable_run() -> list[str]:
    """What `stepstream run` printed for an event and a result it cannot show.

    Each event line's text after the time and step, and the result after ``Result: ``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "unshowable.py").write_text(UNSHOWABLE_FILE, encoding="utf-8")
        proc = cli(Path(tmp), "run", "unshowable.py")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    events = [line.split(maxsplit=2)[2] for line in lines if re.match(r" *\d+\.\d+s ", line)]
    return events + [line.removeprefix("Result: ") for line in lines if line.startswith("Result")]


@trigger("<EventType> <fields cannot be shown: <ErrorType>: <message>>")
def _event_unshowable() -> Produced:
    return "cli", unshowable_run()


@trigger("<<Type> that cannot be shown: <ErrorType>>")
def _value_unshowable() -> Produced:
    return "cli", unshowable_run()


# -- the server ------------------------------------------------------------------------------


def served(**options: Any) -> Any:
    """A WorkflowServer serving JobWorkflow as ``jobs`` (the server extra is a dev dependency)."""
    from stepstream.server import WorkflowServer  # noqa: PLC0415

    return WorkflowServer({"jobs": JobWorkflow(timeout=10)}, **options)


def answered(method: str, path: str, *, finish: bool = False, **request: Any) -> Produced:
    """The ``detail`` a server answers a request with (``finish``: after a run of it ended)."""
    import httpx  # noqa: PLC0415

    async def call() -> str:
        server = served(**request.pop("options", {}))
        transport = httpx.ASGITransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            target = path
            if finish:
                start = {"start_event": {"name": "a", "size": 1}}
                done = await http.post("/workflows/jobs/run", json=start)
                target = path.replace("{id}", done.json()["handler_id"])
            response = await http.request(method, target, **request)
            await server.aclose()
        assert 400 <= response.status_code < 500, response.text
        text: str = response.json()["detail"]
        return text

    return "http", [asyncio.run(call())]


SERVER_TRIGGERS: dict[str, Callable[[], Produced]] = {
    "WorkflowServer: a workflow is already served as '<name>'; pick another name": lambda: raised(
        lambda: served().add_workflow("jobs", JobWorkflow())
    ),
    (
        "WorkflowServer: '<name>' must be a Workflow instance, got <type>; instantiate it "
        "(e.g. MyWorkflow(timeout=60))"
    ): lambda: raised(lambda: served().add_workflow("cls", wrong(JobWorkflow))),
    "Workflow not found: no workflow is served as '<name>' (served: <names>)": lambda: answered(
        "POST", "/workflows/nope/run", json={}
    ),
    "Handler not found: no handler '<handler_id>' on this server": lambda: answered(
        "GET", "/handlers/nope"
    ),
    "request body is not valid JSON: <reason>": lambda: answered(
        "POST", "/workflows/jobs/run", content=b"{oops"
    ),
    "request body must be a JSON object, got <type>": lambda: answered(
        "POST", "/workflows/jobs/run", content=b"[]"
    ),
    "request body is <n> bytes; this server accepts at most <limit> (max_body_bytes)": lambda: (
        answered("POST", "/workflows/jobs/run", content=b"{}" * 60, options={"max_body_bytes": 100})
    ),
    "<field>: <problem> (validating <EventClass>)": lambda: answered(
        "POST", "/workflows/jobs/run", json={"start_event": {"jobs": "many"}}
    ),
    "<field>.type: unknown event type '<name>'; this workflow takes <names>": lambda: answered(
        "POST", "/workflows/jobs/run", json={"start_event": {"type": "Nope", "value": {}}}
    ),
    "Workflow already completed: handler '<handler_id>' ended (<status>)": lambda: answered(
        "POST", "/events/{id}", finish=True, json={"event": {"type": "StopEvent", "value": {}}}
    ),
    "after_sequence: must be an event seq (an integer) or 'now', got '<value>'": lambda: answered(
        "GET", "/events/{id}?after_sequence=x", finish=True
    ),
    "no file '<name>' in the web view (it has <names>)": lambda: answered("GET", "/ui/nope.js"),
    "missing bearer token: send the header 'Authorization: Bearer <token>'": lambda: answered(
        "GET", "/workflows", options={"token": "t0ken"}
    ),
    "wrong bearer token: the Authorization header has not this server's token": lambda: answered(
        "GET", "/workflows", options={"token": "t0ken"}, headers={"Authorization": "x"}
    ),
}
TRIGGERS.update(SERVER_TRIGGERS)


def unready(*, durable: str | None = None, closed: bool = False) -> Produced:
    """The ``detail`` of a 503 from ``GET /health/ready`` (``closed``: after aclose())."""
    import httpx  # noqa: PLC0415

    async def call() -> str:
        server = served(durable=durable) if durable else served()
        transport = httpx.ASGITransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            if closed:
                await server.aclose()
            response = await http.get("/health/ready")
            await server.aclose()
        assert response.status_code == 503, response.text
        text: str = response.json()["detail"]
        return text

    return "http", [asyncio.run(call())]


def _closed_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TRIGGERS.update(
    {
        (
            "the durable database <database> is not answering (<error>); this server cannot "
            "serve runs until it does"
        ): lambda: unready(durable=f"postgresql://u:pw@127.0.0.1:{_closed_port()}/runs"),
        "this server is shutting down; send requests to another replica": lambda: unready(
            closed=True
        ),
    }
)


def _cli_against(server: Any, *args: str) -> Produced:
    """``stepstream ARGS`` (``{url}`` in them: the URL of ``server``, served in a thread)."""
    from _live_server import serve_in_thread  # noqa: PLC0415 - needs the server extra

    with serve_in_thread(server) as url:
        return "cli", run_cli_case(CliCase(tuple(a.format(url=url) for a in args)))


@trigger("the server at <url> answered <status>: <detail>")
def _client_refused() -> Produced:
    return _cli_against(served(), "watch", "{url}", "nope")


@trigger(
    "the server at <url> refused the token: <detail>; pass --token or set STEPSTREAM_SERVER_TOKEN"
)
def _client_token() -> Produced:
    server = served(token="t0ken")  # noqa: S106 - a test server's token
    return _cli_against(server, "watch", "{url}", "h", "--token", "wrong")


class _FakeServer(http.server.BaseHTTPRequestHandler):
    """A handler ``h`` whose streams break (``drop``) or close for a shutdown."""

    mode = "drop"

    def do_GET(self) -> None:
        if self.path.startswith(("/events/h", "/handlers/h/steps")):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            if self.mode == "drop":  # promises a body it never sends: the stream breaks
                self.send_header("Content-Length", "1000")
                self.end_headers()
                return
            frame = {"value": {"reason": "server_shutdown", "detail": "shutting down"}}
            body = f"event: StreamClosedEvent\ndata: {json.dumps(frame)}\n\n".encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data: dict[str, Any] = {"graph": {"nodes": []}}
        if self.path == "/handlers/h":
            data = {"handler_id": "h", "workflow_name": "w", "run_id": "r", "status": "running"}
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - hook signature
        pass


def _against_fake(mode: str) -> Produced:
    handler = type("Fake", (_FakeServer,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        return "cli", run_cli_case(CliCase(("watch", url, "h")))
    finally:
        server.shutdown()
        server.server_close()


@trigger("lost the connection to the server at <url>: <reason>")
def _client_lost() -> Produced:
    return _against_fake("drop")


@trigger("the server at <url> closed the stream: <detail>")
def _client_closed() -> Produced:
    return _against_fake("shutdown")


# ---- durable runs


class Durable(Workflow):
    """A one-step workflow for the durable runs' messages."""

    @step
    async def only(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await asyncio.sleep(float(ev.get("sleep", 0)))
        return StopEvent(result="done")


def _sqlite(name: str) -> str:
    return f"sqlite:///{Path(tempfile.mkdtemp()) / name}"


def _durable(body: Callable[[Any], Any], *workflows: str) -> Produced:
    """Raised by ``await body(runtime)`` with a launched runtime (after it is destroyed)."""
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415 - the durable extra

    async def main() -> None:
        runtime = DBOSRuntime(_sqlite("durable.sqlite"))
        for _ in workflows:
            Durable(runtime=runtime)
        await runtime.launch()
        try:
            await body(runtime)
        finally:
            await runtime.destroy()

    return raised(lambda: asyncio.run(main()))


@trigger(
    "<Workflow>(durable=...) needs the durable extra, which is not installed (<error>); "
    "install it with pip install 'stepstream[durable]'"
)
def _durable_missing() -> Produced:
    with unittest.mock.patch.dict(sys.modules, {"stepstream.durable": None}):
        return raised(lambda: Durable(durable=True))


@trigger(
    "<Workflow>(durable=...) must be True, a database URL ('sqlite:///path' or "
    "'postgresql://...') or None, got <value>"
)
def _durable_wrong() -> Produced:
    return raised(lambda: Durable(durable=wrong(3)))


@trigger("<Workflow>(...): pass runtime= or durable=, not both (durable= makes its own runtime)")
def _durable_and_runtime() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: Durable(durable=True, runtime=DBOSRuntime(_sqlite("x.sqlite"))))


@trigger("runtime= takes a durable runtime (stepstream.durable.DBOSRuntime) or None, got <type>")
def _runtime_wrong() -> Produced:
    return raised(lambda: Durable(runtime=object()))


@trigger(
    "<Workflow>(stream_limit=...) does not apply to a durable workflow: its stream is kept "
    "in the database, and a reader resumes from any seq; leave stream_limit out"
)
def _durable_bounded() -> Produced:
    return raised(lambda: Durable(durable=_sqlite("x.sqlite"), stream_limit=5))


@trigger(
    "DBOSRuntime(...) got unknown option(s) <names>; it takes database_url, create, "
    "idle_release_after, on_version_mismatch, instance_id, failover_after and <options>"
)
def _runtime_option() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: DBOSRuntime(poll=1))


@trigger(
    "the durable database <path> does not exist; start the runs that should resume with this "
    "file, or pass create=True to start with a new one"
)
def _database_missing() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: DBOSRuntime(_sqlite("gone.sqlite"), create=False).launch_sync())


@trigger(
    "the durable database <path> cannot be opened (<error>); it is not a SQLite database or it "
    "is damaged. Restore it from a backup, or move it away to start with a new one (its runs "
    "are then lost)"
)
def _database_damaged() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    url = _sqlite("damaged.sqlite")
    Path(url.removeprefix("sqlite:///")).write_bytes(b"not a database" * 100)
    return raised(lambda: DBOSRuntime(url).launch_sync())


@trigger("the durable database <url> could not be opened: <ErrorType>: <error>")
def _database_unreachable() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    runtime = DBOSRuntime("postgresql://nobody@127.0.0.1:1/none")
    with logged("dbos"):  # DBOS logs its own account of the failure
        return raised(lambda: asyncio.run(runtime.launch()))


@trigger(
    "the DBOSRuntime is not launched; call await runtime.launch() (or runtime.launch_sync()) "
    "after constructing the workflows, before running them"
)
def _not_launched() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: run_to_end(Durable(runtime=DBOSRuntime(_sqlite("x.sqlite")))))


@trigger(
    "another DBOSRuntime (database <url>) is launched in this process; DBOS runs one per "
    "process: use that runtime (or durable=True everywhere), or destroy() it first"
)
def _another_runtime() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    async def second(runtime: Any) -> None:
        await DBOSRuntime(_sqlite("other.sqlite")).launch()

    return _durable(second)


@trigger("DBOSRuntime.launch_sync() cannot be called from async code; use await launch()")
def _launch_sync_in_loop() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    async def main() -> None:
        DBOSRuntime(_sqlite("x.sqlite")).launch_sync()

    return raised(lambda: asyncio.run(main()))


@trigger("there is no durable run <run_id> in the database <url>")
def _no_such_run() -> Produced:
    async def attach(runtime: Any) -> None:
        await runtime.handler("nope")

    return _durable(attach)


@trigger(
    "durable run <run_id> has ended (DBOS status <status>); only a run that is still going "
    "can be re-attached"
)
def _run_ended() -> Produced:
    async def attach(runtime: Any) -> None:
        handler = runtime._workflows[Durable().workflow_name].run()
        await handler
        await runtime.handler(handler.run_id)

    return _durable(attach, "Durable")


def _left_pending(version: str | None = None) -> tuple[str, str]:
    """A database holding a run left pending (its process stopped it): (URL, run id)."""
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    url = _sqlite("pending.sqlite")

    async def main() -> str:
        runtime = DBOSRuntime(url)
        wf = Durable(runtime=runtime, version=version)
        await runtime.launch()
        handler = wf.run(sleep=60)
        await asyncio.sleep(0.2)
        await runtime.destroy()  # the run's task is cancelled: it stays pending
        return handler.run_id

    return url, asyncio.run(main())


def _attach_without_workflow() -> tuple[Produced, list[str]]:
    """Relaunch on a pending run without its workflow; re-attach with a short timeout."""
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    url, run_id = _left_pending()

    async def main() -> None:
        runtime = DBOSRuntime(url)
        await runtime.launch()
        try:
            await runtime.handler(run_id, timeout=3)
        finally:
            await runtime.destroy()

    with logged("stepstream") as messages:
        produced = raised(lambda: asyncio.run(main()))
    return produced, messages


@trigger(
    "durable run <run_id> is pending but was not resumed in this process within <seconds>s; "
    "it may be running in another process, or its workflow is not constructed here with "
    "this runtime"
)
def _not_resumed_here() -> Produced:
    return _attach_without_workflow()[0]


@trigger(
    "stepstream: durable run <run_id> of workflow <name> cannot resume in this process: no "
    "workflow of that name is constructed with this runtime; construct it "
    "(MyWorkflow(runtime=runtime)) before the runtime launches. The run stays pending and "
    "resumes at a launch that has it"
)
def _workflow_not_constructed() -> Produced:
    return "log", _attach_without_workflow()[1]


@trigger(
    "DBOSRuntime(on_version_mismatch=...) must be one of 'leave', 'resume', 'fail' (what a run "
    "started by another version of its workflow's code does here), got <value>"
)
def _version_policy() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: DBOSRuntime(_sqlite("x.sqlite"), on_version_mismatch="drain"))


@trigger(
    "<Workflow>(version=...) must be a non-empty string naming the version of the workflow's "
    "code (e.g. '2'), or None for a hash of its step graph; got <value>"
)
def _version_blank() -> Produced:
    return raised(lambda: Durable(version=" "))


def _other_version(policy: str) -> tuple[Produced, list[str]]:
    """A run of version 1 met by a launch of version 2 with ``policy``; re-attach to it."""
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    url, run_id = _left_pending(version="1")

    async def main() -> None:
        runtime = DBOSRuntime(url, on_version_mismatch=policy)
        Durable(runtime=runtime, version="2")
        await runtime.launch()
        try:
            await runtime.handler(run_id, timeout=10)
        finally:
            await runtime.destroy()

    with logged("stepstream") as messages:
        produced = raised(lambda: asyncio.run(main()))
    return produced, messages


_MISMATCH = (
    "durable run <run_id> of workflow <name> was started by version <version> of its code, and "
    "this process has version <version>; "
)
_LEFT = (
    "it is left pending: a process running version <version> resumes it when it launches; or "
    "construct the DBOSRuntime with on_version_mismatch='resume' to resume it on this version, "
    "or 'fail' to end it"
)


@trigger(_MISMATCH + _LEFT)
def _version_left() -> Produced:
    return _other_version("leave")[0]


@trigger("stepstream: " + _MISMATCH + _LEFT)
def _version_left_logged() -> Produced:
    return "log", _other_version("leave")[1]


@trigger(_MISMATCH + "it is ended as failed (on_version_mismatch='fail')")
def _version_failed() -> Produced:
    return _other_version("fail")[0]


@trigger("stepstream: " + _MISMATCH + _LEFT + "; resuming it (on_version_mismatch='resume')")
def _version_resumed() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    url, run_id = _left_pending(version="1")

    async def main() -> None:
        runtime = DBOSRuntime(url, on_version_mismatch="resume")
        Durable(runtime=runtime, version="2")
        await runtime.launch()
        try:
            await runtime.handler(run_id, timeout=10)  # resumed, sleeping on
        finally:
            await runtime.destroy()

    with logged("stepstream") as messages:
        asyncio.run(main())
    return "log", messages


@trigger(
    "durable run <run_id> was cancelled in its database (runtime.cancel() or "
    "DBOS.cancel_workflow, from this process or another)"
)
def _cancelled_in_database() -> Produced:
    from dbos import DBOS  # noqa: PLC0415

    async def cancel(runtime: Any) -> None:
        handler = runtime._workflows[Durable().workflow_name].run(sleep=60)
        await asyncio.sleep(0.1)
        await DBOS.cancel_workflow_async(handler.run_id)
        await handler

    return _durable(cancel, "Durable")


@trigger("durable run <run_id> has ended; only a run that is still going can be re-attached")
def _ended_before_restart() -> Produced:
    import sqlite3  # noqa: PLC0415

    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    url = _sqlite("ended.sqlite")

    async def run_once() -> str:
        runtime = DBOSRuntime(url)
        wf = Durable(runtime=runtime)
        await runtime.launch()
        handler = wf.run()
        await handler
        await runtime.destroy()
        return handler.run_id

    run_id = asyncio.run(run_once())
    # As if the process had died after the run's end was recorded, before DBOS's record.
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE workflow_status SET status = 'PENDING' WHERE workflow_uuid = ?", (run_id,)
        )

    async def attach(runtime: Any) -> None:
        await runtime.handler(run_id, timeout=10)

    async def main() -> None:
        runtime = DBOSRuntime(url)
        Durable(runtime=runtime)
        await runtime.launch()
        try:
            await attach(runtime)
        finally:
            await runtime.destroy()

    return raised(lambda: asyncio.run(main()))


@functools.cache
def _outage() -> list[str]:
    """What the stepstream logger says while a run's Postgres database stops for 2 s."""
    from _postgres import PostgresServer  # noqa: PLC0415
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    async def main(server: PostgresServer) -> None:
        runtime = DBOSRuntime(server.database_url("outage"))
        wf = Durable(runtime=runtime)
        await runtime.launch()
        try:
            handler = wf.run(sleep=1)
            await asyncio.sleep(0.5)  # started and recorded; its end is not
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(2)
            await asyncio.to_thread(server.start)
            async with asyncio.timeout(60):
                await handler
        finally:
            await runtime.destroy()

    with PostgresServer() as server, logged("stepstream") as messages:
        asyncio.run(main(server))
    return messages


@trigger(
    "stepstream: the durable database cannot be written (<ErrorType>: <error>); the journals "
    "wait and are written once it is back"
)
def _database_away() -> Produced:
    return "log", _outage()


@trigger("stepstream: the durable database is back; the journals are written again")
def _database_back() -> Produced:
    return "log", _outage()


class Retried(Workflow):
    """Fails its first attempt; retried 1.5 s later, raises what retry_info() says."""

    @step(retry_policy=retry_policy(wait=wait_fixed(1.5), stop=stop_after_attempt(2)))
    async def only(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        info = ctx.retry_info()
        if info.last_exception is not None:
            raise info.last_exception
        msg = "the first attempt fails"
        raise ValueError(msg)


@trigger("attempt <n> of step <step> failed before the run's process stopped: <ErrorType>: <error>")
def _retry_before_restart() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415
    from stepstream.telemetry import Observer  # noqa: PLC0415
    from stepstream.telemetry import observe  # noqa: PLC0415

    url = _sqlite("retried.sqlite")

    class Recorded(Observer):
        def __init__(self) -> None:
            self.event = asyncio.Event()

        def step_retry(self, inv: Any, delay: float) -> None:
            self.event.set()

    async def stop_in_back_off() -> str:
        runtime = DBOSRuntime(url)
        wf = Retried(runtime=runtime)
        await runtime.launch()
        recorded = Recorded()
        with observe(recorded):
            handler = wf.run()
        await recorded.event.wait()  # told once the retry is recorded
        await runtime.destroy()
        return handler.run_id

    run_id = asyncio.run(stop_in_back_off())

    async def resume() -> None:
        runtime = DBOSRuntime(url)
        Retried(runtime=runtime)
        await runtime.launch()
        try:
            await (await runtime.handler(run_id))
        finally:
            await runtime.destroy()

    return raised(lambda: asyncio.run(resume()))


@trigger(
    "run id <run_id> is already taken by an earlier durable run; start the run with another "
    "run_id (or none: a new one is made)"
)
def _run_id_taken() -> Produced:
    async def twice(runtime: Any) -> None:
        wf = runtime._workflows[Durable().workflow_name]
        await wf.run(run_id="same")
        await wf.run(run_id="same")

    return _durable(twice, "Durable")


@trigger(
    "durable run <run_id> could not be saved (<ErrorType>: <error>); what a durable run keeps "
    "in its store and the events it sends must be serializable by its serializer (JSON by "
    "default)"
)
def _durable_unsaveable() -> Produced:
    class Unsaveable(Workflow):
        @step
        async def only(self, ctx: Context[Any], ev: StartEvent) -> Middle:
            await ctx.store.set("callback", print)
            return Middle()

        @step
        async def last(self, ev: Middle) -> StopEvent:
            return StopEvent()

    async def run(runtime: Any) -> None:
        await Unsaveable(runtime=runtime).run()

    return _durable(run)


@trigger(
    "stream_events(after=<seq>): this run has written events up to seq <seq> and keeps those "
    "from seq <seq> on (an in-memory run does not keep the events already read); pass a seq in "
    "that range, or make the workflow durable (durable=True) to read its stream again from "
    "any seq"
)
def _after_gone() -> Produced:
    async def main() -> None:
        handler = Durable(timeout=5).run()
        await handler
        handler.stream_events(after=5)  # the run wrote its terminal event only (seq 0)

    return raised(lambda: asyncio.run(main()))


@trigger(
    "ctx.step_key is only available from within a step (it names the step invocation that reads it)"
)
def _step_key_outside() -> Produced:
    async def main() -> None:
        handler = Durable(timeout=5).run(sleep=1)
        try:
            _ = handler.ctx.step_key
        finally:
            await handler.cancel_run()

    return raised(lambda: asyncio.run(main()))


@trigger(
    "instance_id=<value>: give each replica a name of its own (1 to 100 printable characters, "
    "no surrounding spaces) that it keeps across restarts, e.g. its host or pod name"
)
def _instance_id_bad() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: DBOSRuntime(_sqlite("x.sqlite"), instance_id=" a"))


@trigger(
    "failover_after=<value>: give the seconds after which a replica that stopped renewing its "
    "lease has its runs taken over by another (at least 1), or None to leave a dead "
    "replica's runs until it restarts"
)
def _failover_after_bad() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: DBOSRuntime(_sqlite("x.sqlite"), failover_after=0.5))


@trigger(
    "instance id <id> is in use by another live process of this host (pid <pid>) on the same "
    "database; give each replica its own --instance-id (or $STEPSTREAM_INSTANCE_ID)"
)
def _instance_in_use() -> Produced:
    """A replica's lease, renewed by a live process of this host (made so: the parent's)."""
    import os  # noqa: PLC0415

    import sqlalchemy as sa  # noqa: PLC0415

    from _postgres import PostgresServer  # noqa: PLC0415
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    async def main(url: str) -> None:
        first = DBOSRuntime(url, instance_id="same")
        await first.launch()
        await first.destroy()
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as c:  # as if the parent process held it
            c.execute(
                sa.text("UPDATE dbos.stepstream_replicas SET pid = :pid"), {"pid": os.getppid()}
            )
        engine.dispose()
        await DBOSRuntime(url, instance_id="same").launch()

    with PostgresServer() as server:
        return raised(lambda: asyncio.run(main(server.database_url("replicas"))))


@trigger(
    "idle_release_after=<value>: give the seconds a durable run may wait for an event before "
    "it is released (a positive number), or None to keep waiting runs in memory"
)
def _idle_release_bad() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    return raised(lambda: DBOSRuntime(_sqlite("x.sqlite"), idle_release_after=0))


class Unwritable(Event):
    """An event the JSON serializer cannot write (a function in a field)."""

    call: Any = None


class Waits(Workflow):
    """Waits for a HumanResponseEvent."""

    @step
    async def only(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        got = await ctx.wait_for_event(HumanResponseEvent, timeout=None)
        return StopEvent(result=got.get("response"))


@trigger(
    "durable run <run_id> cannot record the event <EventType> it was sent (<ErrorType>: "
    "<error>); the events sent to a durable run must be serializable by its serializer (JSON "
    "by default)"
)
def _durable_event_unrecordable() -> Produced:
    async def send(runtime: Any) -> None:
        handler = Waits(runtime=runtime, timeout=None).run()
        try:
            await handler.send_event(Unwritable(call=print))
        finally:
            await handler.cancel_run()

    return _durable(send)


@trigger(
    "durable run <run_id> stopped before the event sent to it was recorded (<reason>); send it "
    "again once the run has resumed"
)
def _durable_event_unrecorded() -> Produced:
    async def send(runtime: Any) -> None:
        handler = Waits(runtime=runtime, timeout=None).run()
        await asyncio.sleep(0.2)
        sending = asyncio.ensure_future(handler.send_event(HumanResponseEvent(response="x")))
        await asyncio.sleep(0)  # queued, not committed yet: the runtime stops the run now
        await runtime.destroy()
        await sending

    return _durable(send)


@trigger("cannot send <EventType> to durable run <run_id>: <reason>")
def _durable_event_too_late() -> Produced:
    async def send(runtime: Any) -> None:
        handler = runtime._workflows[Durable().workflow_name].run()
        await handler
        await runtime.send_event(handler.run_id, HumanResponseEvent(response="x"))

    return _durable(send, "Durable")


@trigger(
    "stepstream: durable run <run_id> cannot take the <EventType> sent to it (<error>); it is "
    "dropped"
)
def _durable_event_not_taken() -> Produced:
    from stepstream.durable import DBOSRuntime  # noqa: PLC0415

    async def main() -> None:
        runtime = DBOSRuntime(_sqlite("durable.sqlite"), idle_release_after=0.1)
        wf = Waits(runtime=runtime, timeout=None)
        await runtime.launch()
        try:
            handler = wf.run()
            run_id = handler.run_id
            del handler
            for _ in range(100):  # until it is parked
                await asyncio.sleep(0.1)
                record = await runtime.run(run_id)
                if record is not None and record.state == "parked":
                    break
            await runtime.send_event(run_id, HumanResponseEvent(response="x"), step="nope")
            await asyncio.sleep(3)  # reloaded by DBOS's queue, which polls every second
        finally:
            await runtime.destroy()

    with logged("stepstream") as messages:
        asyncio.run(main())
    return "log", messages


def _durable_server(durable: object, *workflows: tuple[str, Workflow]) -> Any:
    from stepstream.server import WorkflowServer  # noqa: PLC0415

    return WorkflowServer(dict(workflows), durable=durable)


@trigger(
    "WorkflowServer: '<name>': workflow <Workflow> is durable on <database>, not on <url>, "
    "which this server keeps its runs in; build it without durable= or runtime= (the server "
    "makes it durable), or serve with its database"
)
def _durable_server_elsewhere() -> Produced:
    return raised(
        lambda: _durable_server(_sqlite("a.sqlite"), ("d", Durable(durable=_sqlite("b.sqlite"))))
    )


@trigger(
    "WorkflowServer: '<name>': two durable workflows are named '<workflow_name>': a durable run "
    "is resumed by its workflow's name, so each instance needs its own; pass "
    "<Workflow>(workflow_name='...') to tell them apart"
)
def _durable_server_same_name() -> Produced:
    url = _sqlite("same.sqlite")
    return raised(lambda: _durable_server(url, ("a", Durable()), ("b", Durable())))


@trigger(
    "WorkflowServer(durable=...) needs the durable extra, which is not installed (<error>); "
    "install it with pip install 'stepstream[durable]'"
)
def _durable_server_missing() -> Produced:
    with unittest.mock.patch.dict(sys.modules, {"stepstream.durable": None}):
        return raised(lambda: _durable_server(True, ("d", Durable())))


@trigger(
    "WorkflowServer(durable=...) takes True, a database URL ('sqlite:///path', "
    "'postgresql://...') or a DBOSRuntime, got <value>"
)
def _durable_server_wrong() -> Produced:
    return raised(lambda: _durable_server(3, ("d", Durable())))


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
