"""Retry policies for steps: ``@step(retry_policy=retry_policy(retry=..., wait=..., stop=...))``.

A policy is composed of three small callables, each family combinable with operators:

- a **retry condition** (``retry_if_*``, combined with ``&`` and ``|``) decides whether an
  error is worth retrying at all;
- a **wait strategy** (``wait_*``, summed with ``+``) gives the delay before the next
  attempt from the 0-based retry index;
- a **stop condition** (``stop_*``, combined with ``&`` and ``|``) ends the retries, after
  a number of attempts or an amount of time.

For example, retry timeouts and connection errors with exponential backoff, at most five
attempts in all::

    policy = retry_policy(
        retry=retry_if_exception_type((TimeoutError, ConnectionError)),
        wait=wait_exponential(multiplier=1, exp_base=2, max=30),
        stop=stop_after_attempt(5),
    )

Any object with a ``next(elapsed_time, attempts, error, *, seed=None)`` method is a
:class:`RetryPolicy` (at run time ``seed`` may be left out). ``ConstantDelayRetryPolicy``
and ``ExponentialBackoffRetryPolicy`` are kept for existing code; they warn and build the
equivalent composed policy.
"""

from __future__ import annotations

import functools
import math
import random
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol, SupportsFloat, SupportsIndex, TypeAlias, runtime_checkable

from stepstream.errors import WorkflowValidationError

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "RetryCondition",
    "RetryInfo",
    "RetryPolicy",
    "StopCondition",
    "WaitStrategy",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_if_exception",
    "retry_if_exception_cause_type",
    "retry_if_exception_message",
    "retry_if_exception_type",
    "retry_if_not_exception_message",
    "retry_if_not_exception_type",
    "retry_never",
    "retry_policy",
    "retry_unless_exception_type",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "time_unit_type",
    "wait_chain",
    "wait_combine",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
]

time_unit_type: TypeAlias = int | float | timedelta
"""A duration: seconds as a number, or a ``timedelta``."""

_ExceptionTypes: TypeAlias = type[BaseException] | tuple[type[BaseException], ...]


# -- protocols and data ---------------------------------------------------------------------------


@runtime_checkable
class RetryPolicy(Protocol):
    """Decides whether a failed step attempt is retried, and after what delay.

    Build one with :func:`retry_policy`; any object with a compatible ``next`` method
    works too (a ``next`` without the ``seed`` parameter is accepted at run time).
    """

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """Return the delay in seconds before the next attempt, or None to give up.

        Args:
            elapsed_time: Seconds since the first attempt started.
            attempts: Failures so far: 1 after the first failure.
            error: The exception the last attempt raised.
            seed: Seed for the random part of the delay (jitter), for reproducible
                delays; ``None`` uses the global ``random`` generator.

        Returns:
            Seconds to wait before retrying, or ``None`` to let the step fail.
        """
        ...


class RetryCondition(Protocol):
    """Decides whether an exception is worth retrying."""

    def __call__(self, error: BaseException) -> bool:
        """Return True when ``error`` should be retried."""
        ...


