"""Step specs: what ``@step`` records (:class:`StepConfig`) and what a signature says.

Signatures are read into a frozen :class:`StepSpec` when the workflow class is first
instantiated, so that string annotations (and ``from __future__ import annotations``)
can refer to event classes defined after the workflow, and every problem is reported
together.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stepstream.collect import All, Cardinality, Collect, Take
from stepstream.context import Context
from stepstream.events import Event
from stepstream.resource import ResourceDefinition, ResourceDescriptor, _descriptor_of
from stepstream.retry_policy import RetryPolicy

__all__ = ["STEP_ATTR", "Catch", "FanIn", "StepConfig", "StepSpec", "read_spec"]

STEP_ATTR = "__stepstream_step__"


@dataclass(frozen=True, slots=True)
class Catch:
    """What ``@catch_error`` recorded: the steps covered (None: every other step)."""

    for_steps: tuple[str, ...] | None
    max_recoveries: int


@dataclass(frozen=True, slots=True)
class FanIn:
    """A ``list[E]`` step parameter: a join fired once per batch of a fan-out."""

    param: str
    # Take(n): release on the n-th arrival with the first n; None: the whole batch.
    take: int | None = None


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
    # The element types of a ``-> list[E]`` return (a fan-out step); ``returns`` holds
    # them too, with the types the step may return bare (``single``).
    fan_out: tuple[type[Event], ...] = ()
    single: tuple[type[Event], ...] = ()
    # A ``list[E]`` parameter: the step is a join of fan-out batches.
    fan_in: FanIn | None = None
    # Several event parameters, one type each (in parameter order): the step fires
    # once one event of each has arrived; ``arg_order`` names them "ev0", "ev1", ...
    slots: tuple[type[Event], ...] = ()

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
    returned = _Returns()
    if inspect.isasyncgenfunction(config.fn):
        problems.append(_async_fan_out(name))
    elif hints is not None:
        returned = _read_returns(name, hints, problems)
        returns = returned.all
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
        fan_out=returned.listed,
        single=returned.single,
        fan_in=params_read.fan_in,
        slots=params_read.slots,
    )


@dataclass(slots=True)
class _Params:
    """What the (non-self) parameters of a step say."""

    arg_order: list[str] = field(default_factory=list)
    keyword_args: list[tuple[str, str]] = field(default_factory=list)
    accepts: tuple[type[Event], ...] = ()
    state_type: type[Any] | None = None
    resources: list[ResourceDefinition] = field(default_factory=list)
    fan_in: FanIn | None = None
    slots: tuple[type[Event], ...] = ()
    # The event parameters: (name, annotation members, is a list[E]).
    events: list[tuple[inspect.Parameter, tuple[type[Event], ...], bool]] = field(
        default_factory=list
    )

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
        else:
            _add_event_param(name, param, ann, extras.get(param.name), out, problems)
    _settle_events(name, out, problems)
    return out


def _add_event_param(  # noqa: PLR0917 - one call site
    name: str,
    param: inspect.Parameter,
    ann: Any,
    extra: Any,
    out: _Params,
    problems: list[str],
) -> None:
    """Record an event parameter (``E``, ``A | B`` or ``list[E]``) in ``out``."""
    element = _event_list(ann)
    marker = _collect_marker(name, param.name, extra, problems)
    if element is None and not _all_events(_union_members(ann)):
        problems.append(
            f"step {name!r}: parameter {param.name!r} is annotated with "
            f"{_type_name(ann)}, which is not an Event type; annotate it with "
            "the Event subclass(es) the step accepts"
        )
        return
    if element is None and marker is not None:
        problems.append(
            f"step {name!r}: parameter {param.name!r} is marked Collect(...), which "
            "applies only to a list[E] fan-in parameter; annotate it "
            f"`Annotated[list[{_type_name(ann)}], Collect(...)]` or drop the marker"
        )
    if element is not None and marker is not None and out.fan_in is None:
        card = marker.cardinality
        out.fan_in = FanIn(param.name, card.n if isinstance(card, Take) else None)
    members = element if element is not None else tuple(_union_members(ann))
    out.events.append((param, members, element is not None))
    out.add_arg(param, f"ev{len(out.events) - 1}")


def _settle_events(name: str, out: _Params, problems: list[str]) -> None:
    """Decide what the event parameters make of the step: one event, a join, or slots."""
    events = out.events
    if not events:
        return
    lists = [param.name for param, _, is_list in events if is_list]
    if len(events) == 1:
        param, members, is_list = events[0]
        out.accepts = members
        if is_list and out.fan_in is None:
            out.fan_in = FanIn(param.name)
        _rename_arg(out, "ev0", "ev")
        return
    if lists:
        problems.append(
            f"step {name!r}: parameter {lists[0]!r} is a list[E] fan-in, which must be the "
            "step's only event parameter; join the other events in a step of their own"
        )
        return
    for param, members, _ in events:
        if len(members) > 1:
            problems.append(
                f"step {name!r}: parameter {param.name!r} is annotated with "
                f"{' | '.join(_type_name(m) for m in members)}, but a step with several "
                "event parameters fires once one event of each has arrived, so each "
                "takes a single event type; split the union into parameters of their "
                "own, or take one parameter annotated with the union"
            )
    out.slots = tuple(members[0] for _, members, _ in events)
    out.accepts = tuple(dict.fromkeys(out.slots))


def _rename_arg(out: _Params, old: str, new: str) -> None:
    out.arg_order = [new if a == old else a for a in out.arg_order]
    out.keyword_args = [(n, new if a == old else a) for n, a in out.keyword_args]


def _event_list(ann: Any) -> tuple[type[Event], ...] | None:
    """The element types of ``list[E]`` (or ``list[A | B]``, ``list[E] | None``), else None."""
    members = [m for m in _union_members(ann) if m is not type(None)]
    if len(members) != 1 or typing.get_origin(members[0]) is not list:
        return None
    args = typing.get_args(members[0])
    if len(args) != 1:
        return None
    elements = _union_members(args[0])
    return tuple(elements) if _all_events(elements) else None


def _all_events(members: list[Any]) -> bool:
    return all(isinstance(m, type) and issubclass(m, Event) for m in members)


def _collect_marker(name: str, param: str, extra: Any, problems: list[str]) -> Collect | None:
    """The ``Collect(...)`` in an ``Annotated`` parameter's metadata, checked."""
    if typing.get_origin(extra) is not typing.Annotated:
        return None
    for meta in typing.get_args(extra)[1:]:
        if isinstance(meta, Cardinality):
            problems.append(
                f"step {name!r}: parameter {param!r} is marked {meta!r} without Collect; "
                f"wrap it: `Annotated[list[E], Collect({meta!r})]`"
            )
        elif isinstance(meta, Collect):
            if not isinstance(meta.cardinality, All | Take):
                problems.append(
                    f"step {name!r}: parameter {param!r} is marked Collect"
                    f"({meta.cardinality!r}); Collect takes All() or Take(n)"
                )
                return None
            return meta
    return None


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


