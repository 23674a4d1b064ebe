"""``stepstream run --server`` and ``stepstream watch``: the live view of a run on a server.

A real ``stepstream serve`` process on 127.0.0.1 serves tests/_webview_app.py; the client
commands run as subprocesses, with plain output through a pipe and the live view in a
real terminal (tmux).
"""

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _helpers import run_command
from _helpers import without_otel
from _live_server import ServeProcess
from _live_server import serve_process
from test_cli import SPINNER
from test_cli import tmux_run

APP = Path(__file__).resolve().parent / "_webview_app.py"
LINE = re.compile(r"^ *\d+\.\d+s -\s+(.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """A ``stepstream serve`` process for the module."""
    with serve_process(target=APP, cwd=tmp_path_factory.mktemp("serve")) as process:
        yield process


def cli(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``stepstream ARGS`` with plain output (stdout is a pipe), ``stdin`` as its input."""
    env = without_otel({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    return run_command(sys.executable, "-m", "stepstream", *args, cwd=cwd, env=env, stdin=stdin)


def test_run_on_a_server_prints_each_event_and_the_result(
    server: ServeProcess, tmp_path: Path
) -> None:
    """`run --server URL NAME k=v` starts the run there and prints its events as they come."""
    proc = cli("run", "--server", server.url, "writing", "words=4", "delay=0.01", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert LINE.findall(proc.stdout) == [
        "Note label='planning whales' size=4",
        *(f"TextDelta delta='whales{i} '" for i in range(4)),
        "Note label='reviewed' size=32",
        "StopEvent result='4 words about it'",
    ]
    assert "Result: 4 words about it" in proc.stdout
    handler_id = re.search(r"^handler: (\S+)$", proc.stderr, re.MULTILINE)
    assert handler_id is not None, proc.stderr
    again = cli("watch", server.url, handler_id.group(1), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert LINE.findall(again.stdout) == LINE.findall(proc.stdout)  # a finished run replays


def test_run_on_a_server_answers_a_prompt_from_stdin(server: ServeProcess, tmp_path: Path) -> None:
    """An InputRequiredEvent is asked on the terminal; the answer is sent and ends the run."""
    proc = cli("run", "--server", server.url, "asking", cwd=tmp_path, stdin="Ann\n")
    assert proc.returncode == 0, proc.stderr
    assert "Your name?" in proc.stdout
    assert "Result: hello Ann" in proc.stdout


def test_watch_shows_markup_and_control_characters_as_text(
    server: ServeProcess, tmp_path: Path
) -> None:
    """What a run sent is printed with its control characters escaped, markup as written."""
    proc = cli("run", "--server", server.url, "hostile", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    assert "\u202e" not in proc.stdout
    assert "<img src=x onerror=\"document.title='pwned'\">\\x1b[31m\\u202e</td>" in proc.stdout


def test_watch_in_a_terminal_shows_steps_and_text_live(
    server: ServeProcess, tmp_path: Path
) -> None:
    """On a terminal, `watch` draws the step rows (spinner), the running text, then the result."""
    start = {"start_event": {"topic": "seals", "words": 25, "delay": 0.1}}
    handler = httpx.post(f"{server.url}/workflows/writing/run-nowait", json=start).json()
    with tmux_run(tmp_path, f"watch {shlex.quote(server.url)} {handler['handler_id']}") as pane:
        mid = pane.poll(r"write\s+running")
        assert re.search(rf"^{SPINNER}\s+write\s+running$", mid, re.MULTILINE), mid
        assert re.search(r"^✓\s+plan\s+done in [\d.]+ ms$", mid, re.MULTILINE), mid
        assert re.search(r"seals0 seals1", mid), mid
        done = pane.poll(r"^exit=0$")
    assert re.search(r"^✓\s+review\s+done in", done, re.MULTILINE), done
    assert " ".join(f"seals{i}" for i in range(25)) in " ".join(done.split())
    assert "Result: 25 words about it" in done


def test_watch_in_a_terminal_asks_the_prompt(server: ServeProcess, tmp_path: Path) -> None:
    """A step waiting for a human shows as waiting; the prompt's answer typed in ends the run."""
    handler = httpx.post(f"{server.url}/workflows/asking/run-nowait", json={}).json()
    with tmux_run(tmp_path, f"watch {shlex.quote(server.url)} {handler['handler_id']}") as pane:
        pane.poll(r"^Your name\?")  # the prompt itself, not the event's line in the view
        pane.send_keys("Bo", "Enter")
        done = pane.poll(r"^exit=0$")
    assert "Result: hello Bo" in done


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("watch", "{url}", "nope"),
            "error: the server at {url} answered 404: Handler not found: no handler 'nope' on "
            "this server",
            id="unknown-handler",
        ),
        pytest.param(
            ("run", "--server", "{url}", "nope"),
            "error: the server at {url} answered 404: Workflow not found: no workflow is served "
            "as 'nope' (served: asking, hostile, writing)",
            id="unknown-workflow",
        ),
        pytest.param(
            ("watch", "http://127.0.0.1:9", "nope"),
            "error: cannot reach a stepstream server at http://127.0.0.1:9: ",
            id="nothing-listens",
        ),
        pytest.param(
            ("watch", "{url}x", "nope"),
            "error: URL '{url}x' is not valid: ",
            id="bad-port",
        ),
        pytest.param(
            ("watch", "localhost:8000", "nope"),
            "error: URL must be an http:// or https:// URL, got 'localhost:8000'",
            id="not-http",
        ),
        pytest.param(
            ("run", "--server", "{url}", "writing", "words"),
            "error: KEY=VALUE argument 'words' is not key=value (the workflow comes first)",
            id="bad-pair",
        ),
    ],
)
def test_client_errors_are_one_clear_line(
    server: ServeProcess, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """A bad URL, an unknown handler or workflow, or bad input: `error: ...`, exit 2."""
    proc = cli(*(a.format(url=server.url) for a in args), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith(message.format(url=server.url)), proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_token_says_how_to_pass_one(tmp_path: Path) -> None:
    """Against a server with a token, a missing or wrong one says to pass --token."""
    with serve_process("--token", "s3cret", target=APP, cwd=tmp_path) as served:
        missing = cli("watch", served.url, "x", cwd=tmp_path)
        wrong = cli("watch", served.url, "x", "--token", "nope", cwd=tmp_path)
        right = cli("watch", served.url, "x", "--token", "s3cret", cwd=tmp_path)
    assert missing.stderr.startswith(
        f"error: the server at {served.url} refused the token: missing bearer token"
    ), missing.stderr
    assert "pass --token or set STEPSTREAM_SERVER_TOKEN" in " ".join(wrong.stderr.split())
    assert "wrong bearer token" in wrong.stderr
    assert "Handler not found" in right.stderr
