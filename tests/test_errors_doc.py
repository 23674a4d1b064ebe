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
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from stepstream import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowError,
    WorkflowHandler,
    step,
)
from stepstream.context import JsonSerializer, PickleSerializer
from stepstream.context.state_store import DictState, InMemoryStateStore
from stepstream.resource import Resource, ResourceConfig, ResourceManager
from stepstream.retry_policy import (
    ExponentialBackoffRetryPolicy,
    retry_any,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_policy,
    stop_after_attempt,
    wait_chain,
    wait_fixed,
)

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


def instantiate(workflow_cls: type[Workflow]) -> Callable[[], object]:
    """An action that instantiates ``workflow_cls``."""
    return workflow_cls


def outcome(workflow: Workflow, **start: Any) -> Produced:
    """Run ``workflow`` in a fresh loop; report the error that ``await handler`` raises."""

    async def main() -> None:
        handler = workflow.run(**start)
        async with asyncio.timeout(10):
            await handler

    return raised(lambda: asyncio.run(main()))


class Middle(Event):
    pass


class Other(Event):
    pass


class Minimal(Workflow):
    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="ok")


class JobStart(StartEvent):
    name: str
    size: int


class JobWorkflow(Workflow):
    @step
    async def start(self, ev: JobStart) -> StopEvent:
        return StopEvent(result=(ev.name, ev.size))


# ---- defining a workflow


@trigger("@step options for step '<step>' are invalid")
def _step_options() -> Produced:
    return decorate_with(num_workers=0, timeout=0)


def decorate_with(**options: Any) -> Produced:
    """Decorate a free function with ``@step(**options)``, reporting what it raises."""

    async def work(ev: StartEvent) -> StopEvent:
        return StopEvent()

    return raised(lambda: step(**options)(work))


@trigger("num_workers must be an int >= 1, got <value>")
def _num_workers() -> Produced:
    return decorate_with(num_workers=0)


@trigger("retry_policy must have a next(elapsed_time, attempts, error) method, got <type>")
def _retry_policy_option() -> Produced:
    return decorate_with(retry_policy=object())


@trigger("timeout must be a positive number of seconds or None, got <value>")
def _step_timeout_option() -> Produced:
    return decorate_with(timeout=-1)


@trigger("<name>(<arg>=...) must be a number of seconds or a timedelta, got <value>")
def _retry_duration() -> Produced:
    return raised(lambda: wait_fixed("soon"))  # type: ignore[arg-type]


@trigger("<name>(<arg>=...) must be a number, got <value>")
def _retry_number() -> Produced:
    return raised(lambda: stop_after_attempt(None))  # type: ignore[arg-type]


@trigger("<name>(<arg>=...) must be callable, like <example>, got <value>")
def _retry_part_not_callable() -> Produced:
    return raised(lambda: retry_policy(wait=5))  # type: ignore[arg-type]


@trigger("<name>() arguments must be callable, like <example>, got <value> as argument <n>")
def _retry_combined_not_callable() -> Produced:
    return raised(lambda: retry_any(retry_if_exception_type(OSError), "busy"))  # type: ignore[arg-type]


@trigger(
    "<name>(exception_types=...) must be an exception class or a tuple of exception classes, "
    "got <value>"
)
def _retry_exception_types() -> Produced:
    return raised(lambda: retry_if_exception_type([OSError]))  # type: ignore[arg-type]


@trigger("<name>(match=...) must be a str or a compiled str pattern (re.Pattern[str]), got <value>")
def _retry_match() -> Produced:
    return raised(lambda: retry_if_exception_message(match=42))  # type: ignore[arg-type]


@trigger("retry_if_exception_message() missing 1 required argument 'message' or 'match'")
def _retry_message_missing() -> Produced:
    return raised(retry_if_exception_message)


