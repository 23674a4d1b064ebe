"""Starting, waiting for and killing the app processes of the durable kill tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import stepstream

__all__ = ["SRC", "finish", "kill", "lines", "start", "wait_for"]

SRC = str(Path(stepstream.__file__).resolve().parent.parent)


def start(app: Path, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``app`` with ``args``; ``env`` is added to the environment."""
    return subprocess.Popen(
        [sys.executable, str(app), *map(str, args)],
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    """Wait for ``proc``; its output, asserting it exited cleanly."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the app did not finish within {timeout}s: {out}")
    assert proc.returncode == 0, out
    return out


def kill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL ``proc`` (no cleanup of any kind); its output."""
    proc.kill()
    out, _ = proc.communicate(timeout=10)
    return out


def wait_for(
    check: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 60
) -> None:
    """Poll ``check`` until true; fail (with the process's output) if it exits or stalls."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the app exited before {what}: {out}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {kill(proc)}")
        time.sleep(0.01)


def lines(path: Path) -> list[str]:
    """The lines of ``path`` (none if it does not exist)."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