class WaitStrategy(Protocol):
    """Computes the delay before the next attempt."""

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the delay in seconds before retry number ``attempts`` (0 for the first)."""
        ...


class StopCondition(Protocol):
    """Decides when to give up retrying."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True to stop after ``attempts`` failures and ``elapsed_time`` seconds.

        ``upcoming_sleep`` is the delay the wait strategy chose for the next attempt.
        """
        ...


@dataclass(frozen=True)
class RetryInfo:
    """Where the running step stands in its retries (returned by ``ctx.retry_info()``).

    On the first attempt ``retry_number`` is 0, ``elapsed_seconds`` 0.0, and the two
    ``last_*`` fields are None; on a retry they describe the latest failure.

    Attributes:
        retry_number: 0 on the first attempt, 1 on the first retry, and so on.
        elapsed_seconds: Seconds since the first attempt started.
        last_exception: The exception the previous attempt raised, or None.
        last_failed_at: When the previous attempt failed (timezone-aware UTC), or None.
    """

    retry_number: int
    elapsed_seconds: float
    last_exception: Exception | None
    last_failed_at: datetime | None


# -- argument checks ------------------------------------------------------------------------------


def _to_float(owner: str, arg: str, value: object, *, seconds: bool) -> float:
    """``value`` as a float (a timedelta as its seconds when ``seconds``), or raise naming it."""
    if seconds and isinstance(value, timedelta):
        return value.total_seconds()
    number = math.nan
    if isinstance(value, str | bytes | SupportsFloat | SupportsIndex):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
    if math.isnan(number):
        what = "a number of seconds or a timedelta" if seconds else "a number"
        msg = f"{owner}({arg}=...) must be {what}, got {value!r}"
        raise WorkflowValidationError(msg)
    return number


def _check_number(owner: str, arg: str, value: object) -> None:
    """Raise unless ``value`` is a number that compares with an int (not NaN)."""
    if isinstance(value, int):
        return
    if isinstance(value, SupportsFloat):
        try:
            if not math.isnan(float(value)):
                return
        except (TypeError, ValueError):
            pass
    msg = f"{owner}({arg}=...) must be a number, got {value!r}"
    raise WorkflowValidationError(msg)


def _check_callable(owner: str, arg: str, value: object, example: str) -> None:
    """Raise unless ``value`` is callable; ``example`` shows a valid argument."""
    if not callable(value):
        msg = f"{owner}({arg}=...) must be callable, like {example}, got {value!r}"
        raise WorkflowValidationError(msg)


def _check_callables(owner: str, values: tuple[object, ...], example: str) -> None:
    """Raise unless every positional argument of ``owner`` is callable."""
    for position, value in enumerate(values, start=1):
        if not callable(value):
            msg = (
                f"{owner}() arguments must be callable, like {example}, "
                f"got {value!r} as argument {position}"
            )
            raise WorkflowValidationError(msg)


def _check_exception_types(owner: str, exception_types: _ExceptionTypes) -> None:
    """Raise unless ``isinstance(error, exception_types)`` can be evaluated."""
    try:
        isinstance(_PROBE, exception_types)
    except TypeError:
        msg = (
            f"{owner}(exception_types=...) must be an exception class or a tuple of "
            f"exception classes, got {exception_types!r}"
        )
        raise WorkflowValidationError(msg) from None


_PROBE = Exception()


# -- shared behaviour -----------------------------------------------------------------------------


class _Component:
    """The repr of a condition or strategy: the call that builds it."""

    _fields: ClassVar[tuple[str, ...]] = ()
    """Attributes shown as keyword arguments."""
    _members: ClassVar[str | None] = None
    """The attribute holding the positional arguments of a combinator, if one."""

    def __repr__(self) -> str:
        if self._members is not None:
            parts = [repr(member) for member in getattr(self, self._members)]
        else:
            parts = [f"{name}={getattr(self, name)!r}" for name in self._fields]
        return f"{type(self).__name__}({', '.join(parts)})"


def _is_callable(value: object) -> bool:
    # A function, so that type checkers do not narrow the operand away.
    return callable(value)


def _scaled_power(multiplier: float, exp_base: float, n: int) -> float:
    """``multiplier * exp_base**n``, saturating to an infinity instead of overflowing."""
    try:
        return multiplier * exp_base**n
    except OverflowError:
        if multiplier == 0:
            return 0.0
        negative = (multiplier < 0) != (exp_base < 0 and n % 2 == 1)
        return -math.inf if negative else math.inf


def _uniform(low: float, high: float, seed: int | None) -> float:
    """A uniform draw from ``random.Random(seed)``, or from the global generator."""
    if seed is None:
        return random.uniform(low, high)  # noqa: S311 - jitter, not cryptography
    return random.Random(seed).uniform(low, high)  # noqa: S311 - same


# -- retry conditions -----------------------------------------------------------------------------

_RETRY_EXAMPLE = "retry_if_exception_type(OSError)"


class _RetryConditionBase(_Component):
    """A retry condition: ``a & b`` retries when both do, ``a | b`` when either does."""

    def __call__(self, error: BaseException) -> bool:
        """Return True when ``error`` should be retried."""
        raise NotImplementedError

    def __and__(self, other: RetryCondition) -> retry_all:
        if not _is_callable(other):
            return NotImplemented
        return retry_all(self, other)

    def __rand__(self, other: RetryCondition) -> retry_all:
        if not _is_callable(other):
            return NotImplemented
        return retry_all(other, self)

    def __or__(self, other: RetryCondition) -> retry_any:
        if not _is_callable(other):
            return NotImplemented
        return retry_any(self, other)

    def __ror__(self, other: RetryCondition) -> retry_any:
        if not _is_callable(other):
            return NotImplemented
        return retry_any(other, self)


class retry_if_exception(_RetryConditionBase):
    """Retry when ``predicate(error)`` is true.

    Args:
        predicate: Called with the exception; a true result retries it.
    """

    _fields = ("predicate",)

    def __init__(self, predicate: Callable[[BaseException], bool]) -> None:
        _check_callable(
            type(self).__name__, "predicate", predicate, "lambda e: isinstance(e, OSError)"
        )
        self.predicate = predicate

    def __call__(self, error: BaseException) -> bool:
        """Return ``predicate(error)``."""
        return self.predicate(error)


def _is_instance(exception_types: _ExceptionTypes, error: BaseException) -> bool:
    return isinstance(error, exception_types)


def _is_not_instance(exception_types: _ExceptionTypes, error: BaseException) -> bool:
    return not isinstance(error, exception_types)


class retry_if_exception_type(retry_if_exception):
    """Retry errors that are instances of ``exception_types``.

    Args:
        exception_types: An exception class or a tuple of them (default: every Exception).
    """

    _fields = ("exception_types",)

    def __init__(
        self, exception_types: type[BaseException] | tuple[type[BaseException], ...] = Exception
    ) -> None:
        _check_exception_types(type(self).__name__, exception_types)
        self.exception_types = exception_types
        super().__init__(functools.partial(_is_instance, exception_types))


class retry_if_not_exception_type(retry_if_exception):
    """Retry errors that are not instances of ``exception_types``.

    Args:
        exception_types: An exception class or a tuple of them (default: Exception).
    """

    _fields = ("exception_types",)

    def __init__(
        self, exception_types: type[BaseException] | tuple[type[BaseException], ...] = Exception
    ) -> None:
        _check_exception_types(type(self).__name__, exception_types)
        self.exception_types = exception_types
        super().__init__(functools.partial(_is_not_instance, exception_types))


class retry_unless_exception_type(retry_if_not_exception_type):
    """Another name for :class:`retry_if_not_exception_type`."""


class retry_if_exception_message(_RetryConditionBase):
    """Retry errors by their message: exactly ``message``, or containing ``match``.

    Pass exactly one of the two.

    Args:
        message: Retry when ``str(error) == message``.
        match: A regular expression; retry when ``re.search`` finds it in ``str(error)``.

    Raises:
        TypeError: Neither or both of ``message`` and ``match`` were given.
    """

    _fields = ("message", "match")

    def __init__(
        self, message: str | None = None, match: str | re.Pattern[str] | None = None
    ) -> None:
        if message is None and match is None:
            msg = "retry_if_exception_message() missing 1 required argument 'message' or 'match'"
            raise TypeError(msg)
        if message is not None and match is not None:
            msg = "retry_if_exception_message() takes either 'message' or 'match', not both"
            raise TypeError(msg)
        self.message = message
        self.match = match
        self._pattern = None if match is None else self._compile(match)

    def _compile(self, match: object) -> re.Pattern[str]:
        if isinstance(match, str):
            return re.compile(match)
        if isinstance(match, re.Pattern) and isinstance(match.pattern, str):
            return match
        msg = (
            f"{type(self).__name__}(match=...) must be a str or a compiled str pattern "
            f"(re.Pattern[str]), got {match!r}"
        )
        raise WorkflowValidationError(msg)

    def __call__(self, error: BaseException) -> bool:
        """Return True when the message of ``error`` equals ``message`` or matches ``match``."""
        text = str(error)
        if self._pattern is not None:
            return self._pattern.search(text) is not None
        return text == self.message


class retry_if_not_exception_message(retry_if_exception_message):
    """Retry errors whose message is not ``message`` / does not contain ``match``."""

    def __call__(self, error: BaseException) -> bool:
        """Return the negation of :class:`retry_if_exception_message`."""
        return not super().__call__(error)


class retry_if_exception_cause_type(_RetryConditionBase):
    """Retry errors caused by an instance of ``exception_types``.

    Follows the ``__cause__`` chain (``raise ... from cause``) only, not ``__context__``,
    and not the error itself.

    Args:
        exception_types: An exception class or a tuple of them (default: Exception).
    """

    _fields = ("exception_types",)

    def __init__(
        self, exception_types: type[BaseException] | tuple[type[BaseException], ...] = Exception
    ) -> None:
        _check_exception_types(type(self).__name__, exception_types)
        self.exception_types = exception_types

    def __call__(self, error: BaseException) -> bool:
        """Return True when a cause in the ``__cause__`` chain of ``error`` matches."""
        seen: set[int] = set()
        cause = error.__cause__
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, self.exception_types):
                return True
            seen.add(id(cause))
            cause = cause.__cause__
        return False


class retry_any(_RetryConditionBase):
    """Retry when any of ``retries`` does (never, when there are none)."""

    _members = "retries"

    def __init__(self, *retries: RetryCondition) -> None:
        _check_callables(type(self).__name__, retries, _RETRY_EXAMPLE)
        self.retries = retries

    def __call__(self, error: BaseException) -> bool:
        """Return True when one of the conditions retries ``error``."""
        return any(retry(error) for retry in self.retries)


class retry_all(_RetryConditionBase):
    """Retry when all of ``retries`` do (always, when there are none)."""

    _members = "retries"

    def __init__(self, *retries: RetryCondition) -> None:
        _check_callables(type(self).__name__, retries, _RETRY_EXAMPLE)
        self.retries = retries

    def __call__(self, error: BaseException) -> bool:
        """Return True when every condition retries ``error``."""
        return all(retry(error) for retry in self.retries)


class retry_always(_RetryConditionBase):
    """Retry every error."""

    def __call__(self, error: BaseException) -> bool:
        """Return True."""
        return True


class retry_never(_RetryConditionBase):
    """Retry no error."""

    def __call__(self, error: BaseException) -> bool:
        """Return False."""
        return False


# -- wait strategies ------------------------------------------------------------------------------

_WAIT_EXAMPLE = "wait_fixed(1)"


class _WaitStrategyBase(_Component):
    """A wait strategy: ``a + b`` waits for the sum, and ``sum([a, b])`` works too."""

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the delay in seconds before retry number ``attempts`` (0 for the first)."""
        raise NotImplementedError

    def __add__(self, other: WaitStrategy) -> wait_combine:
        if not _is_callable(other):
            return NotImplemented
        return wait_combine(self, other)

    def __radd__(self, other: object) -> _WaitStrategyBase:
        # 0 + strategy is the strategy, so that sum() of strategies starts cleanly.
        if isinstance(other, int | float) and other == 0:
            return self
        if not _is_callable(other):
            return NotImplemented
        return wait_combine(other, self)  # type: ignore[arg-type]  # a callable from user code