@trigger("retry_if_exception_message() takes either 'message' or 'match', not both")
def _retry_message_both() -> Produced:
    return raised(lambda: retry_if_exception_message("busy", match="busy"))


@trigger("wait_chain requires at least one strategy")
def _wait_chain_empty() -> Produced:
    return raised(wait_chain)


@trigger(
    "ConstantDelayRetryPolicy is deprecated, use retry_policy(wait=wait_fixed(delay), "
    "stop=stop_after_attempt(n)) instead"
)
def _constant_delay_deprecated() -> Produced:
    return warned(ConstantDelayRetryPolicy)


@trigger(
    "ExponentialBackoffRetryPolicy is deprecated, use retry_policy(wait=wait_exponential(...), "
    "stop=stop_after_attempt(n)) instead"
)
def _exponential_backoff_deprecated() -> Produced:
    return warned(ExponentialBackoffRetryPolicy)


@trigger("<Workflow>(timeout=...) must be a positive number of seconds or None, got <value>")
def _workflow_timeout() -> Produced:
    return raised(lambda: Minimal(timeout=0))


@trigger("workflow <Workflow> is invalid (<n> problem(s)):")
def _invalid_summary() -> Produced:
    class NoStop(Workflow):
        @step
        async def start(self, ev: StartEvent) -> None:
            return None

    return raised(instantiate(NoStop))


@trigger("workflow <Workflow> has no steps; decorate its methods with @step")
def _no_steps() -> Produced:
    class Empty(Workflow):
        pass

    return raised(instantiate(Empty))


@trigger(
    "step '<step>': cannot resolve an annotation (<NameError>); define that event class at "
    "module level or before the workflow class"
)
def _unresolvable() -> Produced:
    class Unresolvable(Workflow):
        @step
        async def start(self, ev: "NoSuchEvent") -> StopEvent:  # type: ignore[name-defined]  # noqa: F821
            return StopEvent()

    return raised(instantiate(Unresolvable))


@trigger(
    "step '<step>' has no event parameter; add one annotated with the Event type it "
    "accepts, e.g. `ev: StartEvent`"
)
def _no_event_parameter() -> Produced:
    class NoEvent(Workflow):
        @step
        async def start(self, ctx: Context[Any]) -> StopEvent:
            return StopEvent()

    return raised(instantiate(NoEvent))


@trigger(
    "step '<step>': parameter '<parameter>' has no type annotation; annotate it with the "
    "Event type(s) the step accepts, e.g. `ev: StartEvent`"
)
def _unannotated() -> Produced:
    class Unannotated(Workflow):
        @step
        async def start(self, ev) -> StopEvent:  # type: ignore[no-untyped-def]  # noqa: ANN001
            return StopEvent()

    return raised(instantiate(Unannotated))


@trigger(
    "step '<step>': parameter '<parameter>' is annotated with <type>, which is not an Event "
    "type; annotate it with the Event subclass(es) the step accepts"
)
def _not_an_event_parameter() -> Produced:
    class StrAnnotated(Workflow):
        @step
        async def start(self, ev: str) -> StopEvent:
            return StopEvent()

    return raised(instantiate(StrAnnotated))


@trigger(
    "step '<step>': more than one event parameter ('<parameter>'); a step takes one event "
    "parameter, annotated with a union for several types"
)
def _two_event_parameters() -> Produced:
    class TwoEvents(Workflow):
        @step
        async def start(self, ev: StartEvent, other: Middle) -> StopEvent:
            return StopEvent()

    return raised(instantiate(TwoEvents))


@trigger(
    "step '<step>' has no return annotation; annotate it with the Event type(s) it may emit, "
    "or None"
)
def _no_return_annotation() -> Produced:
    class NoReturn(Workflow):
        @step
        async def start(self, ev: StartEvent):  # type: ignore[no-untyped-def]  # noqa: ANN202
            return StopEvent()

    return raised(instantiate(NoReturn))


