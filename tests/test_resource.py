"""Resources: Annotated[T, Resource(...)] and ResourceConfig(...) step parameters."""

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Annotated
from typing import Any

import pydantic
import pytest

from _helpers import FanOutJobs
from _helpers import Job
from _helpers import JobDone
from _helpers import drain
from stepstream import Context
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowTimeoutError
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.resource import Resource
from stepstream.resource import ResourceConfig
from stepstream.resource import ResourceDefinition
from stepstream.resource import ResourceDescriptor
from stepstream.resource import ResourceManager
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry


class DbConfig(pydantic.BaseModel):
    url: str
    port: int


class Client:
    """A stand-in for an expensive object a step needs (a database or LLM client)."""

    def __init__(self, label: str = "client") -> None:
        self.label = label


def write_json(path: Path, data: Any) -> str:
    """Write ``data`` as JSON to ``path`` and return the path as a string."""
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


# --- a dependency cycle, at module level so the names are plain (make_a -> make_b -> make_a)


def make_a(b: "Annotated[int, Resource(make_b)]") -> int:
    return b + 1


def make_b(a: "Annotated[int, Resource(make_a)]") -> int:
    return a + 1


# --- injection ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_step_receives_what_a_sync_factory_returns() -> None:
    """An async step's Annotated[T, Resource(f)] parameter receives f()'s return value."""

    def make_client() -> Client:
        return Client("db")

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=db.label)

    assert await Flow().run() == "db"


@pytest.mark.asyncio
async def test_sync_step_receives_what_an_async_factory_returns() -> None:
    """A plain def step (run in a worker thread) receives an async factory's value."""

    async def make_client() -> Client:
        await asyncio.sleep(0)
        return Client("async")

    class Flow(Workflow):
        @step
        def go(self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]) -> StopEvent:
            return StopEvent(
                result=(db.label, threading.current_thread() is threading.main_thread())
            )

    assert await Flow().run() == ("async", False)


@pytest.mark.asyncio
async def test_resource_parameters_may_come_before_the_event_and_context() -> None:
    """Resources are passed by keyword, so they may sit anywhere in the signature."""

    def make_client() -> Client:
        return Client("first")

    class Flow(Workflow):
        @step
        async def go(
            self,
            db: Annotated[Client, Resource(make_client)],
            ev: StartEvent,
            ctx: Context[Any],
        ) -> StopEvent:
            await ctx.store.set("seen", db.label)
            return StopEvent(result=(db.label, await ctx.store.get("seen")))

    assert await Flow().run() == ("first", "first")


@pytest.mark.asyncio
async def test_keyword_only_event_and_context_parameters_are_passed_by_name() -> None:
    """A step whose event and context parameters are keyword-only gets them by name."""

    class Flow(Workflow):
        @step
        async def go(self, *, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            return StopEvent(result=type(ev).__name__)

    assert await Flow().run() == "StartEvent"


@pytest.mark.asyncio
async def test_other_annotated_metadata_is_ignored() -> None:
    """An event parameter annotated Annotated[StartEvent, "note"] is still the event parameter."""

    class Flow(Workflow):
        @step
        async def go(self, ev: Annotated[StartEvent, "the start"]) -> StopEvent:
            return StopEvent(result="ok")

    assert await Flow().run() == "ok"


# --- caching -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cached_resource_is_made_once_per_workflow_across_steps_and_runs() -> None:
    """cache=True: one factory call for two steps over two runs of one workflow instance."""
    calls = Counter[str]()

    def make_client() -> Client:
        calls["client"] += 1
        return Client()

    class Flow(Workflow):
        @step
        async def first(self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]) -> Job:
            return Job(i=id(db))

        @step
        async def second(self, ev: Job, db: Annotated[Client, Resource(make_client)]) -> StopEvent:
            return StopEvent(result=ev.i == id(db))

    flow = Flow()
    assert await flow.run() is True
    assert await flow.run() is True
    assert calls["client"] == 1
    assert await Flow().run() is True
    assert calls["client"] == 2  # another instance, another manager


