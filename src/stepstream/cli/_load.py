"""Load ``FILE.py[:WorkflowClass]`` into a Workflow class, with clear errors."""

from __future__ import annotations

import inspect
from pathlib import Path

from stepstream._userfile import import_source
from stepstream.workflow import Workflow

__all__ = ["LoadError", "load_workflow"]


class LoadError(Exception):
    """The file or class cannot be loaded; the message names which and why."""


def load_workflow(target: str) -> type[Workflow]:
    """Import ``FILE.py`` and return its Workflow subclass (or the one named after ``:``)."""
    path_text, _, class_name = target.partition(":")
    path = Path(path_text)
    module = import_source(path_text, LoadError)
    module_name = module.__name__
    found = {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, Workflow)
        and obj is not Workflow
        and obj.__module__ == module_name
    }
    if class_name:
        cls = vars(module).get(class_name)
        if not (inspect.isclass(cls) and issubclass(cls, Workflow)):
            known = ", ".join(sorted(found)) or "none"
            msg = f"{path} has no Workflow class {class_name!r} (workflows in it: {known})"
            raise LoadError(msg)
        return cls
    if not found:
        msg = f"{path} defines no Workflow subclass; define one or name it as FILE.py:Class"
        raise LoadError(msg)
    if len(found) > 1:
        names = ", ".join(sorted(found))
        msg = f"{path} defines several workflows ({names}); pick one as {path}:{min(found)}"
        raise LoadError(msg)
    return next(iter(found.values()))
