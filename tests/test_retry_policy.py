"""stepstream.retry_policy: the composable retry API of LlamaIndex Workflows, name for name.

Expected values follow llama-index-workflows 2.26.x (``workflows.retry_policy``): the
delays for given attempts, the seeded jitter (``random.Random(seed).uniform``), the stop
conditions, the combinators, the deprecation warnings and the errors for bad arguments.
"""

import dataclasses
import inspect
import math
import random
import re
import warnings
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

import stepstream
from _helpers import defined_here
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import retry_policy as module
from stepstream import step
from stepstream.retry_policy import ConstantDelayRetryPolicy
from stepstream.retry_policy import ExponentialBackoffRetryPolicy
from stepstream.retry_policy import RetryCondition
from stepstream.retry_policy import RetryInfo
from stepstream.retry_policy import RetryPolicy
from stepstream.retry_policy import StopCondition
from stepstream.retry_policy import WaitStrategy
from stepstream.retry_policy import retry_all
from stepstream.retry_policy import retry_always
from stepstream.retry_policy import retry_any
from stepstream.retry_policy import retry_if_exception
from stepstream.retry_policy import retry_if_exception_cause_type
from stepstream.retry_policy import retry_if_exception_message
from stepstream.retry_policy import retry_if_exception_type
from stepstream.retry_policy import retry_if_not_exception_message
from stepstream.retry_policy import retry_if_not_exception_type
from stepstream.retry_policy import retry_never
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import retry_unless_exception_type
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import stop_after_delay
from stepstream.retry_policy import stop_all
from stepstream.retry_policy import stop_any
from stepstream.retry_policy import stop_before_delay
from stepstream.retry_policy import stop_never
from stepstream.retry_policy import time_unit_type
from stepstream.retry_policy import wait_chain
from stepstream.retry_policy import wait_combine
from stepstream.retry_policy import wait_exponential
from stepstream.retry_policy import wait_exponential_jitter
from stepstream.retry_policy import wait_fixed
from stepstream.retry_policy import wait_full_jitter
from stepstream.retry_policy import wait_incrementing
from stepstream.retry_policy import wait_none
from stepstream.retry_policy import wait_random
from stepstream.retry_policy import wait_random_exponential

PUBLIC_NAMES = {
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
}

CONSTANT_WARNING = (
    "ConstantDelayRetryPolicy is deprecated, use "
    "retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(n)) instead"
)
EXPONENTIAL_WARNING = (
    "ExponentialBackoffRetryPolicy is deprecated, use "
    "retry_policy(wait=wait_exponential(...), stop=stop_after_attempt(n)) instead"
)


def reference(seed: int, low: float, high: float) -> float:
    """The draw LlamaIndex makes for a seeded jitter: ``random.Random(seed).uniform``."""
    return random.Random(seed).uniform(low, high)  # noqa: S311 - jitter, not cryptography


def caused(error: BaseException, cause: BaseException) -> BaseException:
    """``error`` raised ``from cause``."""
    error.__cause__ = cause
    return error


def with_context(error: BaseException, context: BaseException) -> BaseException:
    """``error`` raised while handling ``context`` (implicit chaining, no ``from``)."""
    error.__context__ = context
    return error


def validation_message(action: Callable[[], object]) -> str:
    """The message of the WorkflowValidationError that ``action`` raises."""
    with pytest.raises(WorkflowValidationError) as info:
        action()
    return str(info.value)


def deprecated(action: Callable[[], RetryPolicy]) -> RetryPolicy:
    """Call a deprecated constructor, which must warn with a DeprecationWarning."""
    with pytest.deprecated_call():
        return action()


# -- the module's surface -------------------------------------------------------------------------


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ holds exactly the public names of LlamaIndex's workflows.retry_policy."""
    assert set(module.__all__) == PUBLIC_NAMES
    assert len(module.__all__) == len(PUBLIC_NAMES)


def test_every_name_in_all_is_defined_here() -> None:
    """Every name in __all__ is bound in the module, and defined by it (not re-exported)."""
    for name in module.__all__:
        value = getattr(module, name)
        if name != "time_unit_type":
            assert value.__module__ == module.__name__, name


def test_every_public_class_and_function_is_in_all() -> None:
    """No class or function the module defines is public without being in __all__."""
    assert defined_here(module) - set(module.__all__) == set()


def test_top_level_package_does_not_add_the_composable_names() -> None:
    """As LlamaIndex's `workflows` package, `stepstream` does not re-export the new names."""
    for name in PUBLIC_NAMES - {"RetryPolicy", "ConstantDelayRetryPolicy"}:
        assert name not in stepstream.__all__, name


def test_time_unit_type_is_a_number_or_a_timedelta() -> None:
    """time_unit_type is the union int | float | timedelta."""
    assert time_unit_type == int | float | timedelta


def test_constructors_have_the_llamaindex_signatures() -> None:
    """The builders take the parameters, in order and with the defaults, of LlamaIndex."""

    def params(fn: Callable[..., Any]) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    empty = inspect.Parameter.empty
    assert params(ConstantDelayRetryPolicy) == [("maximum_attempts", 3), ("delay", 5)]
    assert params(ExponentialBackoffRetryPolicy) == [
        ("maximum_attempts", 5),
        ("initial_delay", 1.0),
        ("multiplier", 2.0),
        ("max_delay", 60.0),
        ("jitter", True),
    ]
    assert [name for name, _ in params(retry_policy)] == ["retry", "wait", "stop"]
    assert params(wait_exponential) == [
        ("multiplier", 1.0),
        ("exp_base", 2.0),
        ("max", 60.0),
        ("min", 0.0),
    ]
    assert params(wait_random_exponential) == params(wait_exponential)
    assert params(wait_full_jitter) == params(wait_exponential)
    assert params(wait_incrementing) == [("start", 0.0), ("increment", 100.0), ("max", math.inf)]
    assert params(wait_random) == [("min", 0.0), ("max", 1.0)]
    assert params(wait_exponential_jitter) == [
        ("initial", 1.0),
        ("exp_base", 2.0),
        ("max", 60.0),
        ("jitter", 1.0),
    ]
    assert params(wait_fixed) == [("wait", empty)]
    assert params(stop_after_attempt) == [("max_attempt_number", empty)]
    assert params(stop_after_delay) == [("max_delay", empty)]
    assert params(stop_before_delay) == [("max_delay", empty)]
    assert params(retry_if_exception) == [("predicate", empty)]
    assert params(retry_if_exception_type) == [("exception_types", Exception)]
    assert params(retry_if_exception_message) == [("message", None), ("match", None)]
    assert params(retry_if_not_exception_message) == [("message", None), ("match", None)]


