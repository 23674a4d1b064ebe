"""The import-layers contract covers every module of the package (lint-imports checks it)."""

import pkgutil
import tomllib
from pathlib import Path

import stepstream

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# Modules outside the layers: the package itself, its entry point, its version string.
UNLAYERED = {"__main__", "_version"}


def test_every_module_is_in_a_layer() -> None:
    """Each top-level module and subpackage of stepstream has its place in the layers."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c.get("containers") == ["stepstream"])
    placed = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    modules = {info.name for info in pkgutil.iter_modules(stepstream.__path__)}
    assert modules - UNLAYERED - placed == set()
    assert placed - modules == set()