class wait_fixed(_WaitStrategyBase):
    """Wait the same time before every retry.

    Args:
        wait: Seconds (or a timedelta).
    """

    _fields: ClassVar[tuple[str, ...]] = ("wait",)

    def __init__(self, wait: time_unit_type) -> None:
        self.wait = _to_float(type(self).__name__, "wait", wait, seconds=True)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return ``wait``."""
        return self.wait


class wait_none(wait_fixed):
    """Retry at once: ``wait_fixed(0)``."""

    _fields = ()

    def __init__(self) -> None:
        super().__init__(0)


class wait_exponential(_WaitStrategyBase):
    """Wait ``multiplier * exp_base**n`` seconds before retry ``n``, kept within [min, max].

    The delay is ``max(max(0, min), min(multiplier * exp_base**n, max))``.

    Args:
        multiplier: The delay before the first retry.
        exp_base: The factor between two consecutive delays.
        max: The longest delay, in seconds (or a timedelta).
        min: The shortest delay, in seconds (or a timedelta).
    """

    _fields = ("multiplier", "exp_base", "max", "min")

    def __init__(
        self,
        multiplier: int | float = 1.0,  # noqa: PYI041 - the signature mirrors LlamaIndex
        exp_base: int | float = 2.0,  # noqa: PYI041 - same
        max: time_unit_type = 60.0,
        min: time_unit_type = 0.0,
    ) -> None:
        owner = type(self).__name__
        self.multiplier = _to_float(owner, "multiplier", multiplier, seconds=False)
        self.exp_base = _to_float(owner, "exp_base", exp_base, seconds=False)
        self.max = _to_float(owner, "max", max, seconds=True)
        self.min = _to_float(owner, "min", min, seconds=True)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the delay before retry number ``attempts``."""
        exponential = _scaled_power(self.multiplier, self.exp_base, attempts)
        return max(0.0, self.min, min(exponential, self.max))