def test_retry_policy_defaults_are_a_five_second_wait_and_three_attempts() -> None:
    """retry_policy() defaults to retry=None, wait_fixed(5) and stop_after_attempt(3)."""
    parameters = inspect.signature(retry_policy).parameters
    assert parameters["retry"].default is None
    wait = parameters["wait"].default
    stop = parameters["stop"].default
    assert isinstance(wait, wait_fixed)
    assert wait.wait == 5.0
    assert isinstance(stop, stop_after_attempt)
    assert stop.max_attempt_number == 3


def test_protocol_methods_have_the_llamaindex_signatures() -> None:
    """RetryPolicy.next takes a keyword-only seed; the part protocols are called as documented."""
    assert str(inspect.signature(RetryPolicy.next)) == (
        "(self, elapsed_time: 'float', attempts: 'int', error: 'Exception', *, "
        "seed: 'int | None' = None) -> 'float | None'"
    )
    assert str(inspect.signature(RetryCondition.__call__)) == (
        "(self, error: 'BaseException') -> 'bool'"
    )
    assert str(inspect.signature(WaitStrategy.__call__)) == (
        "(self, attempts: 'int', *, seed: 'int | None' = None) -> 'float'"
    )
    assert str(inspect.signature(StopCondition.__call__)) == (
        "(self, attempts: 'int', elapsed_time: 'float', *, upcoming_sleep: 'float' = 0.0) -> 'bool'"
    )


def test_retry_policy_is_runtime_checkable_and_the_part_protocols_are_not() -> None:
    """isinstance() works with RetryPolicy only, as in LlamaIndex."""
    assert isinstance(retry_policy(), RetryPolicy)
    assert not isinstance(object(), RetryPolicy)
    for protocol in (RetryCondition, WaitStrategy, StopCondition):
        with pytest.raises(TypeError):
            isinstance(wait_none(), protocol)


def test_a_policy_without_a_seed_parameter_is_still_a_retry_policy() -> None:
    """A user policy whose next() takes no seed satisfies RetryPolicy at run time."""

    class Seedless:
        def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
            return None

    assert isinstance(Seedless(), RetryPolicy)


# -- RetryInfo ------------------------------------------------------------------------------------


