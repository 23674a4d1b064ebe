"""The terminal is not the payload's to control.

Whatever a workflow (its events, results, errors, names) or a telemetry file holds, every
``stepstream`` command prints it as text: never as rich markup, with control characters
shown as escapes (``\\x1b``), and without a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.cli import main
from test_cli import IDS_LINE
from test_cli import flat
from test_cli import stepstream
from test_cli import tmux_run

NASTY = (
    "A\x1b[2J"  # CSI: clear the screen
    "\x1b]0;pwned\x07"  # OSC 0: set the window title
    "B\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\"  # OSC 8: a hyperlink
    "C\x1b[6n"  # DSR: ask the terminal to type the cursor position
    " [bold]b[/bold] [link=http://x]L[/link] [/x] expected one of [a, b]"  # rich markup
)
SHOWN = NASTY.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
CRAFTED_NAME = "W[/x]\x1b]0;t\x07[link=http://x]"
CRAFTED_SHOWN = "W[/x]\\x1b]0;t\\x07[link=http://x]"
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

WORKFLOWS = {
    "nasty.py": f"""
        from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step

        NASTY = {NASTY!r}


        class Tick(Event):
            msg: str


        class NastyStart(StartEvent):
            fail: bool = False


        class Nasty(Workflow):
            @step
            async def work(self, ctx: Context, ev: NastyStart) -> StopEvent:
                ctx.write_event_to_stream(Tick(msg=NASTY))
                ctx.write_event_to_stream(Tick(msg=NASTY))
                if ev.fail:
                    raise ValueError(NASTY)
                return StopEvent(result=NASTY)
        """,
    "crafted.py": f"""
        from stepstream import StartEvent, StopEvent, Workflow, step


        class Crafted(Workflow):
            @step
            async def work(self, ev: StartEvent) -> StopEvent:
                return StopEvent(result="ok")


        Crafted.__name__ = {CRAFTED_NAME!r}
        """,
    "ask.py": f"""
        from stepstream import (
            Context, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent, Workflow, step,
        )


        class Ask(Workflow):
            @step
            async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
                answer = await ctx.wait_for_event(
                    HumanResponseEvent, waiter_event=InputRequiredEvent(prefix={NASTY!r})
                )
                return StopEvent(result=f"hello {{answer.response}}")
        """,
    "surrogate.py": """
        from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


        class Tick(Event):
            msg: str


        class Surrogate(Workflow):
            @step
            async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
                ctx.write_event_to_stream(Tick(msg="a\\ud800b"))
                ctx.write_event_to_stream(Tick(msg="c\\ud800d"))
                return StopEvent(result="x\\ud800y")
        """,
    "bad_dump.py": """
        from typing import Any

        from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


        class Bad(Event):
            msg: str

            def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
                raise RuntimeError("no dump for you")


        class BadDump(Workflow):
            @step
            async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
                ctx.write_event_to_stream(Bad(msg="hi"))
                return StopEvent(result="done")
        """,
    "unprintable.py": """
        from stepstream import StartEvent, StopEvent, Workflow, step


        class Unprintable(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str for you")


        class Odd:
            def __repr__(self) -> str:
                raise RuntimeError("no repr for you")


        class Fails(Workflow):
            @step
            async def work(self, ev: StartEvent) -> StopEvent:
                if ev.get("fail"):
                    raise Unprintable()
                return StopEvent(result=Odd())
        """,
    "draw.py": """
        from stepstream import Event, StartEvent, StopEvent, Workflow, step

        Crafted = type(
            'X"]\\n    click step_work href "javascript:alert(1)"\\n    %%',
            (Event,),
            {"__module__": __name__},
        )


        class Draw(Workflow):
            @step
            async def work(self, ev: StartEvent) -> Crafted:
                return Crafted()

            @step
            async def done(self, ev: Crafted) -> StopEvent:
                return StopEvent()
        """,
}


def assert_clean(*outputs: str) -> None:
    """No raw control character and no traceback in any of ``outputs``."""
    for output in outputs:
        assert RAW_CONTROL.search(output) is None, ascii(output)
        assert "Traceback" not in output, output


@dataclass(frozen=True)
class Recorded:
    """A directory with the workflow files and two recorded runs of nasty.py.

    ``store`` is a copy of the telemetry directory as these two runs left it.
    """

    cwd: Path
    ok: Any
    failed: Any
    store: Path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Write the workflows, then run nasty.py once to the end and once into a failure."""
    cwd = tmp_path_factory.mktemp("terminal")
    for name, source in WORKFLOWS.items():
        (cwd / name).write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    ok = stepstream("run", "nasty.py", cwd=cwd)
    failed = stepstream("run", "nasty.py", "--input", "fail=true", cwd=cwd)
    store = cwd / "nasty-store"
    shutil.copytree(cwd / ".stepstream", store)
    return Recorded(cwd, ok, failed, store)


# -- stepstream run, piped ----------------------------------------------------------------


def test_run_prints_payloads_and_the_result_as_literal_text(recorded: Recorded) -> None:
    """Escape sequences and markup in events and the result show as text; nothing raw."""
    proc = recorded.ok
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert sum(line.endswith(f"Tick msg={NASTY!r}") for line in lines) == 2, proc.stdout
    assert f"Result: {SHOWN} run_id " in flat(proc.stdout), proc.stdout


def test_run_prints_a_failure_message_literally(recorded: Recorded) -> None:
    """A step error holding escapes and markup (`[/x]`) is printed as text, exit code 1."""
    proc = recorded.failed
    assert proc.returncode == 1, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert f"ValueError: {SHOWN}" in proc.stderr.splitlines(), proc.stderr
    assert IDS_LINE.search(proc.stderr), proc.stderr


def test_run_prompts_with_the_input_request_as_literal_text(recorded: Recorded) -> None:
    """The human-in-the-loop prompt shows escapes and markup as text."""
    proc = stepstream("run", "ask.py", cwd=recorded.cwd, stdin="Ada\n")
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert SHOWN in flat(proc.stdout), proc.stdout  # the prompt (events show a repr)
    assert "Result: hello Ada" in proc.stdout.splitlines()


def test_run_shows_lone_surrogates_as_escapes(recorded: Recorded) -> None:
    """Events and a result holding a lone surrogate print it as \\ud800, exit code 0."""
    proc = stepstream("run", "surrogate.py", cwd=recorded.cwd)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert "Result: x\\ud800y" in proc.stdout.splitlines(), proc.stdout


def test_run_shows_an_event_whose_model_dump_raises(recorded: Recorded) -> None:
    """An event that cannot be dumped prints its type and why; the run still succeeds."""
    proc = stepstream("run", "bad_dump.py", cwd=recorded.cwd)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert "Bad <fields cannot be shown: RuntimeError: no dump for you>" in proc.stdout
    assert "Result: done" in proc.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "code", "shown"),
    [
        pytest.param((), 0, "Result: <Odd that cannot be shown: RuntimeError>", id="result"),
        pytest.param(
            ("--input", "fail=true"),
            1,
            "Unprintable: <unprintable Unprintable: str() raised RuntimeError: no str for you>",
            id="error",
        ),
    ],
)
def test_run_survives_a_result_or_error_that_cannot_be_printed(
    recorded: Recorded, args: tuple[str, ...], code: int, shown: str
) -> None:
    """A result whose repr raises, or an error whose str raises, is named, not a traceback."""
    proc = stepstream("run", "unprintable.py", *args, cwd=recorded.cwd)
    assert proc.returncode == code, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert shown in (proc.stdout + proc.stderr).splitlines()