class wait_incrementing(_WaitStrategyBase):
    """Wait ``start + increment * n`` seconds before retry ``n``, kept within [0, max].

    Args:
        start: The delay before the first retry.
        increment: What each further retry adds.
        max: The longest delay (default: no limit).
    """

    _fields = ("start", "increment", "max")

    def __init__(
        self,
        start: time_unit_type = 0.0,
        increment: time_unit_type = 100.0,
        max: time_unit_type = math.inf,
    ) -> None:
        owner = type(self).__name__
        self.start = _to_float(owner, "start", start, seconds=True)
        self.increment = _to_float(owner, "increment", increment, seconds=True)
        self.max = _to_float(owner, "max", max, seconds=True)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the delay before retry number ``attempts``."""
        return max(0.0, min(self.start + self.increment * attempts, self.max))


class wait_random(_WaitStrategyBase):
    """Wait a random time, uniformly between ``min`` and ``max`` seconds.

    With a ``seed`` the draw comes from ``random.Random(seed)``, so it is reproducible;
    without, from the global ``random`` generator.
    """

    _fields = ("min", "max")

    def __init__(self, min: time_unit_type = 0.0, max: time_unit_type = 1.0) -> None:
        owner = type(self).__name__
        self.min = _to_float(owner, "min", min, seconds=True)
        self.max = _to_float(owner, "max", max, seconds=True)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return ``uniform(min, max)``."""
        return _uniform(self.min, self.max, seed)