@trigger(
    "step '<step>': return annotation <annotation> includes <types>, which is not an Event "
    "type; steps return Event instances or None"
)
def _non_event_return() -> Produced:
    class ReturnsStr(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent | str:
            return StopEvent()

    return raised(instantiate(ReturnsStr))


@trigger(
    "step '<step>' accepts <Event>, a StopEvent: a StopEvent ends the run and is never "
    "delivered to a step"
)
def _accepts_stop_event() -> Produced:
    class TakesStop(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def after(self, ev: StopEvent) -> None:
            return None

    return raised(instantiate(TakesStop))


@trigger(
    "no step accepts StartEvent; add a step whose event parameter is annotated with "
    "StartEvent (or one StartEvent subclass)"
)
def _no_start() -> Produced:
    class NoStart(Workflow):
        @step
        async def middle(self, ev: Middle) -> StopEvent:
            return StopEvent()

    return raised(instantiate(NoStart))


@trigger(
    "more than one StartEvent type is accepted (<types and steps>); a workflow has one start "
    "event type"
)
def _two_start_types() -> Produced:
    class TwoStarts(Workflow):
        @step
        async def plain(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def job(self, ev: JobStart) -> StopEvent:
            return StopEvent()

    return raised(instantiate(TwoStarts))


@trigger(
    "no step can return a StopEvent; annotate the last step's return type with StopEvent "
    "(or a StopEvent subclass)"
)
def _no_stop() -> Produced:
    return _invalid_summary()


@trigger(
    "event type <Event> is produced by <steps> but no step accepts it; add a step that takes "
    "<Event>, or remove it from the return annotation"
)
def _produced_not_accepted() -> Produced:
    class Dangling(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent | Other:
            return StopEvent()

    return raised(instantiate(Dangling))


@trigger(
    "event type <Event> is accepted by step '<step>' but no step produces it; add <Event> to "
    "the return annotation of the step that sends it"
)
def _accepted_not_produced() -> Produced:
    class Orphan(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step
        async def orphan(self, ev: Other) -> StopEvent:
            return StopEvent()

    return raised(instantiate(Orphan))


class StateA(BaseModel):
    n: int = 0


class StateB(BaseModel):
    m: int = 0


@trigger(
    "steps disagree on the Context state type (<states and steps>); the state types must form "
    "one inheritance chain (each a subclass of the next), whose most derived type is the "
    "state of every step: use one model, or derive one from the other"
)
def _state_types() -> Produced:
    class TwoStates(Workflow):
        @step
        async def start(self, ctx: Context[StateA], ev: StartEvent) -> Middle:
            return Middle()

        @step
        async def finish(self, ctx: Context[StateB], ev: Middle) -> StopEvent:
            return StopEvent()

    return raised(instantiate(TwoStates))


@dataclass
class PlainState:
    n: int = 0


@trigger(
    "the Context state type <type> of <steps> is not a pydantic model; declare the state as "
    "a BaseModel subclass whose fields have defaults, e.g. `class MyState(BaseModel): count: "
    "int = 0`"
)
def _state_not_a_model() -> Produced:
    class PlainStateFlow(Workflow):
        @step
        async def start(self, ctx: Context[PlainState], ev: StartEvent) -> StopEvent:  # type: ignore[type-var]
            return StopEvent()

    return raised(instantiate(PlainStateFlow))


class NeedsName(BaseModel):
    name: str


@trigger(
    "the Context state type <State> cannot be created without arguments: field(s) <fields> "
    "have no default; give every field a default (each run starts from <State>())"
)
def _state_without_defaults() -> Produced:
    class RequiredState(Workflow):
        @step
        async def start(self, ctx: Context[NeedsName], ev: StartEvent) -> StopEvent:
            return StopEvent()

    return raised(instantiate(RequiredState))


# ---- starting a run


@trigger(
    "<Workflow>.run() needs a running asyncio event loop; call it from async code, e.g. "
    "`async def main(): handler = wf.run(...)` with asyncio.run(main())"
)
def _no_loop() -> Produced:
    return raised(lambda: Minimal(timeout=5).run())


def run_with(**kwargs: Any) -> Produced:
    """Start JobWorkflow with ``kwargs`` inside a loop, reporting what run() raises."""

    async def main() -> None:
        JobWorkflow(timeout=5).run(**kwargs)

    return raised(lambda: asyncio.run(main()))


@trigger("<Workflow>.run(): pass either start_event= or keyword fields, not both (got <fields>)")
def _start_event_and_fields() -> Produced:
    return run_with(start_event=JobStart(name="x", size=1), name="y")


@trigger("<Workflow>.run(): start_event must be a <StartEvent>, got <type>")
def _start_event_type() -> Produced:
    return run_with(start_event=StartEvent())


@trigger("<Workflow>.run(): <StartEvent> has no field(s) <fields>")
def _unknown_fields() -> Produced:
    return run_with(name="x", size=1, colour="red")


@trigger("known fields: <fields>")
def _known_fields() -> Produced:
    return run_with(name="x", size=1, colour="red")


@trigger("<Workflow>.run(): the arguments do not fit <StartEvent>")
def _arguments_do_not_fit() -> Produced:
    return run_with(name="x", size="big")


@trigger("field '<field>': <reason>")
def _field_reason() -> Produced:
    return run_with(name="x")


# ---- while a run is running


class Targeted(Workflow):
    """Sends Other to the step named in the start event."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Middle | None:
        ctx.send_event(Other(), step=ev["target"])
        return None

    @step
    async def finish(self, ev: Middle) -> StopEvent:
        return StopEvent()


@trigger(
    "send_event(..., step='<step>'): workflow <Workflow> has no step '<step>'; its steps "
    "are <steps>"
)
def _send_to_unknown_step() -> Produced:
    return outcome(Targeted(timeout=5), target="nope")


@trigger(
    "send_event(<Event>, step='<step>'): step '<step>' does not accept <Event> (it accepts "
    "<types>); steps that accept <Event>: <steps>"
)
def _send_to_wrong_step() -> Produced:
    return outcome(Targeted(timeout=5), target="finish")


@trigger(
    "no step of workflow <Workflow> accepts <Event> and no step is waiting for it; add a step "
    "that takes <Event>, or wait for it with ctx.wait_for_event"
)
def _unrouted() -> Produced:
    class Unrouted(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.send_event(Other())
            return StopEvent()

    return outcome(Unrouted(timeout=5))


@trigger(
    "<Event> does not meet the requirements of the step waiting for it (<requirements>) and no "
    "step of workflow <Workflow> accepts it; send a <Event> whose fields match"
)
def _fails_requirements() -> Produced:
    class Picky(Workflow):
        @step
        async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(), requirements={"user": "ada"}
            )
            return StopEvent(result=answer)

    async def main() -> None:
        handler = Picky(timeout=5).run()
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                try:
                    handler.ctx.send_event(HumanResponseEvent(user="bob"))
                finally:
                    await handler.cancel_run()

    return raised(lambda: asyncio.run(main()))


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


@trigger("<method> takes an Event instance, got <type> (<value>)")
def _not_an_event() -> Produced:
    class NonEvent(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream({"not": "an event"})  # type: ignore[arg-type]
            return StopEvent()

    return outcome(NonEvent(timeout=5))


@trigger("step '<step>' returned <type> (<value>); steps must return an Event instance or None")
def _returned_non_event() -> Produced:
    class BadReturn(Workflow):
        @step
        async def produce(self, ev: StartEvent) -> StopEvent:
            return "not an event"  # type: ignore[return-value]

    return outcome(BadReturn(timeout=5))


@trigger(
    "step '<step>' raised asyncio.CancelledError without being cancelled; raise an ordinary "
    "exception to fail a step"
)
def _step_raised_cancelled() -> Produced:
    class Rogue(Workflow):
        @step
        async def rogue(self, ev: StartEvent) -> StopEvent:
            raise asyncio.CancelledError

    return outcome(Rogue(timeout=5))


@trigger("collect_events needs at least one expected event type")
def _collect_nothing() -> Produced:
    class CollectsNothing(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.collect_events(ev, [])
            return StopEvent()

    return outcome(CollectsNothing(timeout=5))


@trigger(
    "collect_events got <Event>, which is none of the expected types [<types>]; pass only "
    "events of the expected types"
)
def _collect_wrong_type() -> Produced:
    class CollectsWrong(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.collect_events(ev, [Middle, Other])
            return StopEvent()

    return outcome(CollectsWrong(timeout=5))


@trigger("<Event> has no field '<key>'")
def _event_has_no_field() -> Produced:
    return raised(lambda: Middle()["missing"])


# ---- resources


class Port(BaseModel):
    port: int


class Opaque:
    """A plain class: pydantic has no schema for it."""


@contextmanager
def json_file(data: str) -> Iterator[str]:
    """The path of a temporary file ``app.json`` holding ``data`` (text)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "app.json"
        path.write_text(data, encoding="utf-8")
        yield str(path)


def run_with_resource(annotation: Any) -> Produced:
    """Run a one-step workflow whose step has a parameter annotated ``annotation``."""

    async def start(ev: StartEvent, value: Any) -> StopEvent:
        return StopEvent(result=value)

    start.__annotations__["value"] = annotation

    class Resourced(Workflow):
        pass

    step(workflow=Resourced)(start)
    return outcome(Resourced(timeout=5))


@trigger(
    "Resource(factory) takes a callable that returns the resource, got <type> (<value>); pass "
    "the function itself, e.g. Resource(make_client), not Resource(make_client())"
)
def _resource_not_callable() -> Produced:
    return raised(lambda: Resource(42))  # type: ignore[arg-type]


@trigger(
    "Only JSON files can be used to load Pydantic-based resources. ResourceConfig got "
    "config_file=<file>; give the path of a .json file"
)
def _config_not_json() -> Produced:
    return raised(lambda: ResourceConfig("app.yaml"))


@trigger(
    "ResourceConfig(<file>, path_selector=<selector>): the selector has an empty key; give "
    "dot-separated keys such as 'db.primary'"
)
def _config_empty_key() -> Produced:
    return raised(lambda: ResourceConfig("app.json", path_selector="db..primary"))


@trigger(
    "step '<step>': resource parameter '<parameter>' is positional-only, but resources are "
    "passed by keyword; move it after the '/'"
)
def _positional_only_resource() -> Produced:
    class PositionalOnly(Workflow):
        @step
        async def start(self, port: Annotated[int, Resource(int)], /, ev: StartEvent) -> StopEvent:
            return StopEvent()

    return raised(instantiate(PositionalOnly))


@trigger(
    "<Workflow>(resource_manager=...) must be a stepstream.resource.ResourceManager (or None "
    "for a new one), got <type>"
)
def _resource_manager_type() -> Produced:
    return raised(lambda: Minimal(resource_manager={}))  # type: ignore[arg-type]


@trigger(
    "No such file: <path> (ResourceConfig(<file>); a relative path is read from the current "
    "directory, <cwd>); create the file or correct the path"
)
def _config_missing() -> Produced:
    return run_with_resource(Annotated[Port, ResourceConfig("no-such-config.json")])


@trigger("<reason> in <path> (ResourceConfig(<file>)): line <line> column <column> (char <char>)")
def _config_not_valid_json() -> Produced:
    with json_file('{"port": 1,}') as path:
        return run_with_resource(Annotated[Port, ResourceConfig(path)])


@trigger("Expected dictionary for configuration from <file> at path <path>, got: <what>; <fix>")
def _config_selector() -> Produced:
    with json_file('{"db": {"port": 1}}') as path:
        return run_with_resource(Annotated[Port, ResourceConfig(path, "db.port")])


@trigger("<n> validation error<s> for <Model> from <path><at selector>")
def _config_does_not_validate() -> Produced:
    with json_file('{"db": {"port": "eighty"}}') as path:
        return run_with_resource(Annotated[Port, ResourceConfig(path, "db")])


@trigger(
    "ResourceConfig(<file>) cannot validate into <type>: pydantic has no schema for it; "
    "annotate the parameter with a pydantic model"
)
def _config_no_schema() -> Produced:
    with json_file('{"port": 1}') as path:
        return run_with_resource(Annotated[Opaque, ResourceConfig(path)])


def make_a(b: "Annotated[int, Resource(make_b)]") -> int:
    return b


def make_b(a: "Annotated[int, Resource(make_a)]") -> int:
    return a


@trigger(
    "Circular resource dependency detected: <chain>; a resource cannot depend on itself: "
    "remove one of these Annotated[..., Resource(...)] factory parameters"
)
def _resource_cycle() -> Produced:
    return run_with_resource(Annotated[int, Resource(make_a)])


@trigger(
    "two different resources are named <name> (<first> and <second>); a ResourceManager keeps "
    "values by name, so one would get the other's value: give each factory its own name (a "
    "def rather than a lambda), or use a separate ResourceManager"
)
def _resource_name_clash() -> Produced:
    manager = ResourceManager()

    async def resolve_both() -> None:
        await manager.get(Resource(lambda: 1))
        await manager.get(Resource(lambda: 2))

    return raised(lambda: asyncio.run(resolve_both()))


@trigger(
    "resource factory <factory> cannot be called: required parameter(s) <parameters> get no "
    "value; annotate each with Annotated[T, Resource(...)] or Annotated[T, "
    "ResourceConfig(...)], or give it a default"
)
def _factory_parameter_without_value() -> Produced:
    def make_port(port: int) -> int:
        return port

    return run_with_resource(Annotated[int, Resource(make_port)])


@trigger(
    "resource factory <factory> cannot be called: resource parameter(s) <parameters> are "
    "positional-only, but resources are passed by keyword; move them after the '/'"
)
def _factory_positional_only_resource() -> Produced:
    def make_port(port: Annotated[int, Resource(int)], /) -> int:
        return port

    return run_with_resource(Annotated[int, Resource(make_port)])


# ---- timeouts


@trigger(
    "workflow <Workflow> timed out after <timeout>s; steps still active: <steps>. Raise "
    "Workflow(timeout=...) or pass timeout=None"
)
def _run_timeout() -> Produced:
    class Slow(Workflow):
        @step
        async def crawl(self, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(5)
            return StopEvent()

    return outcome(Slow(timeout=0.05))


@trigger(
    "step '<step>' timed out after <timeout>s (its @step timeout); steps still active: <steps>"
)
def _step_timeout() -> Produced:
    class SlowStep(Workflow):
        @step(timeout=0.05)
        async def dawdle(self, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(5)
            return StopEvent()

    return outcome(SlowStep(timeout=5))


@trigger(
    "step '<step>' waited <timeout>s for <Event> and none arrived; send it with "
    "ctx.send_event(...) or raise the timeout"
)
def _step_wait_timeout() -> Produced:
    class Asks(Workflow):
        @step
        async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            await ctx.wait_for_event(HumanResponseEvent, timeout=0.05)
            return StopEvent()

    return outcome(Asks(timeout=5))


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


# ---- the state store and serializers


def in_a_step(body: Callable[[Context[Any]], Any]) -> Produced:
    """Run a one-step workflow whose step awaits ``body(ctx)``; report what the run raises."""

    class OneStep(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            return StopEvent(result=await body(ctx))

    return outcome(OneStep(timeout=5))


@trigger(
    "path '<path>' not found in the state: <where> <what is missing>; check the path, set it "
    "first with `await ctx.store.set('<path>', value)`, or pass `default=`"
)
def _path_not_found() -> Produced:
    return in_a_step(lambda ctx: ctx.store.get("api_key"))


@trigger(
    "path cannot be empty: ctx.store.set(path, value) needs a dot-separated path such as "
    "'count' or 'user.name'; use set_state(...) to replace the whole state"
)
def _empty_path() -> Produced:
    return in_a_step(lambda ctx: ctx.store.set("", 1))


@trigger("path has <n> segments, more than MAX_DEPTH (1000); use a shorter path")
def _path_too_long() -> Produced:
    return in_a_step(lambda ctx: ctx.store.get(".".join(["a"] * 1001), default=None))


@trigger("cannot set path '<path>': <where> <what is wrong>; <fix>")
def _path_cannot_be_set() -> Produced:
    class TypedSet(Workflow):
        @step
        async def start(self, ctx: Context[StateA], ev: StartEvent) -> StopEvent:
            await ctx.store.set("missing.field", 1)
            return StopEvent()

    return outcome(TypedSet(timeout=5))


@trigger(
    "set_state got a <Type>, but the state is a <State>; pass a <State> (or an instance of "
    "one of its parent classes, whose fields are merged in)"
)
def _set_state_unrelated() -> Produced:
    return in_a_step(lambda ctx: ctx.store.set_state(StateA()))


@trigger(
    "cannot reset the state: <State>() fails without arguments (required fields: <fields>; "
    "<n> error(s)); give every field of the state model a default"
)
def _clear_without_defaults() -> Produced:
    store = InMemoryStateStore(NeedsName(name="Ada"))
    return raised(lambda: asyncio.run(store.clear()))


@trigger("writer called inside edit_state: mutate the yielded state instead")
def _writer_inside_edit() -> Produced:
    async def nested(ctx: Context[Any]) -> None:
        async with ctx.store.edit_state():
            await ctx.store.set("k", 1)

    return in_a_step(nested)


@trigger(
    "cannot serialize a value of type <type> to JSON (<reason>; value: <value>); store JSON "
    "data (dict, list, str, int, float, bool, None) or a pydantic model, or use "
    "PickleSerializer() for any picklable object"
)
def _not_json() -> Produced:
    return raised(lambda: JsonSerializer().serialize({1, 2}))


@trigger(
    "cannot serialize a value of type <type>: it is not JSON data (<reason>) and cannot be "
    "pickled (<error>); store plain data or a pydantic model instead, or leave it out of the "
    "state"
)
def _not_picklable() -> Produced:
    return raised(lambda: PickleSerializer().serialize(threading.Lock()))


def snapshot_of(**values: Any) -> Callable[[], object]:
    """An action that snapshots a DictState store holding ``values`` with JsonSerializer."""
    store = InMemoryStateStore(DictState(**values))
    return lambda: store.to_dict(JsonSerializer())


@trigger("cannot serialize state key '<key>': <error>")
def _state_key_unserializable() -> Produced:
    return raised(snapshot_of(tags={"a", "b"}))


class HoldsAnything(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    thing: Any = None


@trigger("cannot serialize the state (<State>): <error>")
def _typed_state_unserializable() -> Produced:
    store = InMemoryStateStore(HoldsAnything(thing=object()))
    return raised(lambda: store.to_dict(JsonSerializer()))


@trigger(
    "state key '<key>' cannot be serialized and is left out of the snapshot (<error>); set it "
    "again after restoring the state"
)
def _known_unserializable_key() -> Produced:
    return warned(snapshot_of(memory=threading.Lock()))


def restore(payload: dict[str, Any]) -> Produced:
    """Restore an InMemoryStateStore from ``payload`` with JsonSerializer; report the error."""
    return raised(lambda: InMemoryStateStore.from_dict(payload, JsonSerializer()))


@trigger(
    "cannot restore an InMemoryStateStore from store_type '<type>'; pass the payload to the "
    "from_dict() of the store that wrote it"
)
def _other_store_type() -> Produced:
    return restore({"store_type": "durable", "state_data": None})


@trigger(
    "cannot deserialize state key '<key>': <error>; read the snapshot with the serializer "
    "that wrote it"
)
def _state_key_unreadable() -> Produced:
    return restore({"store_type": "in_memory", "state_data": {"_data": {"k": "not json"}}})


@trigger(
    "cannot restore the state: its data holds a <type>, not a state model; pass the 'state' "
    "dict that InMemoryStateStore.to_dict() returned"
)
def _state_data_not_a_model() -> Produced:
    return restore({"store_type": "in_memory", "state_data": "[1, 2]"})


@trigger(
    "class <module.Class> is not in the serializer's allowed types, so a payload naming it is "
    "refused; allow it with JsonSerializer(allowed_types=[..., <Class>]) (the class, or the "
    "string '<module.Class>'), or use JsonSerializer() to resolve classes by import"
)
def _not_allowed() -> Produced:
    payload = JsonSerializer().serialize(StateA())
    return raised(lambda: JsonSerializer(allowed_types=[StateB]).deserialize(payload))


@trigger(
    "allowed_types entries must be classes or 'module.Class' strings, got <entry> (<type>); "
    "pass the class itself, e.g. JsonSerializer(allowed_types=[MyState])"
)
def _allowed_entry_not_a_class() -> Produced:
    return raised(lambda: JsonSerializer(allowed_types=[list[int]]))


def _local_state() -> type[BaseModel]:
    class Dup(BaseModel):
        n: int = 0

    return Dup


@trigger(
    "allowed_types has two classes written under the name <module.Class>: <class> and "
    "<class>; a payload cannot tell them apart, so allow only one of them (or rename or move "
    "the other)"
)
def _two_allowed_with_one_name() -> Produced:
    return raised(lambda: JsonSerializer(allowed_types=[_local_state(), _local_state()]))


def payload_naming(qualified_name: str) -> str:
    """A JsonSerializer payload of a model whose class is ``qualified_name``."""
    return json.dumps({"__is_pydantic": True, "value": {}, "qualified_name": qualified_name})


@trigger(
    "cannot import module '<module>' to rebuild <module.Class> named by a payload (<error>); "
    "make that module importable where the payload is read, or pass the class in "
    "JsonSerializer(allowed_types=[...])"
)
def _module_not_importable() -> Produced:
    payload = payload_naming("stepstream_no_such_module.State")
    return raised(lambda: JsonSerializer().deserialize(payload))


@trigger(
    "module '<module>' has no attribute '<Class>', so <module.Class> named by a payload cannot "
    "be rebuilt; a class defined inside a function cannot be imported: define it at module "
    "level, or pass the class in JsonSerializer(allowed_types=[...])"
)
def _class_not_in_module() -> Produced:
    payload = JsonSerializer().serialize(_local_state()())
    return raised(lambda: JsonSerializer().deserialize(payload))


@trigger("<module.name> named by a payload is a <type>, not a class; only classes are rebuilt")
def _name_not_a_class() -> Produced:
    return raised(lambda: JsonSerializer().deserialize(payload_naming("json.dumps")))


@trigger("cannot resolve class '<name>' named by a payload: expected 'module.Class'")
def _name_without_module() -> Produced:
    return raised(lambda: JsonSerializer().deserialize(payload_naming("State")))



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
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        proc = subprocess.run(
            [sys.executable, str(script), str(Path(tmp) / "telemetry")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(COLUMNS="400", NO_COLOR="1", TERM="dumb")
    return subprocess.run(
        [sys.executable, "-m", "stepstream", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
