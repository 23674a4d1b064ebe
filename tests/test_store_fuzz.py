"""Fuzz the telemetry reader: random damage to real store files never makes a traceback.

A module fixture records real runs with ``stepstream run``; each seeded case copies them,
damages them at random (JSON values of the wrong type or out of range, deleted keys,
parent loops, duplicate ids, truncated lines, flipped and invalid UTF-8 bytes, huge and
deeply nested lines, garbage, rotated files, a directory or a link in place of a file),
then runs every reading command in-process with click's CliRunner: each must exit 0, or
2 with one ``error:`` line, within 10 s and without a traceback. A sample also runs as a
subprocess under an address-space limit, with a FIFO and a link to /dev/zero added.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from _helpers import stepstream_cli
from _helpers import without_otel
from stepstream.cli import main

REPO = Path(__file__).resolve().parent.parent
SEEDS = range(48)
MAX_LINE = 300_000  # STEPSTREAM_MAX_LINE_BYTES for the fuzz: huge lines are cheap to make

FLOW = """
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Part(Event):
    n: int


class Done(Event):
    n: int


class Flow(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Part:
        for n in range(3):
            ctx.write_event_to_stream(Part(n=n))
        for n in range(3):
            ctx.send_event(Part(n=n))
        return None

    @step(num_workers=3)
    async def work(self, ctx: Context, ev: Part) -> Done:
        return Done(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        got = ctx.collect_events(ev, [Done] * 3)
        if got is None:
            return None
        return StopEvent(result=sum(e.n for e in got))
"""

NASTY: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    1.5,
    1e308,
    "",
    "0",
    "-5",
    "9" * 40,
    "x" * 50_000,
    "[/]",
    "[bold red]markup",
    "\x1b[31mred\x1b[0m",
    "nul\x00byte",
    "\ud800",
    [],
    {},
    [1, [2, [3]]],
    {"a": {"b": 1}},
    {"stringValue": 5},
    {"intValue": "x"},
    {"intValue": "1" * 30},
    {"arrayValue": {"values": "abc"}},
    {"doubleValue": "NaN"},
    {"boolValue": "yes"},
]


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node of a JSON value."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nodes(item, (*path, index))
    return found


def spans_in(batch: Any) -> list[dict[str, Any]]:
    """The span objects of a trace line (whatever shape damage left it in)."""
    out: list[dict[str, Any]] = []
    for path in nodes(batch):
        if len(path) >= 2 and path[-2] == "spans":
            item = get(batch, path)
            if isinstance(item, dict):
                out.append(item)
    return out


def get(value: Any, path: tuple[Any, ...]) -> Any:
    """The node at ``path``."""
    for step in path:
        value = value[step]
    return value


def damage_json(value: Any, rng: random.Random) -> Any:
    """``value`` with one random structural change."""
    paths = nodes(value)
    path = rng.choice(paths)
    choice = rng.random()
    if not path or choice < 0.5:
        replacement = rng.choice(NASTY) if rng.random() < 0.9 else nested(rng.choice([40, 600]))
        if not path:
            return replacement
        get(value, path[:-1])[path[-1]] = replacement
    elif choice < 0.75:
        parent = get(value, path[:-1])
        del parent[path[-1]]
    else:
        parent = get(value, path[:-1])
        parent[path[-1]] = [parent[path[-1]]]
    return value


def damage_spans(batch: Any, rng: random.Random) -> None:
    """Parent loops, duplicate ids, nonsense times between the spans of one line."""
    spans = spans_in(batch)
    if not spans:
        return
    ids = [s.get("spanId") for s in spans] + ["ffffffffffffffff"]
    target = rng.choice(spans)
    choice = rng.random()
    if choice < 0.4:
        target["parentSpanId"] = rng.choice(ids)  # itself, often enough: a loop
    elif choice < 0.6:
        spans[0].setdefault("parentSpanId", target.get("spanId"))
        target["parentSpanId"] = spans[0].get("spanId")
    elif choice < 0.8:
        target["spanId"] = rng.choice(ids)
    else:
        target["endTimeUnixNano"] = "0"


def damage_bytes(line: bytes, rng: random.Random) -> bytes:
    """``line`` with its bytes damaged: cut, flipped, invalid UTF-8, split, blown up."""
    choice = rng.random()
    if choice < 0.25 and line:
        return line[: rng.randrange(len(line))]
    if choice < 0.5 and line:
        data = bytearray(line)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if choice < 0.65:
        at = rng.randrange(len(line) + 1)
        return line[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\x00", b"\n", b"\r"]) + line[at:]
    if choice < 0.8:
        return b'{"pad": "' + b"z" * (MAX_LINE + rng.randrange(1000)) + b'"}'
    if choice < 0.9:
        return b"[" * 5000 + b"]" * 5000
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))


def damage_file(lines: list[bytes], rng: random.Random, trace: bool) -> list[bytes]:
    """A few damaged lines among the good ones."""
    out = list(lines)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        index = rng.randrange(len(out))
        if rng.random() < 0.6:
            try:
                value = json.loads(out[index])
            except ValueError:
                continue
            if trace and rng.random() < 0.5:
                damage_spans(value, rng)
            else:
                value = damage_json(value, rng)
            out[index] = json.dumps(value).encode()
        else:
            out[index] = damage_bytes(out[index], rng)
    if rng.random() < 0.2:
        out.append(out[-1][: len(out[-1]) // 2])  # a process killed while writing
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A telemetry directory with real runs: the streaming example and a fan-out/fan-in."""
    root = tmp_path_factory.mktemp("recorded")
    (root / "flow.py").write_text(FLOW, encoding="utf-8")
    for target in (str(REPO / "examples" / "streaming.py"), "flow.py"):
        proc = stepstream_cli("run", target, "--telemetry-dir", "tele", cwd=root)
        assert proc.returncode == 0, proc.stderr
    return root / "tele"


def make_case(recorded: Path, target: Path, seed: int) -> None:
    """Copy ``recorded`` to ``target`` and damage it as ``seed`` says."""
    rng = random.Random(seed)  # noqa: S311 - reproducible damage, not secrets
    shutil.copytree(recorded, target)
    for name, trace in (("traces.jsonl", True), ("logs.jsonl", False)):
        path = target / name
        lines = path.read_bytes().splitlines()
        path.write_bytes(b"\n".join(damage_file(lines, rng, trace)) + b"\n")
        if rng.random() < 0.3:  # a rotated file, damaged too
            stem = name.split(".")[0]
            rotated = target / f"{stem}.{rng.randint(1, 3)}.jsonl"
            rotated.write_bytes(b"\n".join(damage_file(lines, rng, trace)) + b"\n")
        if rng.random() < 0.06:
            path.unlink()
            if rng.random() < 0.5:
                path.mkdir()
            else:
                path.symlink_to(recorded / name)


def commands(case: Path) -> list[list[str]]:
    """Every reading command, on ``case``."""
    html = str(case.parent / f"{case.name}.html")
    return [
        ["traces", "list"],
        ["traces", "list", "--status", "ok", "--limit", "3"],
        ["traces", "show", "last", "--events", "all", "--attributes"],
        ["traces", "show", "last", "--json"],
        ["traces", "export", "last", "--html", html],
        ["logs"],
        ["logs", "--json", "--since", "1d", "--level", "info"],
    ]


def check(args: list[str], exit_code: int, stderr: str, seconds: float) -> None:
    """An acceptable outcome: exit 0, or 2 with an error line; no traceback; in time."""
    assert seconds < 10, (args, seconds)
    assert "Traceback" not in stderr, (args, stderr)
    assert exit_code in {0, 2}, (args, exit_code, stderr)
    if exit_code == 2:
        assert stderr.count("error: ") == 1, (args, stderr)


@pytest.mark.parametrize("seed", SEEDS)
def test_damaged_store_never_breaks_a_reading_command(
    recorded: Path, tmp_path: Path, seed: int
) -> None:
    """Every reading command ends in time with exit 0 or 2 and no traceback."""
    case = tmp_path / "tele"
    make_case(recorded, case, seed)
    runner = CliRunner(env={"STEPSTREAM_MAX_LINE_BYTES": str(MAX_LINE), "COLUMNS": "120"})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for args in commands(case):
        started = time.monotonic()
        result = runner.invoke(main, [*args, "--telemetry-dir", str(case)])
        elapsed = time.monotonic() - started
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError((seed, args, result.stderr)) from result.exception
        check(args, result.exit_code, result.stderr, elapsed)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024, grown_kib


@pytest.mark.parametrize("seed", SEEDS[::24])
def test_damaged_store_as_a_subprocess_under_a_memory_limit(
    recorded: Path, tmp_path: Path, seed: int
) -> None:
    """As a process of its own (1 GiB of address space), with a FIFO and /dev/zero too."""
    case = tmp_path / "tele"
    make_case(recorded, case, seed)
    (case / "traces.3.jsonl").unlink(missing_ok=True)
    os.mkfifo(case / "traces.3.jsonl")
    (case / "logs.4.jsonl").symlink_to("/dev/zero")
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from stepstream.cli import main\n"
        "main()\n"
    )
    env = without_otel({"STEPSTREAM_MAX_LINE_BYTES": str(MAX_LINE), "NO_COLOR": "1"})
    for args in commands(case):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code, *args, "--telemetry-dir", str(case)],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            timeout=30,
            check=False,
        )
        check(args, proc.returncode, proc.stderr, time.monotonic() - started)
        assert proc.returncode == 2, (args, proc.stderr)  # the FIFO or the link is refused