@pytest.mark.asyncio
async def test_a_shared_resource_manager_shares_values_between_workflow_instances() -> None:
    """Workflow(resource_manager=m) keeps values in m: preset with set(), listed by get_all()."""
    calls = Counter[str]()

    def make_client() -> Client:
        calls["client"] += 1
        return Client("made")

    def make_label() -> str:
        calls["label"] += 1
        return "made"

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            db: Annotated[Client, Resource(make_client)],
            label: Annotated[str, Resource(make_label)],
        ) -> StopEvent:
            return StopEvent(result=(db.label, label))

    manager = ResourceManager()
    await manager.set(Resource(make_label).name, "preset")
    assert await Flow(resource_manager=manager).run() == ("made", "preset")
    assert await Flow(resource_manager=manager).run() == ("made", "preset")
    assert calls == {"client": 1}
    assert set(manager.get_all()) == {Resource(make_client).name, Resource(make_label).name}


@pytest.mark.asyncio
async def test_uncached_resource_is_made_per_invocation_and_shared_within_one() -> None:
    """cache=False: a new value per step invocation, the same one across that invocation's graph."""
    made: list[Client] = []

    def make_session() -> Client:
        made.append(Client("session"))
        return made[-1]

    def make_repo(session: Annotated[Client, Resource(make_session, cache=False)]) -> tuple[Client]:
        return (session,)

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            session: Annotated[Client, Resource(make_session, cache=False)],
            repo: Annotated[tuple[Client], Resource(make_repo, cache=False)],
        ) -> StopEvent:
            return StopEvent(result=repo[0] is session)

    flow = Flow()
    assert await flow.run() is True
    assert await flow.run() is True
    assert len(made) == 2
    assert made[0] is not made[1]


@pytest.mark.asyncio
async def test_concurrent_invocations_wait_for_one_factory_call() -> None:
    """Four invocations needing a cached resource not made yet share one async factory call."""
    calls = Counter[str]()

    async def make_client() -> Client:
        calls["client"] += 1
        await asyncio.sleep(0.02)
        return Client()

    class Flow(FanOutJobs):
        jobs = 4

        @step(num_workers=4)
        async def work(self, ev: Job, db: Annotated[Client, Resource(make_client)]) -> JobDone:
            return JobDone(i=id(db))

    ids = await Flow().run()
    assert calls["client"] == 1
    assert len(ids) == 4
    assert len(set(ids)) == 1


# --- dependencies ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_factories_receive_their_own_resources_recursively(tmp_path: Path) -> None:
    """A factory's Annotated parameters (a config, another factory) are resolved first."""
    config = write_json(tmp_path / "app.json", {"db": {"url": "pg://x", "port": 5432}})

    def make_prefix() -> str:
        return "client for"

    async def make_client(
        cfg: Annotated[DbConfig, ResourceConfig(config, path_selector="db")],
        prefix: Annotated[str, Resource(make_prefix)],
        retries: int = 3,
    ) -> Client:
        return Client(f"{prefix} {cfg.url}:{cfg.port} x{retries}")

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=db.label)

    assert await Flow().run() == "client for pg://x:5432 x3"


@pytest.mark.asyncio
async def test_circular_dependency_fails_the_step_naming_the_cycle() -> None:
    """make_a needing make_b needing make_a fails the step with the cycle spelt out."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent, a: Annotated[int, Resource(make_a)]) -> StopEvent:
            return StopEvent(result=a)

    with pytest.raises(
        ValueError, match=r"^Circular resource dependency detected: make_a -> make_b -> make_a;"
    ) as raised:
        await Flow().run()
    assert isinstance(raised.value, WorkflowValidationError)  # a ValueError, as in LlamaIndex


@pytest.mark.asyncio
async def test_factory_parameter_without_resource_or_default_is_named() -> None:
    """A factory parameter that nothing can supply fails with a TypeError naming it."""

    def make_client(url: str) -> Client:
        return Client(url)

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=db.label)

    with pytest.raises(TypeError, match=r"make_client cannot be called: .*'url' get no value"):
        await Flow().run()


@pytest.mark.asyncio
async def test_two_different_factories_with_one_name_are_refused() -> None:
    """Two lambdas share the name '<lambda>': the second is refused, not given the first's value."""
    first = Resource(lambda: "first")
    second = Resource(lambda: "second")

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, a: Annotated[str, first], b: Annotated[str, second]
        ) -> StopEvent:
            return StopEvent(result=(a, b))

    with pytest.raises(ValueError, match=r"two different resources are named .*<lambda>"):
        await Flow().run()


