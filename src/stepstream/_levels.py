"""Which fan-in steps join which fan-out: static, read from the step signatures.

A step returning ``list[E]`` opens a *batch* each time it returns a list. The events
of the batch, and everything steps make of them one event at a time, belong to the
batch's *level*. A ``list[E]`` step accepting a type of that level is *bound* to the
producer: it fires once per batch. A fan-out inside the level opens a level of its
own; what comes back from it is what the joins bound to it return. The same walk
serves validation (a join nothing feeds) and the runtime (whom a closing batch
releases), so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from stepstream._spec import StepSpec
from stepstream.events import Event

__all__ = ["bindings", "unbound_joins"]


def bindings(
    specs: Sequence[StepSpec], catcher: Sequence[int | None]
) -> tuple[tuple[int, ...], ...]:
    """For each step, the indices of the joins bound to it (empty unless it fans out)."""
    joins = [i for i, s in enumerate(specs) if s.fan_in is not None]
    walk = _Walk(specs, catcher, joins)
    out: list[tuple[int, ...]] = []
    for i, spec in enumerate(specs):
        if not spec.fan_out:
            out.append(())
            continue
        level = walk.level(spec.fan_out, frozenset({i}))
        out.append(tuple(j for j in joins if _takes_any(specs[j], level)))
    return tuple(out)


def unbound_joins(specs: Sequence[StepSpec], catcher: Sequence[int | None]) -> list[str]:
    """One problem per ``list[E]`` step that no fan-out's events can reach."""
    bound = {j for targets in bindings(specs, catcher) for j in targets}
    problems = []
    for j, spec in enumerate(specs):
        if spec.fan_in is None or j in bound:
            continue
        listed = " | ".join(t.__name__ for t in spec.accepts)
        problems.append(
            f"step {spec.name!r}: parameter {spec.fan_in.param!r} takes list[{listed}], a "
            f"fan-in, but no step returns a list (a fan-out) whose events lead to {listed}; "
            "return `list[...]` from the step that starts the batch, or take one event "
            "and join with ctx.collect_events(ev, [E] * n)"
        )
    return problems


def _takes_any(spec: StepSpec, types: Iterable[type[Event]]) -> bool:
    return any(spec.accepts_type(t) for t in types)


class _Walk:
    """The level walk over one workflow's steps."""

    def __init__(
        self, specs: Sequence[StepSpec], catcher: Sequence[int | None], joins: list[int]
    ) -> None:
        self.specs = specs
        self.catcher = catcher
        self.joins = joins

    def level(self, seeds: Iterable[type[Event]], guard: frozenset[int]) -> set[type[Event]]:
        """The event types reachable from ``seeds`` without leaving their level.

        ``guard`` holds the fan-out steps on the current path, so that a fan-out
        feeding itself ends the walk.
        """
        seen: set[type[Event]] = set()
        frontier = list(seeds)
        while frontier:
            t = frontier.pop()
            if t in seen:
                continue
            seen.add(t)
            for i, spec in enumerate(self.specs):
                if spec.fan_in is None and spec.accepts_type(t):
                    frontier.extend(self._emitted(i, guard))
        return seen

    def _emitted(self, i: int, guard: frozenset[int]) -> list[type[Event]]:
        """What step ``i`` (and its @catch_error handler) emit at the level it runs in."""
        out: list[type[Event]] = []
        steps = [i] if self.catcher[i] is None else [i, self.catcher[i]]
        for k in steps:
            if k is None:
                continue
            spec = self.specs[k]
            if not spec.fan_out:
                out.extend(spec.returns)
                continue
            out.extend(spec.single)
            if k not in guard:
                out.extend(self._collapsed(k, guard | {k}))
        return out

    def _collapsed(self, producer: int, guard: frozenset[int]) -> list[type[Event]]:
        """What a fan-out brings back to its caller's level: its joins' returns."""
        child = self.level(self.specs[producer].fan_out, guard)
        out: list[type[Event]] = []
        for j in self.joins:
            join = self.specs[j]
            if not _takes_any(join, child):
                continue
            out.extend(join.single if join.fan_out else join.returns)
            if join.fan_out and j not in guard:
                out.extend(self._collapsed(j, guard | {j}))
        return out