def test_run_names_a_telemetry_dir_holding_markup_literally(recorded: Recorded) -> None:
    """A --telemetry-dir with `[/x]` in its name is printed as given."""
    proc = stepstream("run", "crafted.py", "--telemetry-dir", "tel[/x]", cwd=recorded.cwd)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert "telemetry: tel[/x]" in proc.stderr.splitlines()


def test_run_prints_a_start_input_error_literally(recorded: Recorded) -> None:
    """Start input the start event rejects is reported as text, whatever it holds."""
    proc = stepstream("run", "nasty.py", "--input", "[/x]\x1b]0;t\x07=1", cwd=recorded.cwd)
    assert proc.returncode == 2, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: Nasty.run(): "), proc.stderr
    assert "'[/x]\\x1b]0;t\\x07'" in proc.stderr, proc.stderr


def test_run_names_an_import_error_that_cannot_be_printed(recorded: Recorded) -> None:
    """A file raising an exception whose str() raises at import gives one error line."""
    source = "class Weird(Exception):\n    def __str__(self):\n        raise RuntimeError\n"
    (recorded.cwd / "weird.py").write_text(source + "raise Weird()\n", encoding="utf-8")
    proc = stepstream("run", "weird.py", cwd=recorded.cwd)
    assert proc.returncode == 2, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    expected = (
        "error: cannot import weird.py: Weird: <unprintable Weird: str() raised RuntimeError>"
    )
    assert proc.stderr.splitlines() == [expected], proc.stderr