# --- ResourceConfig ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_resource_config_loads_the_whole_file_or_the_selected_object(
    tmp_path: Path,
) -> None:
    """Without a selector the whole JSON object is validated; with 'a.b' the object at a.b."""
    whole = write_json(tmp_path / "db.json", {"url": "pg://whole", "port": 1})
    nested = write_json(
        tmp_path / "app.json", {"services": {"db": {"url": "pg://nested", "port": 2}}}
    )

    class Flow(Workflow):
        @step
        async def go(
            self,
            ev: StartEvent,
            a: Annotated[DbConfig, ResourceConfig(whole)],
            b: Annotated[DbConfig, ResourceConfig(nested, path_selector="services.db")],
        ) -> StopEvent:
            return StopEvent(result=(a, b))

    assert await Flow().run() == (
        DbConfig(url="pg://whole", port=1),
        DbConfig(url="pg://nested", port=2),
    )


@pytest.mark.asyncio
async def test_resource_config_is_read_on_first_use_not_at_definition(tmp_path: Path) -> None:
    """The file may be written after the workflow is defined and instantiated."""
    path = tmp_path / "late.json"

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, cfg: Annotated[DbConfig, ResourceConfig(str(path))]
        ) -> StopEvent:
            return StopEvent(result=cfg.port)

    flow = Flow()
    write_json(path, {"url": "u", "port": 7})
    assert await flow.run() == 7


def test_resource_config_refuses_a_file_that_is_not_json() -> None:
    """A config_file not ending in .json is refused at once, naming it."""
    with pytest.raises(ValueError, match=r"^Only JSON files .* config_file='app\.yaml'"):
        ResourceConfig("app.yaml")


@pytest.mark.asyncio
async def test_missing_config_file_fails_the_step_naming_the_path(tmp_path: Path) -> None:
    """A config file that does not exist fails the step with FileNotFoundError naming it."""
    path = tmp_path / "absent.json"

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, cfg: Annotated[DbConfig, ResourceConfig(str(path))]
        ) -> StopEvent:
            return StopEvent(result=cfg)

    with pytest.raises(FileNotFoundError, match="^No such file: " + str(path)):
        await Flow().run()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("selector", "message"),
    [
        pytest.param(
            "db.port",
            r"Expected dictionary for configuration from .*app\.json at path db\.port, got: int",
            id="leads-to-an-int",
        ),
        pytest.param(
            "cache",
            r"at path cache, got: nothing \(no key 'cache'; the keys there are 'db'\)",
            id="missing-key",
        ),
    ],
)
async def test_selector_that_does_not_reach_an_object_is_named(
    tmp_path: Path, selector: str, message: str
) -> None:
    """A path_selector reaching a non-object or nothing raises ValueError naming file and path."""
    config = write_json(tmp_path / "app.json", {"db": {"url": "u", "port": 1}})

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, cfg: Annotated[DbConfig, ResourceConfig(config, selector)]
        ) -> StopEvent:
            return StopEvent(result=cfg)

    with pytest.raises(ValueError, match=message):
        await Flow().run()


@pytest.mark.asyncio
async def test_config_that_does_not_validate_names_model_file_and_field(tmp_path: Path) -> None:
    """A config failing its model raises ValidationError titled with model, file and selector."""
    config = write_json(tmp_path / "app.json", {"db": {"url": "u", "port": "not a port"}})

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, cfg: Annotated[DbConfig, ResourceConfig(config, "db")]
        ) -> StopEvent:
            return StopEvent(result=cfg)

    with pytest.raises(pydantic.ValidationError) as raised:
        await Flow().run()
    text = str(raised.value)
    assert f"1 validation error for DbConfig from {config} at 'db'" in text
    assert [e["loc"] for e in raised.value.errors()] == [("port",)]