class wait_exponential_jitter(_WaitStrategyBase):
    """Exponential backoff plus a random jitter, capped at ``max``.

    The delay is ``min(base + uniform(0, jitter), max)`` where
    ``base = min(initial * exp_base**n, max)``.

    Args:
        initial: The delay before the first retry, jitter aside.
        exp_base: The factor between two consecutive delays.
        max: The longest delay.
        jitter: The largest random addition.
    """

    _fields = ("initial", "exp_base", "max", "jitter")

    def __init__(
        self, initial: float = 1.0, exp_base: float = 2.0, max: float = 60.0, jitter: float = 1.0
    ) -> None:
        owner = type(self).__name__
        self.initial = _to_float(owner, "initial", initial, seconds=True)
        self.exp_base = _to_float(owner, "exp_base", exp_base, seconds=False)
        self.max = _to_float(owner, "max", max, seconds=True)
        self.jitter = _to_float(owner, "jitter", jitter, seconds=True)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the jittered delay before retry number ``attempts``."""
        base = min(_scaled_power(self.initial, self.exp_base, attempts), self.max)
        return min(base + _uniform(0.0, self.jitter, seed), self.max)


class wait_random_exponential(_WaitStrategyBase):
    """Wait a random time between ``min`` and the exponential delay ("full jitter").

    The delay is ``uniform(min, max(max(0, min), min(multiplier * exp_base**n, max)))``.

    Args:
        multiplier: The upper bound before the first retry.
        exp_base: The factor between two consecutive upper bounds.
        max: The largest upper bound, in seconds (or a timedelta).
        min: The shortest delay, in seconds (or a timedelta).
    """

    _fields = ("multiplier", "exp_base", "max", "min")

    def __init__(
        self,
        multiplier: int | float = 1.0,  # noqa: PYI041 - the signature mirrors LlamaIndex
        exp_base: int | float = 2.0,  # noqa: PYI041 - same
        max: time_unit_type = 60.0,
        min: time_unit_type = 0.0,
    ) -> None:
        owner = type(self).__name__
        self.multiplier = _to_float(owner, "multiplier", multiplier, seconds=False)
        self.exp_base = _to_float(owner, "exp_base", exp_base, seconds=False)
        self.max = _to_float(owner, "max", max, seconds=True)
        self.min = _to_float(owner, "min", min, seconds=True)

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the random delay before retry number ``attempts``."""
        exponential = _scaled_power(self.multiplier, self.exp_base, attempts)
        high = max(0.0, self.min, min(exponential, self.max))
        return _uniform(self.min, high, seed)