def test_retry_info_is_a_frozen_dataclass_of_four_fields() -> None:
    """RetryInfo holds retry_number, elapsed_seconds, last_exception and last_failed_at."""
    fields = [(f.name, f.type) for f in dataclasses.fields(RetryInfo)]
    assert fields == [
        ("retry_number", "int"),
        ("elapsed_seconds", "float"),
        ("last_exception", "Exception | None"),
        ("last_failed_at", "datetime | None"),
    ]
    first = RetryInfo(0, 0.0, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.retry_number = 1  # type: ignore[misc]


def test_retry_info_compares_and_hashes_by_value() -> None:
    """Two RetryInfo with the same fields are equal and hash alike; a field is required."""
    error = ConnectionError("down")
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    info = RetryInfo(retry_number=2, elapsed_seconds=1.5, last_exception=error, last_failed_at=at)
    assert info == RetryInfo(2, 1.5, error, at)
    assert hash(info) == hash(RetryInfo(2, 1.5, error, at))
    assert repr(RetryInfo(0, 0.0, None, None)) == (
        "RetryInfo(retry_number=0, elapsed_seconds=0.0, last_exception=None, last_failed_at=None)"
    )
    with pytest.raises(TypeError):
        RetryInfo()  # type: ignore[call-arg]


# -- retry conditions -----------------------------------------------------------------------------


def test_retry_if_exception_returns_the_predicate_result() -> None:
    """retry_if_exception retries when its predicate returns true for the error."""
    condition = retry_if_exception(lambda e: isinstance(e, KeyError))
    assert condition(KeyError("k")) is True
    assert condition(ValueError("v")) is False


def test_retry_if_exception_type_matches_instances() -> None:
    """retry_if_exception_type is true for instances (subclasses included) of the types."""
    assert retry_if_exception_type(LookupError)(KeyError()) is True
    assert retry_if_exception_type(ValueError)(KeyError()) is False
    assert retry_if_exception_type((ValueError, KeyError))(KeyError()) is True
    assert retry_if_exception_type(ValueError | KeyError)(KeyError()) is True  # type: ignore[arg-type]
    assert retry_if_exception_type(())(ValueError()) is False


def test_retry_if_exception_type_defaults_to_every_exception() -> None:
    """With no argument every Exception is retried, a BaseException like KeyboardInterrupt not."""
    assert retry_if_exception_type()(ValueError()) is True
    assert retry_if_exception_type()(KeyboardInterrupt()) is False


def test_retry_if_not_exception_type_is_the_negation() -> None:
    """retry_if_not_exception_type and its alias retry_unless_exception_type negate the test."""
    for cls in (retry_if_not_exception_type, retry_unless_exception_type):
        assert cls(ValueError)(ValueError()) is False
        assert cls(ValueError)(KeyError()) is True
        assert cls()(KeyboardInterrupt()) is True
    assert issubclass(retry_unless_exception_type, retry_if_not_exception_type)
    assert issubclass(retry_if_exception_type, retry_if_exception)
    assert issubclass(retry_if_not_exception_type, retry_if_exception)


def test_exception_type_conditions_expose_their_types() -> None:
    """The type conditions keep their argument as the exception_types attribute."""
    assert retry_if_exception_type(LookupError).exception_types is LookupError
    assert retry_unless_exception_type(KeyError).exception_types is KeyError
    assert retry_if_exception_cause_type(OSError).exception_types is OSError


def test_retry_if_exception_message_compares_the_whole_message() -> None:
    """message= retries when str(error) equals it exactly, the empty message included."""
    assert retry_if_exception_message("boom")(ValueError("boom")) is True
    assert retry_if_exception_message("boo")(ValueError("boom")) is False
    assert retry_if_exception_message("")(ValueError()) is True


def test_retry_if_exception_message_searches_the_pattern() -> None:
    """match= retries when re.search finds the pattern (a str or a compiled one) in the message."""
    assert retry_if_exception_message(match="o+m")(ValueError("a boom")) is True
    assert retry_if_exception_message(match="^boom")(ValueError("a boom")) is False
    assert retry_if_exception_message(match=re.compile("BOOM", re.IGNORECASE))(ValueError("a boom"))
    assert retry_if_exception_message(match="")(ValueError("anything")) is True


def test_retry_if_not_exception_message_is_the_negation() -> None:
    """retry_if_not_exception_message retries exactly the errors the positive form does not."""
    assert retry_if_not_exception_message("boom")(ValueError("boom")) is False
    assert retry_if_not_exception_message("boom")(ValueError("bam")) is True
    assert retry_if_not_exception_message(match="o")(ValueError("boom")) is False
    assert retry_if_not_exception_message(match="x")(ValueError("boom")) is True
    assert issubclass(retry_if_not_exception_message, retry_if_exception_message)


@pytest.mark.parametrize("cls", [retry_if_exception_message, retry_if_not_exception_message])
def test_message_conditions_need_exactly_one_of_message_and_match(cls: type[Any]) -> None:
    """Neither or both of message and match raise LlamaIndex's TypeError, for both forms."""
    with pytest.raises(TypeError) as missing:
        cls()
    assert str(missing.value) == (
        "retry_if_exception_message() missing 1 required argument 'message' or 'match'"
    )
    with pytest.raises(TypeError) as both:
        cls("", match="x")
    assert str(both.value) == (
        "retry_if_exception_message() takes either 'message' or 'match', not both"
    )


def test_message_pattern_that_does_not_compile_raises_at_once() -> None:
    """An invalid regular expression raises re.error when the condition is built."""
    with pytest.raises(re.error):
        retry_if_exception_message(match="(")


def test_retry_if_exception_cause_type_follows_the_cause_chain_only() -> None:
    """The cause condition checks __cause__, transitively, never the error itself or __context__."""
    condition = retry_if_exception_cause_type(KeyError)
    assert condition(caused(RuntimeError("r"), KeyError("k"))) is True
    deep = caused(RuntimeError("top"), caused(ValueError("mid"), KeyError("root")))
    assert condition(deep) is True
    assert condition(KeyError("itself")) is False
    assert condition(with_context(RuntimeError("r"), KeyError("k"))) is False
    assert retry_if_exception_cause_type()(ValueError("no cause")) is False
    assert retry_if_exception_cause_type()(caused(ValueError(), OSError())) is True


def test_retry_if_exception_cause_type_stops_on_a_cause_cycle() -> None:
    """A __cause__ cycle without a match ends the walk with False."""
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert retry_if_exception_cause_type(KeyError)(first) is False


def test_retry_any_all_always_never() -> None:
    """retry_any needs one condition, retry_all every one; empty, they give False and True."""
    assert retry_any(retry_never(), retry_always())(ValueError()) is True
    assert retry_all(retry_never(), retry_always())(ValueError()) is False
    assert retry_all(retry_always(), retry_always())(ValueError()) is True
    assert retry_any()(ValueError()) is False
    assert retry_all()(ValueError()) is True
    assert retry_always()(ValueError()) is True
    assert retry_never()(ValueError()) is False


def test_retry_conditions_combine_with_and_and_or() -> None:
    """`a & b` builds retry_all(a, b) and `a | b` retry_any(a, b), operands in order."""
    key, lookup = retry_if_exception_type(KeyError), retry_if_exception_type(LookupError)
    value = retry_if_exception_type(ValueError)
    both = key & lookup
    either = key | value
    assert isinstance(both, retry_all)
    assert both.retries == (key, lookup)
    assert isinstance(either, retry_any)
    assert either.retries == (key, value)
    assert both(KeyError()) is True
    assert (key & value)(KeyError()) is False
    assert either(ValueError()) is True
    assert either(OSError()) is False
    nested = either | lookup
    assert nested.retries == (either, lookup)


def test_retry_conditions_combine_with_plain_callables_on_either_side() -> None:
    """A plain function works on either side of & and | (the reflected operators)."""

    def never(error: BaseException) -> bool:
        return False

    left = never | retry_always()
    assert isinstance(left, retry_any)
    assert left.retries[0] is never
    assert left(ValueError()) is True
    assert (never & retry_always())(ValueError()) is False
    assert (retry_always() & never)(ValueError()) is False
    assert (retry_never() | never)(ValueError()) is False


@pytest.mark.parametrize("operand", [1, None, "x"])
def test_retry_conditions_refuse_non_callable_operands(operand: object) -> None:
    """Combining a condition with a non-callable raises TypeError at once."""
    with pytest.raises(TypeError):
        retry_always() & operand  # type: ignore[operator]
    with pytest.raises(TypeError):
        operand | retry_never()  # type: ignore[operator]


def test_retry_conditions_reject_bad_arguments() -> None:
    """Arguments that would fail at the first retry are refused when the condition is built."""
    assert validation_message(lambda: retry_if_exception(1)) == (  # type: ignore[arg-type]
        "retry_if_exception(predicate=...) must be callable, like "
        "lambda e: isinstance(e, OSError), got 1"
    )
    assert validation_message(lambda: retry_if_exception_type("x")) == (  # type: ignore[arg-type]
        "retry_if_exception_type(exception_types=...) must be an exception class or a tuple "
        "of exception classes, got 'x'"
    )
    assert validation_message(
        lambda: retry_unless_exception_type([ValueError])  # type: ignore[arg-type]
    ) == (
        "retry_unless_exception_type(exception_types=...) must be an exception class or a "
        "tuple of exception classes, got [<class 'ValueError'>]"
    )
    assert validation_message(lambda: retry_if_exception_cause_type(None)) == (  # type: ignore[arg-type]
        "retry_if_exception_cause_type(exception_types=...) must be an exception class or a "
        "tuple of exception classes, got None"
    )
    assert validation_message(lambda: retry_if_not_exception_message(match=1)) == (  # type: ignore[arg-type]
        "retry_if_not_exception_message(match=...) must be a str or a compiled str pattern "
        "(re.Pattern[str]), got 1"
    )
    assert validation_message(lambda: retry_any(retry_always(), 2)) == (  # type: ignore[arg-type]
        "retry_any() arguments must be callable, like retry_if_exception_type(OSError), "
        "got 2 as argument 2"
    )
    assert validation_message(lambda: retry_all(None)) == (  # type: ignore[arg-type]
        "retry_all() arguments must be callable, like retry_if_exception_type(OSError), "
        "got None as argument 1"
    )


def test_retry_conditions_accept_what_never_fails() -> None:
    """A non-exception class or a non-str message is accepted, as in LlamaIndex: never a match."""
    assert retry_if_exception_type(int)(ValueError()) is False  # type: ignore[arg-type]
    assert retry_if_exception_message(1)(ValueError("1")) is False  # type: ignore[arg-type]


# -- wait strategies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        pytest.param(wait_fixed(2), [2.0, 2.0, 2.0, 2.0], id="fixed"),
        pytest.param(wait_fixed(timedelta(milliseconds=1500)), [1.5] * 4, id="fixed-timedelta"),
        pytest.param(wait_none(), [0.0] * 4, id="none"),
        pytest.param(wait_exponential(), [1.0, 2.0, 4.0, 8.0], id="exponential"),
        pytest.param(
            wait_exponential(multiplier=0.5, min=2, max=10), [2.0, 2.0, 2.0, 4.0], id="exp-min"
        ),
        pytest.param(wait_exponential(min=10, max=5), [10.0] * 4, id="exp-min-above-max"),
        pytest.param(wait_exponential(multiplier=-1, min=-5), [0.0] * 4, id="exp-floor-zero"),
        pytest.param(
            wait_exponential(multiplier=3, exp_base=3, max=100), [3.0, 9.0, 27.0, 81.0], id="exp3"
        ),
        pytest.param(wait_incrementing(), [0.0, 100.0, 200.0, 300.0], id="incrementing"),
        pytest.param(wait_incrementing(1, 2, 6), [1.0, 3.0, 5.0, 6.0], id="incrementing-max"),
        pytest.param(wait_incrementing(start=-5, increment=2), [0.0, 0.0, 0.0, 1.0], id="inc-0"),
        pytest.param(
            wait_chain(wait_fixed(1), wait_fixed(2), wait_fixed(3)),
            [1.0, 2.0, 3.0, 3.0],
            id="chain",
        ),
        pytest.param(wait_combine(wait_fixed(1), wait_incrementing(0, 1)), [1, 2, 3, 4], id="sum"),
        pytest.param(wait_combine(), [0.0] * 4, id="empty-sum"),
    ],
)
def test_wait_strategies_give_the_llamaindex_delays(
    strategy: WaitStrategy, expected: list[float]
) -> None:
    """Each deterministic wait gives the documented delay for retry indices 0, 1, 2 and 3."""
    assert [strategy(n) for n in range(4)] == expected


