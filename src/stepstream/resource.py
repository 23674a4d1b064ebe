"""Resources: values a step receives by annotation, made by a factory or loaded from JSON.

A step parameter annotated ``Annotated[T, Resource(make_t)]`` receives what ``make_t``
returns; one annotated ``Annotated[Model, ResourceConfig("config.json", "db")]`` receives
the ``db`` object of that file, validated into ``Model``::

    def make_client(cfg: Annotated[DbConfig, ResourceConfig("app.json", "db")]) -> Client:
        return Client(cfg.url)

    class Flow(Workflow):
        @step
        async def query(
            self, ev: StartEvent, db: Annotated[Client, Resource(make_client)]
        ) -> StopEvent: ...

Factories may be sync or async, and may themselves take resources the same way (resolved
first, recursively). Values are kept by the workflow instance's :class:`ResourceManager`:
``cache=True`` (the default) makes one value per workflow instance, shared by every step
and run; ``cache=False`` makes one per step invocation, shared by everything that
invocation's resolution needs. A sync factory is called on the event loop's thread, as
in LlamaIndex: keep it quick, or make it async.

Where LlamaIndex raises ``ValueError``, stepstream raises WorkflowValidationError (a
ValueError); a missing file is a FileNotFoundError, a config that does not validate
pydantic's ValidationError, and a factory that cannot be called a TypeError, as there.
What a factory raises fails the step attempt, like any step error.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import pydantic
from pydantic import BaseModel, ConfigDict

from stepstream._text import safe_repr
from stepstream.errors import WorkflowValidationError

if typing.TYPE_CHECKING:
    from pydantic_core import InitErrorDetails

__all__ = [
    "Resource",
    "ResourceConfig",
    "ResourceDefinition",
    "ResourceDescriptor",
    "ResourceManager",
]

T = TypeVar("T")


@runtime_checkable
class ResourceDescriptor(Protocol):
    """What a step parameter's ``Annotated[T, ...]`` metadata must be to be injected.

    ``name`` is the key values are cached under in a :class:`ResourceManager`;
    ``cache`` tells whether a value lives as long as the manager or one resolution.
    """

    @property
    def name(self) -> str:
        """The key the value is kept under."""
        ...

    @property
    def cache(self) -> bool:
        """True: one value per manager; False: one per resolution scope."""
        ...

    async def resolve(self, manager: ResourceManager) -> Any:
        """Make the value, getting any dependency through ``manager``."""
        ...

    def set_type_annotation(self, type_annotation: Any) -> None:
        """Record the ``T`` of ``Annotated[T, ...]`` (the first recorded one is kept)."""
        ...

    def set_localns(self, localns: dict[str, Any] | None) -> None:
        """Record the namespace in which string annotations of a factory are resolved."""
        ...

    def get_dependencies(self) -> list[tuple[str, ResourceDescriptor, Any]]:
        """The resources this one needs: (parameter name, descriptor, annotated type)."""
        ...


class ResourceDefinition(BaseModel):
    """A resource parameter of a step: its ``name``, its descriptor and its type."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    resource: ResourceDescriptor
    type_annotation: Any = None


# -- resolution state, per task ----------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Scope:
    """One dependency resolution: the values of this scope, for one manager."""

    manager: ResourceManager
    values: dict[str, Any] = field(default_factory=dict)


# Module level (a ContextVar made per manager would be kept alive by every context).
_SCOPE: ContextVar[_Scope | None] = ContextVar("stepstream_resource_scope", default=None)
# The names being resolved in this task, outermost first: a repeat is a cycle.
_STACK: ContextVar[tuple[str, ...]] = ContextVar("stepstream_resource_stack", default=())
# How many cached resources this task is the first resolver of, right now. A task
# that is first resolver of none may wait for another task's resolution: such waits
# cannot form a cycle, so they cannot deadlock.
_HOLDING: ContextVar[int] = ContextVar("stepstream_resource_holding", default=0)