# -- stepstream run, live in a terminal --------------------------------------------------


def test_live_view_prints_escapes_and_markup_as_text(recorded: Recorded) -> None:
    """On a terminal, the live rows, text and result show the payload; the title is kept."""
    with tmux_run(recorded.cwd, "run nasty.py") as pane:
        final = pane.poll(r"^exit=\d+$")
        title = pane.tmux("display-message", "-p", "-t", pane.name, "#{pane_title}")
    assert re.search(r"^exit=0$", final, re.MULTILINE), final
    assert "pwned" not in title
    screen = flat(final)
    assert SHOWN + SHOWN in screen, final  # the two text deltas, run together
    assert f"Result: {SHOWN}" in screen, final


def test_live_view_shows_lone_surrogates_as_escapes(recorded: Recorded) -> None:
    """On a terminal, text deltas and a result holding a lone surrogate end cleanly."""
    with tmux_run(recorded.cwd, "run surrogate.py") as pane:
        final = pane.poll(r"^exit=\d+$")
    assert re.search(r"^exit=0$", final, re.MULTILINE), final
    assert "a\\ud800bc\\ud800d" in final
    assert re.search(r"^Result: x\\ud800y$", final, re.MULTILINE), final


def test_live_view_prompt_and_failure_print_literally(recorded: Recorded) -> None:
    """On a terminal, the input prompt and a step error show escapes and markup as text."""
    with tmux_run(recorded.cwd, "run ask.py") as pane:
        prompt = pane.poll(r"expected one of \[a, b\]")  # event lines are cut before it
        pane.send_keys("Ada", "Enter")
        final = pane.poll(r"^exit=\d+$")
    assert SHOWN in flat(prompt), prompt
    assert re.search(r"^exit=0$", final, re.MULTILINE), final
    with tmux_run(recorded.cwd, "run nasty.py --input fail=true") as pane:
        final = pane.poll(r"^exit=\d+$")
    assert re.search(r"^exit=1$", final, re.MULTILINE), final
    assert f"ValueError: {SHOWN}" in flat(final), final


# -- reading the store -------------------------------------------------------------------


def test_logs_print_payloads_and_errors_literally(recorded: Recorded) -> None:
    """`logs` shows the error fields with escapes made visible (OSC too), one line each."""
    proc = stepstream("logs", "--telemetry-dir", str(recorded.store), cwd=recorded.cwd)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    failed = [line for line in proc.stdout.splitlines() if "step_failed" in line]
    assert len(failed) == 1, proc.stdout
    assert failed[0].endswith(f"error_type=ValueError error={SHOWN}"), failed[0]


