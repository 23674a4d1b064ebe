"""Graph checks over step specs: pure functions that return every problem found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from stepstream._spec import StepSpec
from stepstream.context.state_store import DictState
from stepstream.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
)

__all__ = ["graph_problems", "state_type"]


def graph_problems(specs: Sequence[StepSpec]) -> list[str]:
    """Return one line per problem in the graph the steps form; empty when valid."""
    problems: list[str] = []
    accepts_known = all(s.accepts_known for s in specs)
    returns_known = all(s.returns_known for s in specs)
    starts: dict[type[Event], list[str]] = {}
    for spec in specs:
        for t in spec.accepts:
            if issubclass(t, StartEvent):
                starts.setdefault(t, []).append(spec.name)
            if issubclass(t, StopEvent):
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
    problems.extend(_flow_problems(specs, accepts_known, returns_known))
    problems.extend(_state_problems(specs))
    return problems


def _related(a: type[Event], b: type[Event]) -> bool:
    return issubclass(a, b) or issubclass(b, a)


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
            exempt = (StartEvent, StopEvent, HumanResponseEvent, InputRequiredEvent)
            if issubclass(t, exempt) or not returns_known:
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