class ResourceManager:
    """Keeps resource values: ``cache=True`` ones for its lifetime, others per scope.

    Each :class:`~stepstream.workflow.Workflow` has one (``Workflow(resource_manager=...)``
    to share one between workflow instances). ``resources`` maps names to the cached
    values. When several step invocations need a cached resource that is not made yet,
    its factory runs once and the others wait for its value.
    """

    def __init__(self) -> None:
        self.resources: dict[str, Any] = {}
        # Which resource each name stands for: two different ones under one name would
        # silently share a value.
        self._owners: dict[str, object] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def set(self, name: str, val: Any) -> None:
        """Cache ``val`` under ``name``, as if a ``cache=True`` resource had made it."""
        self.resources[name] = val

    def get_all(self) -> dict[str, Any]:
        """A copy of the cached values, by name."""
        return dict(self.resources)

    @contextmanager
    def resolution_scope(self) -> Iterator[None]:
        """Share ``cache=False`` values among every :meth:`get` inside the block."""
        token = _SCOPE.set(_Scope(self))
        try:
            yield
        finally:
            _SCOPE.reset(token)

    async def get(self, descriptor: ResourceDescriptor) -> Any:
        """Return the value of ``descriptor``, resolving it (and its dependencies) if needed.

        Raises WorkflowValidationError (a ValueError) for a circular dependency, or when
        two different resources share one name; what a factory raises propagates.
        """
        scope = _SCOPE.get()
        if scope is None or scope.manager is not self:
            with self.resolution_scope():
                return await self.get(descriptor)
        name = descriptor.name
        stack = _STACK.get()
        if name in stack:
            chain = " -> ".join([*stack[stack.index(name) :], name])
            msg = (
                f"Circular resource dependency detected: {chain}; a resource cannot depend "
                "on itself: remove one of these Annotated[..., Resource(...)] factory "
                "parameters"
            )
            raise WorkflowValidationError(msg)
        self._claim(name, descriptor)
        cache = descriptor.cache
        if cache:
            if name not in self.resources and not _HOLDING.get():
                await self._wait_for_others(name)
            if name in self.resources:
                return self.resources[name]
        if name in scope.values:
            return scope.values[name]
        first = None
        if cache and name not in self._pending:
            first = self._pending[name] = asyncio.get_running_loop().create_future()
        stack_token = _STACK.set((*stack, name))
        holding_token = _HOLDING.set(_HOLDING.get() + 1) if first is not None else None
        try:
            value = await descriptor.resolve(self)
        finally:
            _STACK.reset(stack_token)
            if first is not None:
                assert holding_token is not None  # noqa: S101 - set together with first
                _HOLDING.reset(holding_token)
                del self._pending[name]
                first.set_result(None)
        if cache:
            value = self.resources.setdefault(name, value)
        scope.values[name] = value
        return value

    async def _wait_for_others(self, name: str) -> None:
        """Wait while another task of this loop makes the cached resource ``name``."""
        while name not in self.resources:
            pending = self._pending.get(name)
            if pending is None or pending.get_loop() is not asyncio.get_running_loop():
                return
            # Shielded: cancelling this waiter must not cancel the others' wait.
            await asyncio.shield(pending)

    def _claim(self, name: str, descriptor: ResourceDescriptor) -> None:
        identity = getattr(descriptor, "_identity", None)
        if identity is None:
            return
        owner = self._owners.setdefault(name, identity)
        if owner != identity:
            msg = (
                f"two different resources are named {name!r} ({_describe(owner)} and "
                f"{_describe(identity)}); a ResourceManager keeps values by name, so one "
                "would get the other's value: give each factory its own name (a def "
                "rather than a lambda), or use a separate ResourceManager"
            )
            raise WorkflowValidationError(msg)


def _describe(identity: object) -> str:
    if isinstance(identity, tuple):
        path, selector, type_annotation = identity
        where = f"ResourceConfig({path!r}" + (f", {selector!r})" if selector else ")")
        return f"{where} as {_type_name(type_annotation)}"
    module = getattr(identity, "__module__", None)
    qualname = getattr(identity, "__qualname__", None)
    if module and qualname:
        return f"factory {module}.{qualname}"
    return f"factory {identity!r}"


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else repr(t)


# -- Resource ----------------------------------------------------------------------------


