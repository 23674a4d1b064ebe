"""The public API: `stepstream.__all__` is exact and holds every name the spec requires."""

import importlib
import inspect
import pkgutil
import types

import pydantic
import pytest

import stepstream
import stepstream.testing
from _helpers import defined_here

SPEC_NAMES = (
    "Event",
    "StartEvent",
    "StopEvent",
    "InputRequiredEvent",
    "HumanResponseEvent",
    "Workflow",
    "step",
    "Context",
    "WorkflowHandler",
    "RetryPolicy",
    "ConstantDelayRetryPolicy",
    "WorkflowError",
    "WorkflowValidationError",
    "WorkflowRuntimeError",
    "WorkflowTimeoutError",
    "WorkflowCancelledError",
)


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a module binds that are not private and not submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_has_no_duplicates() -> None:
    """stepstream.__all__ lists each name once."""
    assert len(stepstream.__all__) == len(set(stepstream.__all__))


def test_every_public_name_is_in_all() -> None:
    """Every public (non-module) name bound by the stepstream package is listed in __all__."""
    assert _public_names(stepstream) - set(stepstream.__all__) == set()


def test_everything_in_all_is_importable() -> None:
    """Every name in __all__ is bound on the package, so `from stepstream import name` works."""
    missing = [name for name in stepstream.__all__ if not hasattr(stepstream, name)]
    assert missing == []


def test_star_import_gives_exactly_all() -> None:
    """`from stepstream import *` binds exactly the names in __all__."""
    namespace: dict[str, object] = {}
    exec("from stepstream import *", namespace)  # noqa: S102 - the statement under test
    assert set(namespace) - {"__builtins__"} == set(stepstream.__all__)


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in SPEC_NAMES])
def test_spec_name_is_exported(name: str) -> None:
    """Each name the spec requires is in __all__ and bound on the package."""
    assert name in stepstream.__all__
    assert getattr(stepstream, name) is not None


def test_spec_names_have_the_expected_kinds() -> None:
    """Event types are pydantic Event subclasses, errors WorkflowErrors, and step a function."""
    for name in ("StartEvent", "StopEvent", "InputRequiredEvent", "HumanResponseEvent"):
        assert issubclass(getattr(stepstream, name), stepstream.Event)
    assert issubclass(stepstream.Event, pydantic.BaseModel)
    for name in (
        "WorkflowValidationError",
        "WorkflowRuntimeError",
        "WorkflowTimeoutError",
        "WorkflowCancelledError",
    ):
        assert issubclass(getattr(stepstream, name), stepstream.WorkflowError)
    for name in ("Workflow", "Context", "WorkflowHandler"):
        assert inspect.isclass(getattr(stepstream, name))
    assert inspect.isfunction(stepstream.step)
    # A deprecated function returning a RetryPolicy, as in LlamaIndex (no longer a class).
    assert inspect.isfunction(stepstream.ConstantDelayRetryPolicy)
    with pytest.deprecated_call():
        assert isinstance(stepstream.ConstantDelayRetryPolicy(), stepstream.RetryPolicy)


def test_testing_module_exports_its_classes() -> None:
    """stepstream.testing's __all__ is importable and lists every class and function it defines."""
    module = stepstream.testing
    exported = set(module.__all__)
    assert {"FakeStreamingLLM", "CompletionResponse"} <= exported
    assert all(hasattr(module, name) for name in exported)
    assert defined_here(module) - exported == set()


def _public_modules() -> list[types.ModuleType]:
    """Every module of the package whose dotted name has no private component."""
    found = [stepstream]
    for info in pkgutil.walk_packages(stepstream.__path__, "stepstream."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts):
            continue
        found.append(importlib.import_module(info.name))
    return found


PUBLIC_MODULES = _public_modules()


def test_public_modules_include_the_peer_module_names() -> None:
    """The public modules found include the LlamaIndex-compatible ones (so the walk walks)."""
    names = {m.__name__ for m in PUBLIC_MODULES}
    assert {
        "stepstream.context",
        "stepstream.decorators",
        "stepstream.errors",
        "stepstream.events",
        "stepstream.handler",
        "stepstream.retry_policy",
        "stepstream.testing",
        "stepstream.workflow",
    } <= names


@pytest.mark.parametrize("module", [pytest.param(m, id=m.__name__) for m in PUBLIC_MODULES])
def test_public_module_all_is_exact(module: types.ModuleType) -> None:
    """A public module's __all__ lists public names once, each bound, and every public
    class or function the module defines."""
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    assert len(exported) == len(set(exported))
    assert [n for n in exported if n.startswith("_")] == []
    assert [n for n in exported if not hasattr(module, n)] == []
    assert defined_here(module) - set(exported) == set()