# --- failures, retries, timeouts -----------------------------------------------------------


@pytest.mark.asyncio
async def test_factory_exception_fails_the_step_and_ends_the_run() -> None:
    """What a factory raises is the step's error: the stream ends with WorkflowFailedEvent."""

    def make_client() -> Client:
        msg = "database is down"
        raise ConnectionError(msg)

    class Flow(Workflow):
        @step
        async def go(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=db)

    handler = Flow().run()
    events = await drain(handler)
    with pytest.raises(ConnectionError, match="database is down") as raised:
        await handler
    terminal = events[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert (terminal.step, terminal.exception_type) == ("go", "ConnectionError")
    assert any("parameter 'db' of step 'go'" in note for note in raised.value.__notes__)


@pytest.mark.asyncio
async def test_failing_factory_is_retried_under_the_steps_retry_policy() -> None:
    """A factory failing the first attempt is called again on the retry, which succeeds."""
    calls = Counter[str]()

    def make_client() -> Client:
        calls["client"] += 1
        if calls["client"] == 1:
            msg = "flaky"
            raise ConnectionError(msg)
        return Client("second try")

    class Flow(Workflow):
        @step(retry_policy=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(2)))
        async def go(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=db.label)

    assert await Flow().run() == "second try"
    assert calls["client"] == 2


@pytest.mark.asyncio
async def test_slow_factory_counts_against_the_step_timeout() -> None:
    """Resolution is part of the attempt: a factory outlasting @step(timeout=...) times it out."""

    async def make_client() -> Client:
        await asyncio.sleep(5)
        return Client()

    class Flow(Workflow):
        @step(timeout=0.05)
        async def go(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=db)

    with pytest.raises(WorkflowTimeoutError, match="step 'go' timed out"):
        await Flow().run()


# --- definition errors ---------------------------------------------------------------------


def test_resource_needs_a_callable() -> None:
    """Resource(make_client()) (a value, not the factory) is refused with a TypeError saying so."""
    with pytest.raises(TypeError, match=r"Resource\(factory\) takes a callable .*got Client"):
        Resource(Client())  # type: ignore[arg-type]


def test_positional_only_resource_parameter_is_a_definition_problem() -> None:
    """A resource parameter before '/' cannot be passed by keyword: the workflow is invalid."""

    class Flow(Workflow):
        @step
        async def go(self, db: Annotated[Client, Resource(Client)], /, ev: StartEvent) -> StopEvent:
            return StopEvent(result=db)

    with pytest.raises(WorkflowValidationError) as raised:
        Flow()
    assert raised.value.problems == (
        (
            "step 'go': resource parameter 'db' is positional-only, but resources are passed "
            "by keyword; move it after the '/'"
        ),
    )


def test_resource_manager_must_be_a_resource_manager() -> None:
    """Workflow(resource_manager=...) given something else is refused, naming its type."""

    class Flow(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError, match=r"resource_manager=.* got dict"):
        Flow(resource_manager={})  # type: ignore[arg-type]


def test_descriptors_and_definitions_have_the_peer_shape() -> None:
    """Resource and ResourceConfig are ResourceDescriptors, named as the peer names them."""
    resource = Resource(Client, cache=False)
    config = ResourceConfig("app.json", path_selector="db", label="DB", description="the db")
    assert isinstance(resource, ResourceDescriptor)
    assert isinstance(config, ResourceDescriptor)
    assert (resource.name, resource.cache) == ("Client", False)
    assert (config.name, config.cache) == ("app.json.db", True)
    assert config.get_dependencies() == []
    definition = ResourceDefinition(name="db", resource=resource, type_annotation=Client)
    assert definition.resource is resource