def wait_full_jitter(
    multiplier: int | float = 1.0,  # noqa: PYI041 - the signature mirrors LlamaIndex
    exp_base: int | float = 2.0,  # noqa: PYI041 - same
    max: time_unit_type = 60.0,
    min: time_unit_type = 0.0,
) -> wait_random_exponential:
    """Return ``wait_random_exponential`` with the same arguments (its other name)."""
    return wait_random_exponential(multiplier=multiplier, exp_base=exp_base, max=max, min=min)


class wait_chain(_WaitStrategyBase):
    """Use ``strategies[n]`` for retry ``n``, and the last strategy once they run out.

    Each strategy is called with the retry index ``n`` itself (not its position).

    Raises:
        WorkflowValidationError: No strategy was given (a ``ValueError``).
    """

    _members = "strategies"

    def __init__(self, *strategies: WaitStrategy) -> None:
        if not strategies:
            msg = "wait_chain requires at least one strategy"
            raise WorkflowValidationError(msg)
        _check_callables(type(self).__name__, strategies, _WAIT_EXAMPLE)
        self.strategies = strategies

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the delay of the strategy for retry number ``attempts``."""
        index = max(0, min(attempts, len(self.strategies) - 1))
        return self.strategies[index](attempts, seed=seed)


class wait_combine(_WaitStrategyBase):
    """Wait for the sum of ``strategies`` (0 when there are none); also ``a + b``."""

    _members = "strategies"

    def __init__(self, *strategies: WaitStrategy) -> None:
        _check_callables(type(self).__name__, strategies, _WAIT_EXAMPLE)
        self.strategies = strategies

    def __call__(self, attempts: int, *, seed: int | None = None) -> float:
        """Return the sum of the delays, each strategy given the same ``seed``."""
        return sum((strategy(attempts, seed=seed) for strategy in self.strategies), 0.0)


# -- stop conditions ------------------------------------------------------------------------------

_STOP_EXAMPLE = "stop_after_attempt(3)"


class _StopConditionBase(_Component):
    """A stop condition: ``a & b`` stops when both do, ``a | b`` when either does."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True to stop retrying."""
        raise NotImplementedError

    def __and__(self, other: StopCondition) -> stop_all:
        if not _is_callable(other):
            return NotImplemented
        return stop_all(self, other)

    def __rand__(self, other: StopCondition) -> stop_all:
        if not _is_callable(other):
            return NotImplemented
        return stop_all(other, self)

    def __or__(self, other: StopCondition) -> stop_any:
        if not _is_callable(other):
            return NotImplemented
        return stop_any(self, other)

    def __ror__(self, other: StopCondition) -> stop_any:
        if not _is_callable(other):
            return NotImplemented
        return stop_any(other, self)


