"""Find the workflows to serve: ``app.py``, ``package.module``, either with ``:attr``."""

from __future__ import annotations

from stepstream._userfile import import_source
from stepstream.errors import WorkflowValidationError
from stepstream.workflow import Workflow

__all__ = ["ServeLoadError", "load_workflows"]


class ServeLoadError(WorkflowValidationError):
    """The target of ``stepstream serve`` cannot be loaded; the message says which and why."""


def load_workflows(target: str) -> dict[str, Workflow]:
    """The workflows ``target`` names, by the name to serve each under.

    ``app.py`` or ``pkg.module``: every module-level Workflow instance, under its
    variable name. With ``:attr``: that Workflow instance (as ``attr``), or that dict of
    names to Workflow instances.
    """
    source, _, attr = target.partition(":")
    module = import_source(source, ServeLoadError, modules=True)
    if attr:
        if not hasattr(module, attr):
            msg = f"{source} has no attribute {attr!r}"
            raise ServeLoadError(msg)
        value = getattr(module, attr)
        if isinstance(value, Workflow):
            return {attr: value}
        if isinstance(value, dict) and value:
            bad = [repr(k) for k, v in value.items() if not isinstance(v, Workflow)]
            if not bad and all(isinstance(k, str) for k in value):
                return dict(value)
            msg = (
                f"{source}:{attr} must map names (strings) to Workflow instances; "
                f"not a Workflow instance: {', '.join(bad) or 'a non-string key'}"
            )
            raise ServeLoadError(msg)
        msg = (
            f"{source}:{attr} is a {type(value).__name__}; name a Workflow instance or a "
            "dict of names to Workflow instances"
        )
        raise ServeLoadError(msg)
    found = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Workflow) and not name.startswith("_")
    }
    if not found:
        classes = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, Workflow) and value is not Workflow
        )
        hint = (
            f" (it defines {', '.join(classes)}: add e.g. `app = {classes[0]}()`)"
            if classes
            else ""
        )
        msg = (
            f"{source} has no module-level Workflow instance to serve{hint}; or name a dict of "
            f"them as {source}:ATTR"
        )
        raise ServeLoadError(msg)
    return found
