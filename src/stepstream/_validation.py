"""Graph checks over step specs: pure functions that return every problem found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepstream._spec import StepSpec
from stepstream.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
)

__all__ = ["GRAPH_CHECKS", "NO_VALIDATION", "graph_problems"]


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


def _state_problems(specs: Sequence[StepSpec]) -> list[str]:
    states: dict[Any, list[str]] = {}
    for spec in specs:
        if spec.state_type is not None:
            states.setdefault(spec.state_type, []).append(spec.name)
    if len(states) <= 1:
        return []
    listed = "; ".join(
        f"{getattr(t, '__name__', repr(t))} in {', '.join(names)}" for t, names in states.items()
    )
    return [f"steps disagree on the Context state type ({listed}); use one state model"]
