"""Graph checks over step specs: pure functions that return every problem found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from stepstream._levels import unbound_joins
from stepstream._spec import StepSpec
from stepstream.context.state_store import DictState
from stepstream.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)

__all__ = [
    "GRAPH_CHECKS",
    "NO_VALIDATION",
    "catch_problems",
    "catchers",
    "graph_problems",
    "state_type",
]


#: Names of the checks a workflow may skip (LlamaIndex's ``skip_graph_checks``):
#: ``terminal_event``, events produced but never consumed; ``reachability``, events
#: consumed but never produced; ``dead_end`` is accepted and has no stepstream check.
GRAPH_CHECKS = frozenset({"dead_end", "reachability", "terminal_event"})
#: Skips every check that ``disable_validation=True`` turns off (the flow checks).
NO_VALIDATION = "<disable_validation>"


def graph_problems(specs: Sequence[StepSpec], skip: frozenset[str] = frozenset()) -> list[str]:
    """Return one line per problem in the graph the steps form; empty when valid.

    ``skip`` names checks to leave out (:data:`GRAPH_CHECKS`, or :data:`NO_VALIDATION`
    for all of them); a start event and the state type are always checked, since a run
    cannot begin without them.
    """
    problems: list[str] = []
    accepts_known = all(s.accepts_known for s in specs)
    returns_known = all(s.returns_known for s in specs)
    starts: dict[type[Event], list[str]] = {}
    for spec in specs:
        for t in spec.accepts:
            if issubclass(t, StartEvent):
                starts.setdefault(t, []).append(spec.name)
            if issubclass(t, StopEvent) and NO_VALIDATION not in skip:
                problems.append(
                    f"step {spec.name!r} accepts {t.__name__}, a StopEvent: a StopEvent "
                    "ends the run and is never delivered to a step"
                )
    if not starts and accepts_known:
        problems.append(
            "no step accepts StartEvent; add a step whose event parameter is annotated "
            "with StartEvent (or one StartEvent subclass)"
        )
    elif len(starts) > 1:
        listed = "; ".join(f"{t.__name__} by {', '.join(names)}" for t, names in starts.items())
        problems.append(
            f"more than one StartEvent type is accepted ({listed}); a workflow has one "
            "start event type"
        )
    if returns_known and not any(issubclass(t, StopEvent) for s in specs for t in s.returns):
        problems.append(
            "no step can return a StopEvent; annotate the last step's return type with "
            "StopEvent (or a StopEvent subclass)"
        )
    if NO_VALIDATION in skip:
        skip = GRAPH_CHECKS
    problems.extend(
        _flow_problems(
            specs,
            accepts_known and "terminal_event" not in skip,
            returns_known and "reachability" not in skip,
        )
    )
    problems.extend(_state_problems(specs))
    problems.extend(catch_problems(specs))
    if accepts_known and returns_known:
        problems.extend(unbound_joins(specs, catchers(specs)))
    return problems


def _related(a: type[Event], b: type[Event]) -> bool:
    return issubclass(a, b) or issubclass(b, a)


# Events that come from outside the graph or end it: exempt from the flow checks.
_BOUNDARY = (StartEvent, StopEvent, HumanResponseEvent, InputRequiredEvent, StepFailedEvent)


def _flow_problems(
    specs: Sequence[StepSpec], accepts_known: bool, returns_known: bool
) -> list[str]:
    problems: list[str] = []
    accepted = [t for spec in specs for t in spec.accepts]
    producers: dict[type[Event], list[str]] = {}
    for spec in specs:
        for t in spec.returns:
            if not issubclass(t, StopEvent | InputRequiredEvent):
                producers.setdefault(t, []).append(spec.name)
    for t, names in producers.items():
        if accepts_known and not any(_related(t, a) for a in accepted):
            problems.append(
                f"event type {t.__name__} is produced by {', '.join(map(repr, names))} but "
                f"no step accepts it; add a step that takes {t.__name__}, or remove it "
                "from the return annotation"
            )
    for spec in specs:
        for t in spec.accepts:
            exempt = (
                StartEvent,
                StopEvent,
                HumanResponseEvent,
                InputRequiredEvent,
                StepFailedEvent,
            )
            if issubclass(t, exempt) or not returns_known or "reachability" in spec.skip:
                continue
            if not any(_related(t, p) for p in producers):
                problems.append(
                    f"event type {t.__name__} is accepted by step {spec.name!r} but no "
                    f"step produces it; add {t.__name__} to the return annotation of the "
                    "step that sends it"
                )
    return problems


def state_type(specs: Sequence[StepSpec]) -> type[BaseModel]:
    """The run's state model: the most derived ``Context[T]`` type of the steps.

    Steps without a state type (``Context``, ``Context[Any]``, ``Context[DictState]``)
    do not count; with none declared the state is a :class:`DictState`. Call it on
    steps that passed :func:`graph_problems` (whose state types form one chain).
    """
    models = [t for t in _declared_states(specs) if _is_model(t)]
    return _most_derived(models) or DictState


def _declared_states(specs: Sequence[StepSpec]) -> dict[Any, list[str]]:
    """The state types the steps declare, each with the steps declaring it."""
    states: dict[Any, list[str]] = {}
    for spec in specs:
        t = spec.state_type
        if t is None or t is DictState or isinstance(t, TypeVar):
            continue
        states.setdefault(t, []).append(spec.name)
    return states


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _most_derived(models: Sequence[type[BaseModel]]) -> type[BaseModel] | None:
    """The model that is a subclass of all the others; None when there is none."""
    for candidate in models:
        if all(issubclass(candidate, other) for other in models):
            return candidate
    return None


def _state_problems(specs: Sequence[StepSpec]) -> list[str]:
    problems: list[str] = []
    states = _declared_states(specs)
    for t, names in states.items():
        if not _is_model(t):
            problems.append(
                f"the Context state type {_name(t)} of {_steps(names)} is not a pydantic "
                "model; declare the state as a BaseModel subclass whose fields have "
                "defaults, e.g. `class MyState(BaseModel): count: int = 0`"
            )
    models = {t: names for t, names in states.items() if _is_model(t)}
    if not models:
        return problems
    chosen = _most_derived(list(models))
    if chosen is None:
        listed = "; ".join(f"{_name(t)} in {', '.join(names)}" for t, names in models.items())
        problems.append(
            f"steps disagree on the Context state type ({listed}); the state types must "
            "form one inheritance chain (each a subclass of the next), whose most derived "
            "type is the state of every step: use one model, or derive one from the other"
        )
        return problems
    required = [name for name, field in chosen.model_fields.items() if field.is_required()]
    if required:
        problems.append(
            f"the Context state type {chosen.__name__} cannot be created without "
            f"arguments: field(s) {', '.join(map(repr, required))} have no default; give "
            f"every field a default (each run starts from {chosen.__name__}())"
        )
    return problems


def _name(t: Any) -> str:
    return str(getattr(t, "__name__", repr(t)))


def _steps(names: Sequence[str]) -> str:
    listed = ", ".join(map(repr, names))
    return f"step {listed}" if len(names) == 1 else f"steps {listed}"


def catch_problems(specs: Sequence[StepSpec]) -> list[str]:
    """Problems with the @catch_error handlers: their event and the steps they cover."""
    problems: list[str] = []
    handlers = [s for s in specs if s.catch is not None]
    names = {s.name for s in specs}
    handler_names = {s.name for s in handlers}
    problems.extend(
        f"@catch_error handler {h.name!r} must accept StepFailedEvent as its event "
        "parameter; annotate it `ev: StepFailedEvent`"
        for h in handlers
        if h.accepts_known and h.accepts != (StepFailedEvent,)
    )
    wildcards = [h.name for h in handlers if h.catch is not None and h.catch.for_steps is None]
    if len(wildcards) > 1:
        problems.append(
            f"only one @catch_error handler without for_steps is allowed per workflow, found "
            f"{len(wildcards)}: {', '.join(wildcards)}; name the steps of the others with "
            "for_steps=[...]"
        )
    claimed: dict[str, str] = {}
    for h in handlers:
        for target in (h.catch.for_steps if h.catch is not None else None) or ():
            if target not in names:
                problems.append(
                    f"@catch_error handler {h.name!r} lists unknown step {target!r} in "
                    f"for_steps; the workflow's steps are {', '.join(sorted(names))}"
                )
            elif target in handler_names:
                problems.append(
                    f"@catch_error handler {h.name!r} cannot cover another handler step "
                    f"{target!r}; a handler's own failure ends the run"
                )
            elif target in claimed:
                problems.append(
                    f"step {target!r} is claimed by two @catch_error handlers: "
                    f"{claimed[target]!r} and {h.name!r}; keep it in one for_steps"
                )
            else:
                claimed[target] = h.name
    return problems


def catchers(specs: Sequence[StepSpec]) -> tuple[int | None, ...]:
    """For each step, the index of the @catch_error handler covering it (None: none).

    Handlers naming the step in ``for_steps`` come first; the handler without
    ``for_steps`` covers every other step that is not itself a handler.
    """
    index = {s.name: i for i, s in enumerate(specs)}
    covered: list[int | None] = [None] * len(specs)
    wildcard = None
    for i, s in enumerate(specs):
        if s.catch is None:
            continue
        if s.catch.for_steps is None:
            wildcard = i if wildcard is None else wildcard
            continue
        for target in s.catch.for_steps:
            j = index.get(target)
            if j is not None and covered[j] is None and specs[j].catch is None:
                covered[j] = i
    if wildcard is not None:
        for j, s in enumerate(specs):
            if covered[j] is None and s.catch is None:
                covered[j] = wildcard
    return tuple(covered)