class _Resource(Generic[T]):
    """A resource made by calling ``factory``; see :func:`Resource`."""

    def __init__(self, factory: Callable[..., T], cache: bool) -> None:
        self.factory = factory
        self._name: str = getattr(factory, "__qualname__", None) or repr(factory)
        self._cache = cache
        self._type_annotation: Any = None
        self._localns: dict[str, Any] | None = None
        self._plan: _Plan | None = None

    @property
    def name(self) -> str:
        """The factory's ``__qualname__``: the key its value is cached under."""
        return self._name

    @property
    def cache(self) -> bool:
        """Whether one value is kept for the manager's lifetime."""
        return self._cache

    @property
    def _identity(self) -> object:
        return self.factory

    def set_type_annotation(self, type_annotation: Any) -> None:
        """Record the annotated type (the first recorded one is kept)."""
        if self._type_annotation is None:
            self._type_annotation = type_annotation

    def set_localns(self, localns: dict[str, Any] | None) -> None:
        """Record where the factory's string annotations may point (first one kept)."""
        if self._localns is None and localns:
            self._localns = dict(localns)
            self._plan = None

    def get_dependencies(self) -> list[tuple[str, ResourceDescriptor, Any]]:
        """The factory's ``Annotated[T, <descriptor>]`` parameters, in signature order."""
        return list(self._read_plan().dependencies)

    async def resolve(self, manager: ResourceManager) -> Any:
        """Resolve the dependencies through ``manager``, then call the factory with them."""
        plan = self._read_plan()
        if plan.problems:
            raise TypeError(plan.problem_message(self._name))
        kwargs = {param: await manager.get(dep) for param, dep, _ in plan.dependencies}
        value = self.factory(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    def _read_plan(self) -> _Plan:
        plan = self._plan
        if plan is None:
            plan = self._plan = _read_factory(self.factory, self._localns)
        return plan

    def __repr__(self) -> str:
        return f"Resource({self._name}, cache={self._cache})"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a factory's signature says: its dependencies, and why it cannot be called."""

    dependencies: tuple[tuple[str, ResourceDescriptor, Any], ...]
    problems: tuple[str, ...]

    def problem_message(self, name: str) -> str:
        return f"resource factory {name} cannot be called: {'; '.join(self.problems)}"


def _read_factory(factory: Callable[..., Any], localns: dict[str, Any] | None) -> _Plan:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: called bare
        return _Plan((), ())
    unresolved = None
    globalns = getattr(inspect.unwrap(factory), "__globals__", {})
    # The call site's names, but never shadowing the factory's own module.
    ns = {k: v for k, v in (localns or {}).items() if k not in globalns}
    try:
        hints = typing.get_type_hints(factory, localns=ns, include_extras=True)
    except NameError as exc:
        hints = {}
        unresolved = str(exc)
    except TypeError:  # not a function (a callable object, a partial): no hints
        hints = {}
    dependencies, missing, positional = _sort_params(params, hints, localns)
    problems: list[str] = []
    if missing:
        problem = (
            f"required parameter(s) {', '.join(map(repr, missing))} get no value; annotate "
            "each with Annotated[T, Resource(...)] or Annotated[T, ResourceConfig(...)], "
            "or give it a default"
        )
        if unresolved is not None:
            problem += f" (its annotations could not be resolved: {unresolved})"
        problems.append(problem)
    if positional:
        problems.append(
            f"resource parameter(s) {', '.join(map(repr, positional))} are positional-only, "
            "but resources are passed by keyword; move them after the '/'"
        )
    return _Plan(tuple(dependencies), tuple(problems))


def _sort_params(
    params: list[inspect.Parameter], hints: dict[str, Any], localns: dict[str, Any] | None
) -> tuple[list[tuple[str, ResourceDescriptor, Any]], list[str], list[str]]:
    """(dependencies, required parameters without a value, positional-only resources)."""
    dependencies: list[tuple[str, ResourceDescriptor, Any]] = []
    missing: list[str] = []
    positional: list[str] = []
    for param in params:
        found = _descriptor_of(hints.get(param.name))
        if found is None:
            if param.default is inspect.Parameter.empty and param.kind not in {
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            }:
                missing.append(param.name)
        elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(param.name)
        else:
            base, descriptor = found
            descriptor.set_type_annotation(base)
            descriptor.set_localns(localns)
            dependencies.append((param.name, descriptor, base))
    return dependencies, missing, positional


def Resource(factory: Callable[..., T], cache: bool = True) -> _Resource[T]:  # noqa: N802 - peer API
    """A resource made by calling ``factory``, to use as ``Annotated`` metadata on a parameter.

    ``factory`` may be sync or async; its parameters annotated with a resource are
    resolved first. ``cache=True`` keeps one value per workflow instance, shared by
    every step and run; ``cache=False`` makes one per step invocation.
    """
    if not callable(factory):
        msg = (  # type: ignore[unreachable]
            f"Resource(factory) takes a callable that returns the resource, got "
            f"{type(factory).__name__} ({safe_repr(factory, 80)}); pass the function itself, "
            "e.g. Resource(make_client), not Resource(make_client())"
        )
        raise TypeError(msg)
    return _Resource(factory, cache)


# -- ResourceConfig ----------------------------------------------------------------------


class _ResourceConfig:
    """A resource loaded from a JSON file; see :func:`ResourceConfig`."""

    def __init__(
        self,
        config_file: str,
        path_selector: str | None,
        label: str | None,
        description: str | None,
    ) -> None:
        self.config_file = config_file
        self.path_selector = path_selector
        self.label = label
        self.description = description
        self._type_annotation: Any = None

    @property
    def name(self) -> str:
        """``config_file``, then ``.path_selector`` when there is one."""
        if self.path_selector:
            return f"{self.config_file}.{self.path_selector}"
        return self.config_file

    @property
    def cache(self) -> bool:
        """Always True: a file is read once per manager."""
        return True

    @property
    def _identity(self) -> object:
        return (self.config_file, self.path_selector, self._type_annotation)

    def set_type_annotation(self, type_annotation: Any) -> None:
        """Record the type to validate into (the first recorded one is kept)."""
        if self._type_annotation is None:
            self._type_annotation = type_annotation

    def set_localns(self, localns: dict[str, Any] | None) -> None:
        """Nothing to resolve: a config has no factory."""

    def get_dependencies(self) -> list[tuple[str, ResourceDescriptor, Any]]:
        """None: a config depends on nothing."""
        return []

    async def resolve(self, manager: ResourceManager) -> Any:
        """Load the file (now, not at construction) and validate the selected object."""
        return self.load()

    def load(self) -> Any:
        """Read, select and validate, synchronously; the errors name the file."""
        path = Path(self.config_file).absolute()
        if not path.is_file():
            msg = (
                f"No such file: {path} (ResourceConfig({self.config_file!r}); a relative "
                f"path is read from the current directory, {Path.cwd()}); create the file "
                "or correct the path"
            )
            raise FileNotFoundError(msg)
        with path.open(encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                msg = f"{exc.msg} in {path} (ResourceConfig({self.config_file!r}))"
                raise json.JSONDecodeError(msg, exc.doc, exc.pos) from None
        return self._validate(path, self._select(data))

    def _select(self, data: Any) -> Any:
        """The object at ``path_selector``; each key must lead to a JSON object."""
        if not self.path_selector:
            return data
        walked: list[str] = []
        for key in self.path_selector.split("."):
            if not isinstance(data, dict):
                self._not_an_object(".".join(walked) or "(root)", type(data).__name__)
            if key not in data:
                keys = ", ".join(map(repr, data)) or "none"
                got = f"nothing (no key {key!r}; the keys there are {keys})"
                self._not_an_object(".".join([*walked, key]), got, "correct path_selector")
            data = data[key]
            walked.append(key)
        if not isinstance(data, dict):
            self._not_an_object(self.path_selector, type(data).__name__)
        return data

    def _not_an_object(
        self, at: str, got: str, hint: str = "point path_selector at a JSON object"
    ) -> typing.NoReturn:
        msg = (
            f"Expected dictionary for configuration from {self.config_file} at path {at}, "
            f"got: {got}; {hint}"
        )
        raise WorkflowValidationError(msg)

    def _validate(self, path: Path, data: Any) -> Any:
        target = self._type_annotation
        if target is None or target is Any:
            return data
        try:
            if isinstance(target, type) and issubclass(target, BaseModel):
                return target.model_validate(data)
            return pydantic.TypeAdapter(target).validate_python(data)
        except pydantic.ValidationError as exc:
            raise self._naming_the_file(exc, path, target) from None
        except pydantic.PydanticSchemaGenerationError as exc:
            msg = (
                f"ResourceConfig({self.config_file!r}) cannot validate into "
                f"{_type_name(target)}: pydantic has no schema for it; annotate the "
                "parameter with a pydantic model"
            )
            raise TypeError(msg) from exc

    def _naming_the_file(
        self, exc: pydantic.ValidationError, path: Path, target: Any
    ) -> pydantic.ValidationError:
        """The same errors, titled with the model, the file and the selector."""
        where = f"{_type_name(target)} from {path}"
        if self.path_selector:
            where += f" at {self.path_selector!r}"
        try:
            errors = typing.cast("list[InitErrorDetails]", exc.errors())
            return pydantic.ValidationError.from_exception_data(where, errors)
        except Exception:  # noqa: BLE001 - errors pydantic cannot rebuild: keep them
            exc.add_note(f"while loading {where}")
            return exc

    def __repr__(self) -> str:
        selector = f", path_selector={self.path_selector!r}" if self.path_selector else ""
        return f"ResourceConfig({self.config_file!r}{selector})"


def ResourceConfig(  # noqa: N802 - peer API
    config_file: str,
    path_selector: str | None = None,
    label: str | None = None,
    description: str | None = None,
) -> _ResourceConfig:
    """An object of a JSON file, validated into the parameter's annotated model.

    ``path_selector`` is a dot-separated path of keys to the object (``"db.primary"``);
    without it the whole file is used. The file is read on first use and validated into
    the annotated type; ``label`` and ``description`` are for people reading the graph.
    """
    config_file = os.fspath(config_file)
    if not config_file.endswith(".json"):
        msg = (
            "Only JSON files can be used to load Pydantic-based resources. "
            f"ResourceConfig got config_file={config_file!r}; give the path of a .json file"
        )
        raise WorkflowValidationError(msg)
    if path_selector is not None and not all(path_selector.split(".")):
        msg = (
            f"ResourceConfig({config_file!r}, path_selector={path_selector!r}): the "
            "selector has an empty key; give dot-separated keys such as 'db.primary'"
        )
        raise WorkflowValidationError(msg)
    return _ResourceConfig(config_file, path_selector, label, description)


# -- for the runtime ---------------------------------------------------------------------


def _descriptor_of(annotation: Any) -> tuple[Any, ResourceDescriptor] | None:
    """``(T, descriptor)`` for ``Annotated[T, ..., descriptor, ...]`` (the first one), else None."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    base, *metadata = typing.get_args(annotation)
    for item in metadata:
        if isinstance(item, ResourceDescriptor):
            return base, item
    return None


async def _resolve_step_resources(
    manager: ResourceManager, definitions: Sequence[ResourceDefinition], step: str
) -> dict[str, Any]:
    """The values of a step's resource parameters, by name: one resolution scope.

    An exception is annotated (``add_note``) with the step and parameter it was for.
    """
    values: dict[str, Any] = {}
    with manager.resolution_scope():
        for definition in definitions:
            try:
                values[definition.name] = await manager.get(definition.resource)
            except Exception as exc:
                exc.add_note(
                    f"while resolving {definition.resource!r} for parameter "
                    f"{definition.name!r} of step {step!r}"
                )
                raise
    return values


class _HasResources(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def resources(self) -> Sequence[ResourceDefinition]: ...


def _check_resource_configs(specs: Iterable[_HasResources]) -> list[str]:
    """One line per problem in the steps' resources, found without calling a factory.

    Every ResourceConfig is loaded (those of factories' dependencies too), and every
    factory's parameters are checked: they must be resources or have defaults, and
    must not depend on themselves.
    """
    problems: list[str] = []
    for spec in specs:
        for definition in spec.resources:
            where = f"step {spec.name!r}, parameter {definition.name!r}"
            _check_descriptor(definition.resource, where, (), problems)
    return problems


def _check_descriptor(
    descriptor: ResourceDescriptor, where: str, stack: tuple[str, ...], problems: list[str]
) -> None:
    name = descriptor.name
    if name in stack:
        chain = " -> ".join([*stack[stack.index(name) :], name])
        problems.append(f"{where}: circular resource dependency {chain}")
        return
    try:
        if isinstance(descriptor, _ResourceConfig):
            descriptor.load()
            return
        if isinstance(descriptor, _Resource):
            plan = descriptor._read_plan()  # noqa: SLF001 - same module
            if plan.problems:
                problems.append(f"{where}: {plan.problem_message(name)}")
        dependencies = descriptor.get_dependencies()
    except pydantic.ValidationError as exc:
        fields = "; ".join(
            f"field {'.'.join(map(str, e['loc'])) or '(root)'!r}: {e['msg']}" for e in exc.errors()
        )
        problems.append(f"{where}: {exc.title} does not validate: {fields}")
        return
    except Exception as exc:  # noqa: BLE001 - every problem is reported, none raised
        problems.append(f"{where}: {type(exc).__name__}: {exc}")
        return
    for param, dependency, _ in dependencies:
        inner = f"{where} (via {name}, parameter {param!r})"
        _check_descriptor(dependency, inner, (*stack, name), problems)
