"""Load ``FILE.py[:WorkflowClass]`` into a Workflow class, with clear errors."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from stepstream._visible import visible
from stepstream.errors import WorkflowError
from stepstream.workflow import Workflow

__all__ = ["LoadError", "load_workflow"]


class LoadError(Exception):
    """The file or class cannot be loaded; the message names which and why."""


def load_workflow(target: str) -> type[Workflow]:
    """Import ``FILE.py`` and return its Workflow subclass (or the one named after ``:``)."""
    path_text, _, class_name = target.partition(":")
    path = Path(path_text)
    if not path.is_file():
        msg = f"cannot read {path}: no such file"
        raise LoadError(msg)
    module_name = f"_stepstream_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot import {path}: not a Python file"
        raise LoadError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        msg = f"cannot import {path}: syntax error at line {exc.lineno}: {exc.msg}"
        raise LoadError(msg) from exc
    except WorkflowError as exc:
        msg = f"cannot import {path}: {exc}"
        raise LoadError(msg) from exc
    except Exception as exc:
        msg = f"cannot import {path}: {type(exc).__name__}: {visible(exc, multiline=True)}"
        raise LoadError(msg) from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
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