# --- telemetry -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_resolution_is_a_span_event_on_the_step_span(tel: CapturedTelemetry) -> None:
    """A step with resources gets one stepstream.resources event per attempt; others get none."""

    def make_client() -> Client:
        return Client()

    class Flow(Workflow):
        @step
        async def first(self, ev: StartEvent) -> Job:
            return Job(i=1)

        @step
        async def second(self, ev: Job, db: Annotated[Client, Resource(make_client)]) -> StopEvent:
            return StopEvent(result="ok")

    await Flow().run()
    (event,) = tel.span_events(attrs.RESOURCES_EVENT)
    assert event.name == "stepstream.resources"
    assert event.attributes is not None
    names = event.attributes["stepstream.resource.names"]
    assert isinstance(names, tuple)
    assert names == (Resource(make_client).name,)
    seconds = event.attributes["stepstream.resource.seconds"]
    assert isinstance(seconds, float)
    assert seconds >= 0
    assert event in tel.one("run_step second").events
    assert not [e for e in tel.one("run_step first").events if e.name == attrs.RESOURCES_EVENT]


def test_validate_loads_every_resource_config(tmp_path: Path) -> None:
    """validate() reports a ResourceConfig whose file is missing; it can be told not to load."""

    class Db(pydantic.BaseModel):
        url: str

    missing = tmp_path / "missing.json"

    class NeedsDb(Workflow):
        @step
        async def start(
            self, ev: StartEvent, db: Annotated[Db, ResourceConfig(str(missing))]
        ) -> StopEvent:
            return StopEvent()

    wf = NeedsDb()
    assert wf.validate(validate_resource_configs=False) is False
    with pytest.raises(WorkflowValidationError) as info:
        wf.validate()
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(
        f"step 'start', parameter 'db': FileNotFoundError: No such file: {missing}"
    )


def test_validate_resources_resolves_every_factory_once_for_the_runs() -> None:
    """validate(validate_resources=True) calls the factories; cached values serve the runs."""
    made: list[str] = []

    def make_client() -> str:
        made.append("client")
        return "client"

    class UsesClient(Workflow):
        @step
        async def start(
            self, ev: StartEvent, client: Annotated[str, Resource(make_client)]
        ) -> StopEvent:
            return StopEvent(result=client)

    wf = UsesClient()
    assert wf.validate() is False
    assert made == []  # by default no factory is called
    assert wf.validate(validate_resources=True) is False
    assert made == ["client"]

    async def main() -> Any:
        return await wf.run()

    assert asyncio.run(main()) == "client"
    assert made == ["client"]


def test_validate_resources_lists_each_failing_factory() -> None:
    """Each resource whose factory raises is one problem naming its step and parameter."""

    def make_db() -> str:
        msg = "DATABASE_URL is not set"
        raise KeyError(msg)

    def make_cache() -> str:
        return "cache"

    class NeedsDb(Workflow):
        @step
        async def start(
            self,
            ev: StartEvent,
            db: Annotated[str, Resource(make_db)],
            cache: Annotated[str, Resource(make_cache)],
        ) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowValidationError) as info:
        NeedsDb().validate(validate_resources=True)
    expected = (
        "step 'start', parameter 'db': KeyError: 'DATABASE_URL is not set' (resolving "
        "Resource(test_validate_resources_lists_each_failing_factory.<locals>.make_db, "
        "cache=True))"
    )
    assert list(info.value.problems) == [expected]


def test_validate_resources_inside_a_running_loop_says_where_to_call_it() -> None:
    """Resolving needs a loop of its own: inside one, validate says so instead of failing."""

    class Plain(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    async def main() -> None:
        Plain().validate(validate_resources=True)

    with pytest.raises(WorkflowRuntimeError) as info:
        asyncio.run(main())
    assert str(info.value) == (
        "Plain.validate(validate_resources=True) resolves the resources in an event "
        "loop of its own and cannot run inside one; call it before asyncio.run(...), or from "
        "a worker thread (asyncio.to_thread)"
    )