class stop_after_attempt(_StopConditionBase):
    """Stop once ``max_attempt_number`` attempts have run (the first one included)."""

    _fields = ("max_attempt_number",)

    def __init__(self, max_attempt_number: int) -> None:
        _check_number(type(self).__name__, "max_attempt_number", max_attempt_number)
        self.max_attempt_number = max_attempt_number

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True when ``attempts >= max_attempt_number``."""
        return attempts >= self.max_attempt_number


class stop_after_delay(_StopConditionBase):
    """Stop once ``max_delay`` seconds have passed since the first attempt started."""

    _fields = ("max_delay",)

    def __init__(self, max_delay: time_unit_type) -> None:
        self.max_delay = _to_float(type(self).__name__, "max_delay", max_delay, seconds=True)

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True when ``elapsed_time >= max_delay``."""
        return elapsed_time >= self.max_delay


class stop_before_delay(_StopConditionBase):
    """Stop when the next attempt would start ``max_delay`` seconds or more after the first."""

    _fields = ("max_delay",)

    def __init__(self, max_delay: time_unit_type) -> None:
        self.max_delay = _to_float(type(self).__name__, "max_delay", max_delay, seconds=True)

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True when ``elapsed_time + upcoming_sleep >= max_delay``."""
        return elapsed_time + upcoming_sleep >= self.max_delay


class stop_any(_StopConditionBase):
    """Stop when any of ``stops`` does (never, when there are none)."""

    _members = "stops"

    def __init__(self, *stops: StopCondition) -> None:
        _check_callables(type(self).__name__, stops, _STOP_EXAMPLE)
        self.stops = stops

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True when one of the conditions stops."""
        return any(
            stop(attempts, elapsed_time, upcoming_sleep=upcoming_sleep) for stop in self.stops
        )