@dataclass(slots=True)
class _Returns:
    """What a return annotation says: every type (None: unreadable), listed and bare ones."""

    all: tuple[type[Event], ...] | None = None
    listed: tuple[type[Event], ...] = ()
    single: tuple[type[Event], ...] = ()


_ASYNC_ITERATORS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


def _read_returns(name: str, hints: dict[str, Any], problems: list[str]) -> _Returns:
    if "return" not in hints:
        problems.append(
            f"step {name!r} has no return annotation; annotate it with the Event "
            "type(s) it may emit, or None"
        )
        return _Returns()
    ann = hints["return"]
    listed: list[type[Event]] = []
    single: list[Any] = []
    for member in _union_members(ann):
        elements = _event_list(member)
        if elements is not None:
            listed.extend(elements)
        elif typing.get_origin(member) in _ASYNC_ITERATORS:
            problems.append(_async_fan_out(name))
            return _Returns()
        elif member is not type(None):
            single.append(member)
    bad = [m for m in single if not (isinstance(m, type) and issubclass(m, Event))]
    if bad:
        problems.append(
            f"step {name!r}: return annotation {_type_name(ann)} includes "
            f"{', '.join(_type_name(b) for b in bad)}, which is not an Event type; "
            "steps return Event instances, a list of them (a fan-out), or None"
        )
        return _Returns()
    return _Returns(
        all=tuple(dict.fromkeys((*single, *listed))),
        listed=tuple(dict.fromkeys(listed)),
        single=tuple(single),
    )


def _async_fan_out(name: str) -> str:
    return (
        f"step {name!r} is an async generator: a fan-out returns its events as one "
        "list (annotate `-> list[E]` and `return [...]`); to emit events while it "
        "runs, use ctx.send_event"
    )


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
