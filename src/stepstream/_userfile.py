"""Import the user's workflow code (``FILE.py`` or ``package.module``) with clear errors.

Shared by ``stepstream run``/``draw`` and ``stepstream serve``: every way an import can
fail becomes one message naming the file or module and why, raised as the caller's
error class.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from stepstream._visible import visible
from stepstream.errors import WorkflowError

__all__ = ["MODULE_PREFIX", "import_source"]

#: The ``sys.modules`` name prefix of an imported file (``_stepstream_user_app``).
MODULE_PREFIX = "_stepstream_user_"


def import_source(source: str, error: type[Exception], *, modules: bool = False) -> ModuleType:
    """Import ``source``, a ``.py`` file (or, with ``modules``, a module name too).

    Raises ``error`` with a message naming ``source``: no such file, not a Python file,
    a syntax error (with its line), a missing module, or what its code raised.
    """
    path = Path(source)
    is_file = not modules or source.endswith(".py") or path.is_file()
    if is_file and not path.is_file():
        msg = f"cannot read {path}: no such file"
        raise error(msg)
    try:
        return _import_file(path, error) if is_file else importlib.import_module(source)
    except error:
        raise
    except SyntaxError as exc:
        msg = f"cannot import {source}: syntax error at line {exc.lineno}: {exc.msg}"
        raise error(msg) from exc
    except ModuleNotFoundError as exc:
        hint = "; give a FILE.py path or an importable module" if not is_file else ""
        msg = f"cannot import {source}: {visible(exc)}{hint}"
        raise error(msg) from exc
    except WorkflowError as exc:
        msg = f"cannot import {source}: {visible(exc, multiline=True)}"
        raise error(msg) from exc
    except Exception as exc:
        msg = f"cannot import {source}: {type(exc).__name__}: {visible(exc, multiline=True)}"
        raise error(msg) from exc


def _import_file(path: Path, error: type[Exception]) -> ModuleType:
    module_name = f"{MODULE_PREFIX}{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot import {path}: not a Python file"
        raise error(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module