class stop_all(_StopConditionBase):
    """Stop when all of ``stops`` do (at once, when there are none)."""

    _members = "stops"

    def __init__(self, *stops: StopCondition) -> None:
        _check_callables(type(self).__name__, stops, _STOP_EXAMPLE)
        self.stops = stops

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return True when every condition stops."""
        return all(
            stop(attempts, elapsed_time, upcoming_sleep=upcoming_sleep) for stop in self.stops
        )


class stop_never(_StopConditionBase):
    """Never stop: retry as long as the retry condition allows."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        """Return False."""
        return False


# -- policies -------------------------------------------------------------------------------------

_DEFAULT_WAIT = wait_fixed(5)
_DEFAULT_STOP = stop_after_attempt(3)


class _ComposableRetryPolicy:
    """The policy :func:`retry_policy` builds: a retry condition, a wait and a stop."""

    def __init__(
        self,
        retry: RetryCondition | None = None,
        wait: WaitStrategy = _DEFAULT_WAIT,
        stop: StopCondition = _DEFAULT_STOP,
    ) -> None:
        if retry is not None:
            _check_callable("retry_policy", "retry", retry, f"{_RETRY_EXAMPLE}, or None")
        _check_callable("retry_policy", "wait", wait, _WAIT_EXAMPLE)
        _check_callable("retry_policy", "stop", stop, _STOP_EXAMPLE)
        self.retry = retry
        self.wait = wait
        self.stop = stop

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """Return the delay before the next attempt, or None to give up.

        None when ``retry`` rejects the error; otherwise the delay ``wait`` gives for
        retry index ``attempts - 1``, unless ``stop`` says to stop with that delay ahead.
        """
        if self.retry is not None and not self.retry(error):
            return None
        delay = self.wait(max(attempts - 1, 0), seed=seed)
        if self.stop(attempts, elapsed_time, upcoming_sleep=delay):
            return None
        return delay

    def __repr__(self) -> str:
        return f"retry_policy(retry={self.retry!r}, wait={self.wait!r}, stop={self.stop!r})"


def retry_policy(
    retry: RetryCondition | None = None,
    wait: WaitStrategy = _DEFAULT_WAIT,
    stop: StopCondition = _DEFAULT_STOP,
) -> RetryPolicy:
    """Build a retry policy from a retry condition, a wait strategy and a stop condition.

    After a failure the policy gives up when ``retry`` rejects the error, computes the
    delay with ``wait`` (retry index 0 for the first retry), and gives up when ``stop``
    says so with that delay ahead; otherwise the step is retried after the delay. With
    no arguments: every exception, 5 seconds apart, 3 attempts in all.

    Example::

        retry_policy(
            retry=retry_if_exception_type(ConnectionError),
            wait=wait_exponential(multiplier=0.5, max=10) + wait_random(0, 0.5),
            stop=stop_after_attempt(5) | stop_after_delay(60),
        )

    Args:
        retry: Decides whether an error is retried; ``None`` retries every exception.
        wait: The delay before each retry (default ``wait_fixed(5)``).
        stop: When to give up (default ``stop_after_attempt(3)``: 3 attempts in all).

    Returns:
        The policy, for ``@step(retry_policy=...)``.

    Raises:
        WorkflowValidationError: ``retry``, ``wait`` or ``stop`` is not callable.
    """
    return _ComposableRetryPolicy(retry=retry, wait=wait, stop=stop)


_CONSTANT_DEPRECATED = (
    "ConstantDelayRetryPolicy is deprecated, use "
    "retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(n)) instead"
)
_EXPONENTIAL_DEPRECATED = (
    "ExponentialBackoffRetryPolicy is deprecated, use "
    "retry_policy(wait=wait_exponential(...), stop=stop_after_attempt(n)) instead"
)


def ConstantDelayRetryPolicy(  # noqa: N802 - the name mirrors LlamaIndex, where it was a class
    maximum_attempts: int = 3, delay: float = 5
) -> RetryPolicy:
    """Retry after a constant ``delay`` until ``maximum_attempts`` attempts have run.

    Deprecated (warns with a ``DeprecationWarning``): use
    ``retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(maximum_attempts))``,
    which this returns.

    Args:
        maximum_attempts: Attempts in all, the first included.
        delay: Seconds between two attempts.

    Returns:
        The equivalent composed policy.
    """
    warnings.warn(_CONSTANT_DEPRECATED, DeprecationWarning, stacklevel=2)
    owner = "ConstantDelayRetryPolicy"
    _check_number(owner, "maximum_attempts", maximum_attempts)
    seconds = _to_float(owner, "delay", delay, seconds=True)
    return _ComposableRetryPolicy(
        wait=wait_fixed(seconds), stop=stop_after_attempt(maximum_attempts)
    )


def ExponentialBackoffRetryPolicy(  # noqa: N802 - the name mirrors LlamaIndex
    maximum_attempts: int = 5,
    initial_delay: float = 1.0,
    multiplier: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
) -> RetryPolicy:
    """Retry with exponentially growing delays, capped at ``max_delay``.

    Deprecated (warns with a ``DeprecationWarning``): use
    ``retry_policy(wait=wait_exponential(...), stop=stop_after_attempt(n))``, or
    ``wait_random_exponential`` / ``wait_exponential_jitter`` for jitter.

    The delay before retry ``n`` (0 for the first) is
    ``min(initial_delay * multiplier**n, max_delay)``; with ``jitter`` it is a uniform
    draw between 0 and that ("full jitter").

    Args:
        maximum_attempts: Attempts in all, the first included.
        initial_delay: The delay before the first retry.
        multiplier: The factor between two consecutive delays.
        max_delay: The longest delay.
        jitter: Randomise each delay between 0 and its exponential value.

    Returns:
        The equivalent composed policy.
    """
    warnings.warn(_EXPONENTIAL_DEPRECATED, DeprecationWarning, stacklevel=2)
    owner = "ExponentialBackoffRetryPolicy"
    _check_number(owner, "maximum_attempts", maximum_attempts)
    initial = _to_float(owner, "initial_delay", initial_delay, seconds=True)
    factor = _to_float(owner, "multiplier", multiplier, seconds=False)
    cap = _to_float(owner, "max_delay", max_delay, seconds=True)
    wait: WaitStrategy
    if jitter:
        wait = wait_random_exponential(multiplier=initial, exp_base=factor, max=cap)
    else:
        wait = wait_exponential(multiplier=initial, exp_base=factor, max=cap)
    return _ComposableRetryPolicy(wait=wait, stop=stop_after_attempt(maximum_attempts))