def test_traces_show_prints_the_failure_literally(recorded: Recorded) -> None:
    """`traces show` of the failed run shows the exception text with visible escapes."""
    run_id = IDS_LINE.search(recorded.failed.stderr)
    assert run_id is not None
    proc = stepstream("traces", "show", run_id["run_id"], cwd=recorded.cwd)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert "✗ ValueError: A\\x1b[2J\\x1b]0;" in proc.stdout, proc.stdout


def test_a_workflow_name_holding_markup_is_printed_literally(recorded: Recorded) -> None:
    """A workflow class named with markup and escapes shows as text in run, traces and logs."""
    tel = "--telemetry-dir", "crafted-tel"
    run = stepstream("run", "crafted.py", *tel, cwd=recorded.cwd)
    assert run.returncode == 0, run.stderr
    listed = stepstream("traces", "list", *tel, cwd=recorded.cwd)
    shown = stepstream("traces", "show", "last", *tel, cwd=recorded.cwd)
    logs = stepstream("logs", *tel, cwd=recorded.cwd)
    for proc in (listed, shown, logs):
        assert proc.returncode == 0, proc.stderr
        assert_clean(proc.stdout, proc.stderr)
        assert CRAFTED_SHOWN in proc.stdout, proc.stdout
    assert shown.stdout.startswith(f"{CRAFTED_SHOWN}  run_id "), shown.stdout


@pytest.fixture
def crafted_store(recorded: Recorded, tmp_path: Path) -> Path:
    """A copy of the recorded trace and log files, the workflow renamed by hand.

    The new name holds markup, an OSC sequence and a lone surrogate (valid JSON: \\ud800),
    and the run's status is markup too.
    """
    store = tmp_path / "store"
    store.mkdir()
    name = json.dumps("[/x]\x1b]0;t\x07\ud800[link=http://x]L")[1:-1]
    status = json.dumps("[red]ok[/x]")[1:-1]
    for file in ("traces.jsonl", "logs.jsonl"):
        text = (recorded.store / file).read_text(encoding="utf-8")
        text = text.replace('"Nasty', f'"{name}').replace('"ok"', f'"{status}"')
        (store / file).write_text(text, encoding="utf-8")
    return store


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("traces", "list"), id="traces-list"),
        pytest.param(("traces", "show", "last"), id="traces-show"),
        pytest.param(("traces", "show", "last", "--attributes"), id="traces-show-attributes"),
        pytest.param(("logs",), id="logs"),
    ],
)
def test_a_crafted_store_file_is_printed_literally(
    crafted_store: Path, args: tuple[str, ...]
) -> None:
    """Markup, escapes and a lone surrogate in a trace or log file print as text."""
    proc = stepstream(*args, "--telemetry-dir", str(crafted_store), cwd=crafted_store)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert "[/x]\\x1b]0;t\\x07\\ud800[link=http://x]L" in proc.stdout, proc.stdout


def test_traces_export_of_a_crafted_store_writes_the_page(crafted_store: Path) -> None:
    """`traces export --html` of a run with a lone surrogate in its name writes the page."""
    page = crafted_store / "run[link=x]\x1b]0;t\x07.html"
    proc = stepstream(
        "traces", "export", "last", "--html", str(page), "--telemetry-dir", str(crafted_store),
        cwd=crafted_store,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert f"wrote {crafted_store}/run[link=x]\\x1b]0;t\\x07.html" in flat(proc.stderr)
    html = page.read_text(encoding="utf-8")
    assert "[/x]\\x1b]0;t\\x07\\ud800[link=http://x]L" in html


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("traces", "show", "[/x]\x1b[2J"), id="unknown-run"),
        pytest.param(("traces", "show", "last", "--events", "[/x]\x1b]0;t\x07"), id="bad-events"),
        pytest.param(("logs", "--since", "[/x]\x1b[6n"), id="bad-since"),
    ],
)
def test_error_messages_quote_the_input_literally(
    recorded: Recorded, args: tuple[str, ...]
) -> None:
    """An error quoting what the user typed shows it as text, exit code 2."""
    proc = stepstream(*args, cwd=recorded.cwd)
    assert proc.returncode == 2, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "[/x]\\x1b" in proc.stderr, proc.stderr


