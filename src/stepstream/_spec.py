"""Step specs: what ``@step`` records (:class:`StepConfig`) and what a signature says.

Signatures are read into a frozen :class:`StepSpec` when the workflow class is first
instantiated, so that string annotations (and ``from __future__ import annotations``)
can refer to event classes defined after the workflow, and every problem is reported
together.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stepstream.context import Context
from stepstream.events import Event
from stepstream.resource import ResourceDefinition, ResourceDescriptor, _descriptor_of
from stepstream.retry_policy import RetryPolicy

__all__ = ["STEP_ATTR", "Catch", "StepConfig", "StepSpec", "read_spec"]

STEP_ATTR = "__stepstream_step__"


@dataclass(frozen=True, slots=True)
class Catch:
    """What ``@catch_error`` recorded: the steps covered (None: every other step)."""

    for_steps: tuple[str, ...] | None
    max_recoveries: int


@dataclass(frozen=True, slots=True)
class StepConfig:
    """What ``@step`` recorded about a function, before its signature is read."""

    name: str
    fn: Callable[..., Any]
    num_workers: int
    retry_policy: RetryPolicy | None
    timeout: float | None
    is_method: bool
    localns: dict[str, Any]
    # Set by @catch_error: which steps' failures this step handles.
    catch: Catch | None = None
    # @step(accept_event_subclasses=False): only exactly the annotated types.
    exact: bool = False
    # @step(skip_graph_checks=[...]).
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step's signature, read once: what it accepts, emits, and how to call it."""

    name: str
    fn: Callable[..., Any]
    accepts: tuple[type[Event], ...]
    returns: tuple[type[Event], ...]
    # False when the signature could not be read (the step is then invalid); the graph
    # checks treat unknown parts as "could be anything" to avoid false reports.
    accepts_known: bool
    returns_known: bool
    # Order of the (non-self) positional arguments: "ctx" or "ev" for each.
    arg_order: tuple[str, ...]
    is_method: bool
    is_async: bool
    state_type: type[Any] | None
    num_workers: int
    retry_policy: RetryPolicy | None
    timeout: float | None
    # Parameters annotated ``Annotated[T, Resource(...)]`` (or another descriptor):
    # resolved at each invocation and passed by keyword.
    resources: tuple[ResourceDefinition, ...] = ()
    # The context and event parameters passed by keyword, as (name, "ctx" or "ev"):
    # keyword-only ones, and those after a resource parameter.
    keyword_args: tuple[tuple[str, str], ...] = ()
    # Set for a @catch_error handler: which steps' failures it handles.
    catch: Catch | None = None
    exact: bool = False
    skip: frozenset[str] = frozenset()

    def accepts_type(self, event_type: type[Event]) -> bool:
        """Tell whether an event of ``event_type`` is routed to this step."""
        if self.exact:
            return event_type in self.accepts
        return issubclass(event_type, self.accepts)


def read_spec(config: StepConfig, problems: list[str]) -> StepSpec:
    """Read a step's signature into a spec, appending any problem found to ``problems``.

    A spec whose signature had problems is still returned, with ``accepts_known`` or
    ``returns_known`` False, so the graph checks can run on what could be read.
    """
    name = config.name
    before = len(problems)
    hints: dict[str, Any] | None
    extras: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(config.fn, localns=config.localns)
        # With the Annotated metadata, where resources are declared.
        extras = typing.get_type_hints(config.fn, localns=config.localns, include_extras=True)
    except NameError as exc:
        problems.append(
            f"step {name!r}: cannot resolve an annotation ({exc}); define that event "
            "class at module level or before the workflow class"
        )
        hints = None
    params_read = _Params()
    returns: tuple[type[Event], ...] | None = None
    if hints is not None:
        params = list(inspect.signature(config.fn).parameters.values())
        if config.is_method:
            params = params[1:]
        params_read = _read_params(name, params, hints, extras, config.localns, problems)
    accepts = params_read.accepts
    # A step with no event parameter is known to accept nothing; one with a bad
    # annotation might have meant anything.
    accepts_known = len(problems) == before
    if hints is not None and not accepts and accepts_known:
        problems.append(
            f"step {name!r} has no event parameter; add one annotated with the Event "
            "type it accepts, e.g. `ev: StartEvent`"
        )
    if hints is not None:
        returns = _read_returns(name, hints, problems)
    return StepSpec(
        name=name,
        fn=config.fn,
        accepts=accepts,
        returns=returns or (),
        accepts_known=accepts_known,
        returns_known=returns is not None,
        arg_order=tuple(params_read.arg_order),
        is_method=config.is_method,
        is_async=inspect.iscoroutinefunction(config.fn),
        state_type=params_read.state_type,
        num_workers=config.num_workers,
        retry_policy=config.retry_policy,
        timeout=config.timeout,
        resources=tuple(params_read.resources),
        keyword_args=tuple(params_read.keyword_args),
        catch=config.catch,
        exact=config.exact,
        skip=config.skip,
    )