def test_wait_exponential_reaches_and_keeps_its_maximum() -> None:
    """wait_exponential doubles from 1 s and stays at max=60 once it gets there."""
    assert [wait_exponential()(n) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_exponential_waits_saturate_instead_of_overflowing() -> None:
    """A retry index so large that exp_base**n overflows gives the maximum, not OverflowError."""
    assert wait_exponential()(5000) == 60.0
    assert wait_exponential(multiplier=-1, min=3)(5000) == 3.0
    assert wait_exponential(multiplier=0, min=1)(5000) == 1.0
    assert wait_exponential_jitter(jitter=0)(5000) == 60.0
    assert 0.0 <= wait_random_exponential()(5000, seed=1) <= 60.0


def test_wait_strategies_keep_their_arguments_as_seconds() -> None:
    """Numbers and timedeltas are stored as float seconds in the LlamaIndex attribute names."""
    exponential = wait_exponential(max=timedelta(seconds=3), min=timedelta(seconds=1))
    assert (exponential.multiplier, exponential.exp_base) == (1.0, 2.0)
    assert (exponential.max, exponential.min) == (3.0, 1.0)
    incrementing = wait_incrementing(
        timedelta(seconds=1), timedelta(seconds=2), timedelta(minutes=1)
    )
    assert (incrementing.start, incrementing.increment, incrementing.max) == (1.0, 2.0, 60.0)
    assert (wait_random(1, 2).min, wait_random(1, 2).max) == (1.0, 2.0)
    jitter = wait_exponential_jitter()
    assert (jitter.initial, jitter.exp_base, jitter.max, jitter.jitter) == (1.0, 2.0, 60.0, 1.0)
    assert wait_fixed(3).wait == 3.0
    assert isinstance(wait_fixed(3)(0), float)


def test_wait_none_is_a_zero_wait_fixed() -> None:
    """wait_none() is wait_fixed(0)."""
    assert isinstance(wait_none(), wait_fixed)
    assert wait_none().wait == 0.0


def test_wait_random_draws_from_the_seeded_generator() -> None:
    """With a seed, wait_random is reference(seed, min, max): reproducible."""
    strategy = wait_random(1, 3)
    for seed in (0, 1, 42, 2**40):
        expected = reference(seed, 1, 3)
        assert strategy(0, seed=seed) == expected
        assert strategy(5, seed=seed) == expected
    assert wait_random(1, 3)(0, seed=42) == pytest.approx(2.2788535969157673)


def test_wait_random_without_seed_uses_the_global_generator() -> None:
    """Without a seed, wait_random draws from the global random module."""
    state = random.getstate()
    try:
        random.seed(7)
        drawn = wait_random(1, 3)(0)
        random.seed(7)
        assert drawn == random.uniform(1, 3)  # noqa: S311 - the reference draw
    finally:
        random.setstate(state)


def test_wait_random_stays_within_its_bounds() -> None:
    """Over many seeds every draw lies within [min, max]."""
    draws = [wait_random(0.5, 2.5)(0, seed=seed) for seed in range(500)]
    assert all(0.5 <= d <= 2.5 for d in draws)
    assert max(draws) - min(draws) > 1.5


def test_wait_exponential_jitter_adds_a_seeded_jitter_under_the_cap() -> None:
    """wait_exponential_jitter is min(min(initial*exp_base**n, max) + uniform(0, jitter), max)."""
    strategy = wait_exponential_jitter()
    for n in range(9):
        base = min(2.0**n, 60.0)
        assert strategy(n, seed=1) == min(base + reference(1, 0, 1.0), 60.0)
    assert strategy(0, seed=1) == pytest.approx(1.134364244112401)
    assert strategy(6, seed=1) == 60.0
    assert [wait_exponential_jitter(jitter=0)(n) for n in range(3)] == [1.0, 2.0, 4.0]


def test_wait_exponential_jitter_stays_within_its_bounds() -> None:
    """Every jittered delay lies between the exponential base and base + jitter (capped)."""
    strategy = wait_exponential_jitter(initial=0.5, exp_base=3, max=20, jitter=2)
    for n in range(6):
        base = min(0.5 * 3**n, 20)
        for seed in range(100):
            assert base <= strategy(n, seed=seed) <= min(base + 2, 20)


def test_wait_random_exponential_is_full_jitter() -> None:
    """wait_random_exponential is uniform(min, max(max(0, min), min(mult*exp_base**n, max)))."""
    strategy = wait_random_exponential()
    for n in range(9):
        ceiling = min(2.0**n, 60.0)
        assert strategy(n, seed=5) == reference(5, 0, ceiling)
    bounded = wait_random_exponential(min=2, max=10)
    assert bounded(0, seed=5) == 2.0
    assert bounded(3, seed=5) == reference(5, 2, 8)
    for seed in range(200):
        assert 2.0 <= bounded(6, seed=seed) <= 10.0


def test_wait_full_jitter_builds_a_wait_random_exponential() -> None:
    """wait_full_jitter is a function returning wait_random_exponential with its arguments."""
    assert inspect.isfunction(wait_full_jitter)
    strategy = wait_full_jitter(2, 3, 4, 1)
    assert isinstance(strategy, wait_random_exponential)
    assert (strategy.multiplier, strategy.exp_base, strategy.max, strategy.min) == (2, 3, 4, 1)
    assert not isinstance(wait_random_exponential(), wait_exponential)


def test_wait_chain_passes_the_retry_index_and_the_seed() -> None:
    """wait_chain calls the chosen strategy with the retry index itself and the same seed."""
    chain = wait_chain(wait_fixed(1), wait_incrementing(0, 10))
    assert [chain(n) for n in range(4)] == [1.0, 10.0, 20.0, 30.0]
    seeded = wait_chain(wait_random(0, 1))
    assert seeded(1, seed=3) == reference(3, 0, 1)


def test_wait_chain_needs_a_strategy() -> None:
    """wait_chain() with nothing to chain raises LlamaIndex's ValueError message."""
    with pytest.raises(ValueError, match=r"^wait_chain requires at least one strategy$"):
        wait_chain()


def test_wait_combine_sums_with_one_seed_for_all() -> None:
    """wait_combine adds the delays, each strategy drawing with the same seed."""
    draw = reference(3, 0, 1)
    assert wait_combine(wait_fixed(1), wait_fixed(2), wait_random(0, 1))(0, seed=3) == 3 + draw
    assert wait_combine(wait_random(0, 1), wait_random(0, 1))(0, seed=3) == 2 * draw


def test_wait_strategies_add_with_plus_and_sum() -> None:
    """`a + b` builds wait_combine(a, b), `0 + a` is a, so sum() of strategies works."""
    one, two = wait_fixed(1), wait_fixed(2)
    combined = one + two
    assert isinstance(combined, wait_combine)
    assert combined.strategies == (one, two)
    assert combined(0) == 3.0
    assert (one + two + wait_exponential())(3) == 11.0
    assert 0 + one is one
    assert sum([one, two, wait_fixed(0.5)])(0) == 3.5  # type: ignore[operator]


def test_wait_strategies_add_plain_callables_on_either_side() -> None:
    """A plain function works on either side of +."""

    def three(attempts: int, *, seed: int | None = None) -> float:
        return 3.0

    assert (wait_fixed(1) + three)(0) == 4.0
    assert (three + wait_fixed(1))(0) == 4.0


@pytest.mark.parametrize("operand", [1, 1.5, None, "x"])
def test_wait_strategies_refuse_non_callable_operands(operand: object) -> None:
    """Adding a non-callable (other than a leading 0) raises TypeError at once."""
    with pytest.raises(TypeError):
        wait_fixed(1) + operand  # type: ignore[operator]
    with pytest.raises(TypeError):
        operand + wait_fixed(1)


def test_wait_strategies_reject_bad_arguments() -> None:
    """Values that are not durations or numbers are refused when the strategy is built."""
    assert validation_message(lambda: wait_fixed("soon")) == (  # type: ignore[arg-type]
        "wait_fixed(wait=...) must be a number of seconds or a timedelta, got 'soon'"
    )
    assert validation_message(lambda: wait_fixed(None)) == (  # type: ignore[arg-type]
        "wait_fixed(wait=...) must be a number of seconds or a timedelta, got None"
    )
    assert validation_message(lambda: wait_random(max=math.nan)) == (
        "wait_random(max=...) must be a number of seconds or a timedelta, got nan"
    )
    assert validation_message(lambda: wait_exponential(multiplier="x")) == (  # type: ignore[arg-type]
        "wait_exponential(multiplier=...) must be a number, got 'x'"
    )
    assert validation_message(lambda: wait_exponential(exp_base=timedelta(1))) == (  # type: ignore[arg-type]
        "wait_exponential(exp_base=...) must be a number, got datetime.timedelta(days=1)"
    )
    assert validation_message(lambda: wait_incrementing(increment=[1])) == (  # type: ignore[arg-type]
        "wait_incrementing(increment=...) must be a number of seconds or a timedelta, got [1]"
    )
    assert validation_message(lambda: wait_exponential_jitter(jitter="a")) == (  # type: ignore[arg-type]
        "wait_exponential_jitter(jitter=...) must be a number of seconds or a timedelta, got 'a'"
    )
    assert validation_message(lambda: wait_random_exponential(min=None)) == (  # type: ignore[arg-type]
        "wait_random_exponential(min=...) must be a number of seconds or a timedelta, got None"
    )
    assert validation_message(lambda: wait_combine(wait_fixed(1), 2)) == (  # type: ignore[arg-type]
        "wait_combine() arguments must be callable, like wait_fixed(1), got 2 as argument 2"
    )
    assert validation_message(lambda: wait_chain(0.5)) == (  # type: ignore[arg-type]
        "wait_chain() arguments must be callable, like wait_fixed(1), got 0.5 as argument 1"
    )


def test_wait_strategies_accept_what_works() -> None:
    """Negative, infinite, boolean and numeric-string values are accepted, as in LlamaIndex."""
    assert wait_fixed(-1)(0) == -1.0
    assert wait_fixed(math.inf)(0) == math.inf
    assert wait_fixed(True)(0) == 1.0
    assert wait_fixed("1.5")(0) == 1.5  # type: ignore[arg-type]
    assert wait_random(3, 1)(0, seed=1) == reference(1, 3, 1)


# -- stop conditions ------------------------------------------------------------------------------


def test_stop_after_attempt_counts_every_attempt() -> None:
    """stop_after_attempt(n) stops once attempts >= n (0 and negatives: at once)."""
    assert [stop_after_attempt(3)(n, 0) for n in range(5)] == [False, False, False, True, True]
    assert stop_after_attempt(0)(1, 0) is True
    assert stop_after_attempt(-1)(1, 0) is True
    assert [stop_after_attempt(1.5)(n, 0) for n in range(3)] == [False, False, True]  # type: ignore[arg-type]
    assert stop_after_attempt(3).max_attempt_number == 3


def test_stop_after_delay_compares_the_elapsed_time() -> None:
    """stop_after_delay stops once elapsed_time >= max_delay, whatever the upcoming sleep."""
    assert [stop_after_delay(10)(1, e) for e in (9.9, 10, 11)] == [False, True, True]
    assert stop_after_delay(10)(1, 5, upcoming_sleep=100) is False
    assert stop_after_delay(timedelta(seconds=10)).max_delay == 10.0
    assert stop_after_delay(timedelta(seconds=10))(1, 10) is True


def test_stop_before_delay_counts_the_upcoming_sleep() -> None:
    """stop_before_delay stops when elapsed_time + upcoming_sleep >= max_delay."""
    condition = stop_before_delay(10)
    assert condition(1, 5, upcoming_sleep=4.9) is False
    assert condition(1, 5, upcoming_sleep=5) is True
    assert condition(1, 10) is True
    assert condition(1, 9.9) is False
    assert stop_before_delay(timedelta(minutes=1)).max_delay == 60.0


def test_stop_any_all_never() -> None:
    """stop_any stops when one does, stop_all when all do; empty: never and at once."""
    either = stop_any(stop_after_attempt(3), stop_after_delay(10))
    both = stop_all(stop_after_attempt(3), stop_after_delay(10))
    assert [either(a, e) for a, e in ((1, 1), (3, 1), (1, 10))] == [False, True, True]
    assert [both(a, e) for a, e in ((1, 1), (3, 1), (3, 10))] == [False, False, True]
    assert stop_any()(1, 0) is False
    assert stop_all()(1, 0) is True
    assert stop_never()(10**9, 1e9, upcoming_sleep=1e9) is False


def test_stop_combinators_pass_the_upcoming_sleep_on() -> None:
    """stop_any and stop_all hand upcoming_sleep to their conditions."""
    assert stop_any(stop_before_delay(10))(1, 5, upcoming_sleep=5) is True
    assert stop_all(stop_before_delay(10))(1, 5, upcoming_sleep=4) is False


def test_stop_conditions_combine_with_and_and_or() -> None:
    """`a & b` builds stop_all(a, b) and `a | b` stop_any(a, b)."""
    attempts, delay = stop_after_attempt(3), stop_after_delay(10)
    both = attempts & delay
    either = attempts | delay
    assert isinstance(both, stop_all)
    assert both.stops == (attempts, delay)
    assert isinstance(either, stop_any)
    assert either.stops == (attempts, delay)
    assert [both(3, 1), both(3, 10)] == [False, True]
    assert [either(1, 1), either(1, 10)] == [False, True]


def test_stop_conditions_combine_with_plain_callables_on_either_side() -> None:
    """A plain function works on either side of & and |."""

    def always(attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return True

    assert (always | stop_never())(1, 0) is True
    assert (always & stop_never())(1, 0) is False
    assert (stop_never() | always)(1, 0) is True
    assert (stop_never() & always)(1, 0) is False


@pytest.mark.parametrize("operand", [1, None])
def test_stop_conditions_refuse_non_callable_operands(operand: object) -> None:
    """Combining a stop condition with a non-callable raises TypeError at once."""
    with pytest.raises(TypeError):
        stop_never() | operand  # type: ignore[operator]
    with pytest.raises(TypeError):
        operand & stop_never()  # type: ignore[operator]


def test_stop_conditions_reject_bad_arguments() -> None:
    """Values that could not be compared are refused when the condition is built."""
    assert validation_message(lambda: stop_after_attempt("3")) == (  # type: ignore[arg-type]
        "stop_after_attempt(max_attempt_number=...) must be a number, got '3'"
    )
    assert validation_message(lambda: stop_after_attempt(math.nan)) == (  # type: ignore[arg-type]
        "stop_after_attempt(max_attempt_number=...) must be a number, got nan"
    )
    assert validation_message(lambda: stop_after_delay("soon")) == (  # type: ignore[arg-type]
        "stop_after_delay(max_delay=...) must be a number of seconds or a timedelta, got 'soon'"
    )
    assert validation_message(lambda: stop_before_delay(None)) == (  # type: ignore[arg-type]
        "stop_before_delay(max_delay=...) must be a number of seconds or a timedelta, got None"
    )
    assert validation_message(lambda: stop_any(stop_never(), "x")) == (  # type: ignore[arg-type]
        "stop_any() arguments must be callable, like stop_after_attempt(3), got 'x' as argument 2"
    )
    assert validation_message(lambda: stop_all(3)) == (  # type: ignore[arg-type]
        "stop_all() arguments must be callable, like stop_after_attempt(3), got 3 as argument 1"
    )


# -- the composed policy --------------------------------------------------------------------------


def test_default_policy_retries_every_error_twice_five_seconds_apart() -> None:
    """retry_policy() gives 5.0 after failures 1 and 2 and None after the third: 3 attempts."""
    policy = retry_policy()
    assert [policy.next(0.0, a, ValueError()) for a in range(1, 5)] == [5.0, 5.0, None, None]


def test_policy_gives_up_when_the_retry_condition_rejects_the_error() -> None:
    """next() returns None for an error the retry condition rejects, the delay otherwise."""
    policy = retry_policy(retry=retry_if_exception_type(KeyError))
    assert policy.next(0.0, 1, ValueError()) is None
    assert policy.next(0.0, 1, KeyError()) == 5.0
    assert retry_policy(retry=lambda _: False).next(0.0, 1, ValueError()) is None


def test_policy_waits_count_retries_from_zero() -> None:
    """The wait strategy gets attempts - 1 (0 for the first retry, never below 0)."""
    policy = retry_policy(wait=wait_incrementing(0, 1), stop=stop_never())
    assert [policy.next(0.0, a, ValueError()) for a in range(5)] == [0.0, 0.0, 1.0, 2.0, 3.0]


def test_policy_passes_the_seed_to_its_wait() -> None:
    """next(..., seed=s) draws the jitter from random.Random(s); the seed is keyword-only."""
    policy = retry_policy(wait=wait_random(0, 10), stop=stop_never())
    expected = reference(9, 0, 10)
    assert policy.next(0.0, 1, ValueError(), seed=9) == expected
    assert policy.next(0.0, 2, ValueError(), seed=9) == expected
    with pytest.raises(TypeError):
        policy.next(0.0, 1, ValueError(), 9)  # type: ignore[call-arg]


def test_policy_stop_sees_the_upcoming_sleep() -> None:
    """The stop condition is asked with the chosen delay as upcoming_sleep."""
    before = retry_policy(wait=wait_fixed(5), stop=stop_before_delay(10))
    assert [before.next(e, 1, ValueError()) for e in (4, 5, 6)] == [5.0, None, None]
    after = retry_policy(wait=wait_fixed(5), stop=stop_after_delay(10))
    assert [after.next(e, 1, ValueError()) for e in (9, 10)] == [5.0, None]


def test_policy_composes_every_part() -> None:
    """A policy built from combined parts retries, waits and stops as its parts say."""
    policy = retry_policy(
        retry=retry_if_exception_type(ConnectionError) | retry_if_exception_message(match="busy"),
        wait=wait_exponential(multiplier=0.5, max=2) + wait_fixed(0.25),
        stop=stop_after_attempt(4) | stop_after_delay(30),
    )
    assert policy.next(0.0, 1, ValueError("server busy")) == 0.75
    assert policy.next(1.0, 2, ConnectionError()) == 1.25
    assert policy.next(2.0, 3, ConnectionError()) == 2.25
    assert policy.next(3.0, 4, ConnectionError()) is None
    assert policy.next(30.0, 1, ConnectionError()) is None
    assert policy.next(0.0, 1, ValueError("bad input")) is None


def test_policy_accepts_positional_parts_and_keyword_next() -> None:
    """retry_policy(retry, wait, stop) works positionally and next() by keyword."""
    policy = retry_policy(None, wait_fixed(1), stop_never())
    assert policy.next(elapsed_time=0.0, attempts=1, error=ValueError(), seed=None) == 1.0


def test_policy_repr_shows_its_parts() -> None:
    """A composed policy's repr is the call that builds it."""
    policy = retry_policy(retry=retry_if_exception_type(OSError), wait=wait_fixed(1))
    assert repr(policy) == (
        "retry_policy(retry=retry_if_exception_type(exception_types=<class 'OSError'>), "
        "wait=wait_fixed(wait=1.0), stop=stop_after_attempt(max_attempt_number=3))"
    )
    assert repr(wait_chain(wait_none(), wait_fixed(2))) == (
        "wait_chain(wait_none(), wait_fixed(wait=2.0))"
    )


def test_policy_rejects_parts_that_are_not_callable() -> None:
    """retry, wait and stop must be callables (retry may be None), checked when built."""
    assert validation_message(lambda: retry_policy(retry=1)) == (  # type: ignore[arg-type]
        "retry_policy(retry=...) must be callable, like retry_if_exception_type(OSError), "
        "or None, got 1"
    )
    assert validation_message(lambda: retry_policy(wait=5)) == (  # type: ignore[arg-type]
        "retry_policy(wait=...) must be callable, like wait_fixed(1), got 5"
    )
    assert validation_message(lambda: retry_policy(stop=None)) == (  # type: ignore[arg-type]
        "retry_policy(stop=...) must be callable, like stop_after_attempt(3), got None"
    )


# -- the deprecated constructors ------------------------------------------------------------------


def test_constant_delay_retry_policy_warns_with_the_llamaindex_text() -> None:
    """ConstantDelayRetryPolicy() emits LlamaIndex's DeprecationWarning, pointing at the caller."""
    with pytest.warns(DeprecationWarning, match=re.escape(CONSTANT_WARNING)) as record:
        ConstantDelayRetryPolicy()
    assert [str(w.message) for w in record] == [CONSTANT_WARNING]
    assert record[0].filename == __file__


def test_constant_delay_retry_policy_warns_on_every_call() -> None:
    """Each call warns again (under the default filters too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        ConstantDelayRetryPolicy()
        ConstantDelayRetryPolicy()
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]


def test_constant_delay_retry_policy_is_the_composed_equivalent() -> None:
    """ConstantDelayRetryPolicy(n, d) is a composed policy: wait_fixed(d), stop_after_attempt(n)."""
    assert inspect.isfunction(ConstantDelayRetryPolicy)
    policy = deprecated(lambda: ConstantDelayRetryPolicy(3, 2))
    assert [policy.next(0.0, a, ValueError()) for a in range(1, 5)] == [2.0, 2.0, None, None]
    default = deprecated(ConstantDelayRetryPolicy)
    assert [default.next(0.0, a, ValueError()) for a in range(1, 5)] == [5.0, 5.0, None, None]
    assert repr(deprecated(lambda: ConstantDelayRetryPolicy(delay=1, maximum_attempts=2))) == (
        "retry_policy(retry=None, wait=wait_fixed(wait=1.0), "
        "stop=stop_after_attempt(max_attempt_number=2))"
    )


def test_constant_delay_retry_policy_accepts_odd_values_as_llamaindex() -> None:
    """A negative delay (no wait) and zero attempts (no retry) are accepted."""
    assert deprecated(lambda: ConstantDelayRetryPolicy(delay=-1)).next(0, 1, ValueError()) == -1.0
    zero = deprecated(lambda: ConstantDelayRetryPolicy(maximum_attempts=0))
    assert zero.next(0, 1, ValueError()) is None
    timed = deprecated(lambda: ConstantDelayRetryPolicy(delay=timedelta(seconds=2)))  # type: ignore[arg-type]
    assert timed.next(0, 1, ValueError()) == 2.0


def test_constant_delay_retry_policy_rejects_values_that_cannot_work() -> None:
    """After its warning, ConstantDelayRetryPolicy refuses a delay or a count that is no number."""
    with pytest.deprecated_call():
        assert validation_message(lambda: ConstantDelayRetryPolicy(delay="x")) == (  # type: ignore[arg-type]
            "ConstantDelayRetryPolicy(delay=...) must be a number of seconds or a timedelta, "
            "got 'x'"
        )
    with pytest.deprecated_call():
        assert validation_message(lambda: ConstantDelayRetryPolicy(maximum_attempts="3")) == (  # type: ignore[arg-type]
            "ConstantDelayRetryPolicy(maximum_attempts=...) must be a number, got '3'"
        )


def test_exponential_backoff_retry_policy_warns_with_the_llamaindex_text() -> None:
    """ExponentialBackoffRetryPolicy() emits LlamaIndex's DeprecationWarning, at the caller."""
    assert inspect.isfunction(ExponentialBackoffRetryPolicy)
    with pytest.warns(DeprecationWarning, match=re.escape(EXPONENTIAL_WARNING)) as record:
        ExponentialBackoffRetryPolicy()
    assert [str(w.message) for w in record] == [EXPONENTIAL_WARNING]
    assert record[0].filename == __file__


def test_exponential_backoff_without_jitter_starts_at_the_initial_delay() -> None:
    """Without jitter the delays are min(initial_delay * multiplier**n, max_delay), n from 0."""
    policy = deprecated(lambda: ExponentialBackoffRetryPolicy(jitter=False))
    assert [policy.next(0, a, ValueError()) for a in range(1, 7)] == [1, 2, 4, 8, None, None]
    capped = deprecated(
        lambda: ExponentialBackoffRetryPolicy(
            maximum_attempts=10, initial_delay=0.5, multiplier=3, max_delay=10, jitter=False
        )
    )
    delays = [capped.next(0, a, ValueError()) for a in range(1, 11)]
    assert delays == [0.5, 1.5, 4.5, 10, 10, 10, 10, 10, 10, None]


def test_exponential_backoff_with_jitter_draws_between_zero_and_the_delay() -> None:
    """With jitter (the default) the delay is uniform(0, min(initial*multiplier**n, max))."""
    policy = deprecated(ExponentialBackoffRetryPolicy)
    for attempts in range(1, 5):
        ceiling = min(2.0 ** (attempts - 1), 60.0)
        expected = reference(4, 0, ceiling)
        assert policy.next(0, attempts, ValueError(), seed=4) == expected
    assert policy.next(0, 5, ValueError(), seed=4) is None
    bounded = deprecated(lambda: ExponentialBackoffRetryPolicy(initial_delay=2, max_delay=5))
    for seed in range(100):
        delay = bounded.next(0, 4, ValueError(), seed=seed)
        assert delay is not None
        assert 0 <= delay <= 5


def test_exponential_backoff_rejects_values_that_cannot_work() -> None:
    """After its warning, ExponentialBackoffRetryPolicy refuses arguments that are no numbers."""
    with pytest.deprecated_call():
        assert validation_message(lambda: ExponentialBackoffRetryPolicy(initial_delay="x")) == (  # type: ignore[arg-type]
            "ExponentialBackoffRetryPolicy(initial_delay=...) must be a number of seconds or a "
            "timedelta, got 'x'"
        )
    with pytest.deprecated_call():
        assert validation_message(lambda: ExponentialBackoffRetryPolicy(multiplier=None)) == (  # type: ignore[arg-type]
            "ExponentialBackoffRetryPolicy(multiplier=...) must be a number, got None"
        )


# -- the runtime honours a composed policy --------------------------------------------------------


class FlakyWorkflow(Workflow):
    """Its one step fails with ConnectionError until it has failed ``failures`` times."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        super().__init__(timeout=10)
        self.failures = failures
        self.error = error
        self.attempts = 0

    @step(
        retry_policy=retry_policy(
            retry=retry_if_exception_type(ConnectionError),
            wait=wait_fixed(0.01),
            stop=stop_after_attempt(3),
        )
    )
    async def fetch(self, ev: StartEvent) -> StopEvent:
        """Count the attempt; fail while there are failures left, else return the count."""
        self.attempts += 1
        if self.attempts <= self.failures:
            msg = f"attempt {self.attempts} failed"
            raise self.error(msg)
        return StopEvent(result=self.attempts)


@pytest.mark.asyncio
async def test_step_failing_twice_succeeds_on_its_third_attempt() -> None:
    """A step under stop_after_attempt(3) that fails twice ends ok after exactly 3 attempts."""
    workflow = FlakyWorkflow(failures=2)
    assert await workflow.run() == 3
    assert workflow.attempts == 3


@pytest.mark.asyncio
async def test_step_failing_three_times_fails_the_run_with_its_last_error() -> None:
    """After stop_after_attempt(3) attempts the step's own third error ends the run."""
    workflow = FlakyWorkflow(failures=3)
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        await workflow.run()
    assert workflow.attempts == 3


@pytest.mark.asyncio
async def test_step_error_the_retry_condition_rejects_is_not_retried() -> None:
    """An error outside retry_if_exception_type fails the run at the first attempt."""
    workflow = FlakyWorkflow(failures=2, error=KeyError)
    with pytest.raises(KeyError, match="attempt 1 failed"):
        await workflow.run()
    assert workflow.attempts == 1