# -- stepstream draw ---------------------------------------------------------------------

MERMAID_LINE = re.compile(
    r'^    (?:\w+(?:\["[^"]*"\]|\(\["[^"]*"\]\)|\{\{"human"\}\})|\w+ --> \w+)$'
)


def test_draw_mermaid_escapes_names(recorded: Recorded) -> None:
    """A crafted event class name stays inside its node label; it adds no Mermaid line."""
    proc = stepstream("draw", "draw.py", "--mermaid", cwd=recorded.cwd)
    assert proc.returncode == 0, proc.stderr
    assert_clean(proc.stdout, proc.stderr)
    header, *lines = proc.stdout.splitlines()
    assert header == "flowchart LR"
    assert all(MERMAID_LINE.match(line) for line in lines), proc.stdout
    assert len(lines) == 3 + 2 + 4  # three event nodes, two step nodes, four edges
    quoted = [m[1] for line in lines if (m := re.search(r'"(.*)"', line))]
    labels = [re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label) for label in quoted]
    assert 'X"]\n    click step_work href "javascript:alert(1)"\n    %%' in labels, labels


# -- Workflow(verbose=True) --------------------------------------------------------------


class Tock(Event):
    msg: str


class Loud(Workflow):
    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Tock(msg=NASTY))
        raise ValueError(NASTY)


@pytest.mark.asyncio
async def test_verbose_lines_show_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    """verbose=True prints a step error holding escape sequences with the escapes visible."""
    handler = Loud(verbose=True).run()
    with pytest.raises(ValueError, match="expected one of"):
        await handler
    err = capsys.readouterr().err
    assert_clean(err)
    assert f"[stepstream] step work error: ValueError: {SHOWN}" in err.splitlines(), err


# -- the rule itself, over any text ------------------------------------------------------

UNSAFE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[ntr])")
SPECIAL = "\x00\x07\x08\t\n\r\x1b\x7f\x85\x9b\ud800\udfff\u2028\u202e\u2066[]/"


def unescape(text: str) -> str:
    """Undo the escapes the CLI shows (``\\x1b``, ``\\ud800``, ``\\n``, ...)."""

    def one(match: re.Match[str]) -> str:
        code = match[1]
        return {"n": "\n", "t": "\t", "r": "\r"}.get(code) or chr(int(code[1:], 16))

    return ESCAPE.sub(one, text)


def logs_output(value: str) -> str:
    """What `stepstream logs` prints for a log line whose field ``k`` is ``value``."""
    with tempfile.TemporaryDirectory() as directory:
        line = {"timestamp": "2025-01-01T00:00:00.000000Z", "level": "info", "event": "x"}
        line["k"] = value
        Path(directory, "logs.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
        result = CliRunner().invoke(main, ["logs", "--telemetry-dir", directory])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@settings(max_examples=150, deadline=None)
@given(
    st.text(
        st.one_of(
            st.characters(exclude_categories=(), exclude_characters="\\"),
            st.sampled_from(SPECIAL),
        )
    )
)
def test_logs_show_any_text_visibly(text: str) -> None:
    """Any field value prints on one line, holds no control character, and reads back."""
    output = logs_output(f"<{text}>")
    assert output.endswith("\n")
    line = output[:-1]
    assert "\n" not in line
    unsafe = [c for c in line if unicodedata.category(c) in UNSAFE_CATEGORIES]
    assert unsafe == [], ascii(line)
    assert not BIDI_CONTROLS & set(line), ascii(line)
    shown = line.split(" k=<", 1)[1]
    assert shown.endswith(">")
    assert unescape(shown[:-1]) == text
    if not (set(text) & (BIDI_CONTROLS | {"\n", "\t", "\r"})) and all(
        unicodedata.category(c) not in UNSAFE_CATEGORIES for c in text
    ):
        assert shown[:-1] == text  # safe text is printed unchanged