@dataclass(slots=True)
class _Params:
    """What the (non-self) parameters of a step say."""

    arg_order: list[str] = field(default_factory=list)
    keyword_args: list[tuple[str, str]] = field(default_factory=list)
    accepts: tuple[type[Event], ...] = ()
    state_type: type[Any] | None = None
    resources: list[ResourceDefinition] = field(default_factory=list)

    def add_arg(self, param: inspect.Parameter, kind: str) -> None:
        """Pass ``param`` the context or the event: positionally when it can be."""
        if self.resources or param.kind is inspect.Parameter.KEYWORD_ONLY:
            self.keyword_args.append((param.name, kind))
        else:
            self.arg_order.append(kind)


def _read_params(  # noqa: PLR0917 - one call site
    name: str,
    params: list[inspect.Parameter],
    hints: dict[str, Any],
    extras: dict[str, Any],
    localns: dict[str, Any],
    problems: list[str],
) -> _Params:
    """Find the context, event and resource parameters."""
    out = _Params()
    for param in params:
        ann = hints.get(param.name)
        resource = _descriptor_of(extras.get(param.name))
        if resource is not None:
            _add_resource(name, param, resource, localns, out, problems)
        elif ann is Context or typing.get_origin(ann) is Context:
            out.add_arg(param, "ctx")
            args = typing.get_args(ann)
            if args and args[0] is not Any:
                out.state_type = args[0]
        elif ann is None:
            problems.append(
                f"step {name!r}: parameter {param.name!r} has no type annotation; "
                "annotate it with the Event type(s) the step accepts, e.g. `ev: StartEvent`"
            )
        elif _is_event_list(ann):
            problems.append(
                f"step {name!r}: parameter {param.name!r} is annotated with "
                f"{_type_name(ann)}, a LlamaIndex fan-in, which stepstream does not support "
                "yet; take one event and join with `ctx.collect_events(ev, [E] * n)`"
            )
        elif not all(isinstance(m, type) and issubclass(m, Event) for m in _union_members(ann)):
            problems.append(
                f"step {name!r}: parameter {param.name!r} is annotated with "
                f"{_type_name(ann)}, which is not an Event type; annotate it with "
                "the Event subclass(es) the step accepts"
            )
        elif out.accepts:
            problems.append(
                f"step {name!r}: more than one event parameter ({param.name!r}); a step "
                "takes one event parameter, annotated with a union for several types"
            )
        else:
            out.accepts = tuple(_union_members(ann))
            out.add_arg(param, "ev")
    return out


def _is_event_list(ann: Any) -> bool:
    """Whether ``ann`` is ``list[E]`` (or ``Annotated[list[E], ...]``) of an Event type."""
    if typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    args = typing.get_args(ann)
    return (
        typing.get_origin(ann) is list
        and len(args) == 1
        and all(isinstance(m, type) and issubclass(m, Event) for m in _union_members(args[0]))
    )


def _add_resource(  # noqa: PLR0917 - one call site
    name: str,
    param: inspect.Parameter,
    found: tuple[Any, ResourceDescriptor],
    localns: dict[str, Any],
    out: _Params,
    problems: list[str],
) -> None:
    if param.kind is inspect.Parameter.POSITIONAL_ONLY:
        problems.append(
            f"step {name!r}: resource parameter {param.name!r} is positional-only, but "
            "resources are passed by keyword; move it after the '/'"
        )
        return
    base, descriptor = found
    descriptor.set_type_annotation(base)
    descriptor.set_localns(localns)
    out.resources.append(
        ResourceDefinition(name=param.name, resource=descriptor, type_annotation=base)
    )


def _read_returns(
    name: str, hints: dict[str, Any], problems: list[str]
) -> tuple[type[Event], ...] | None:
    if "return" not in hints:
        problems.append(
            f"step {name!r} has no return annotation; annotate it with the Event "
            "type(s) it may emit, or None"
        )
        return None
    members = [m for m in _union_members(hints["return"]) if m is not type(None)]
    bad = [m for m in members if not (isinstance(m, type) and issubclass(m, Event))]
    if bad:
        problems.append(
            f"step {name!r}: return annotation {_type_name(hints['return'])} includes "
            f"{', '.join(_type_name(b) for b in bad)}, which is not an Event type; "
            "steps return Event instances or None"
        )
        return None
    return tuple(members)


def _union_members(ann: Any) -> list[Any]:
    if ann is None or ann is type(None):
        return [type(None)]
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(ann):
            out.extend(_union_members(arg))
        return out
    return [ann]


def _type_name(ann: Any) -> str:
    return ann.__name__ if isinstance(ann, type) else repr(ann)
