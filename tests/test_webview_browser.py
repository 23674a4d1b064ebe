"""The live web view (``GET /``) in a real headless Chromium against a real uvicorn server.

Chromium is driven through chromedriver (tests/_webdriver.py); the server runs in a
thread of this process on 127.0.0.1 (tests/_live_server.py). Every test ends by reading
the browser's console: the page must log no error. Set ``STEPSTREAM_UPDATE_DOCS=1`` to
write the screenshot of a finished run to docs/webview.png.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import _webview_app as app
from _live_server import serve_in_thread
from _webdriver import CHROMEDRIVER
from _webdriver import CHROMIUM
from _webdriver import Browser
from _webdriver import browser
from stepstream.server import WorkflowServer

DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium or chromedriver is not installed (apt-get install chromium chromium-driver)",
)

ROWS = "return [...document.querySelectorAll('#events tr')].map(r => Number(r.dataset.seq))"
STATUS = "return document.querySelector('#run-meta .badge')?.textContent"
TEXT = "return [...document.querySelectorAll('#output pre')].map(p => p.textContent)"


def served() -> WorkflowServer:
    return WorkflowServer({"writing": app.writing, "hostile": app.hostile, "asking": app.asking})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A server for the module."""
    with serve_in_thread(served()) as base:
        yield base


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One Chromium for the module (each test opens its own page)."""
    with browser(tmp_path_factory.mktemp("chromium")) as opened:
        yield opened


def errors(page: Browser) -> list[str]:
    """The console's errors and warnings since the last call."""
    return [e["message"] for e in page.console() if e["level"] in {"SEVERE", "WARNING"}]


def start_from_page(page: Browser, url: str, workflow: str, start: str) -> str:
    """Open the home page, put ``start`` in the workflow's start box, click Run: the handler id."""
    page.get(f"{url}/")
    page.wait_for("return document.querySelectorAll('#workflows .wf').length === 3")
    index = ["writing", "hostile", "asking"].index(workflow) + 1
    box = f"#workflows .wf:nth-child({index}) textarea"
    page.execute("document.querySelector(arguments[0]).value = ''", box)
    page.type(box, start)
    page.click(f"#workflows .wf:nth-child({index}) button")
    found: str = page.wait_for(
        "return location.hash.startsWith('#run/') && decodeURIComponent(location.hash.slice(5))"
    )
    return found


def test_a_run_started_from_the_page_updates_live(page: Browser, url: str, tmp_path: Path) -> None:
    """Step rows, text and the waterfall change while the run goes; then it shows completed."""
    start_from_page(page, url, "writing", '{"topic": "whales", "words": 16, "delay": 0.12}')
    page.wait_for("return document.querySelectorAll('#events tr').length >= 4")
    during = page.execute(
        "return {status: document.querySelector('#run-meta .badge').textContent,"
        " write: document.querySelector('tr[data-step=write]').textContent,"
        " plan: document.querySelector('tr[data-step=plan]').textContent,"
        " rows: document.querySelectorAll('#events tr').length,"
        " bars: document.querySelectorAll('#waterfall rect').length}"
    )
    assert during["status"] == "running"
    assert "running" in during["write"]
    assert "done in" in during["plan"]
    assert 4 <= during["rows"] < 19
    assert during["bars"] == 3  # the run, plan, write
    page.wait_for("return document.body.dataset.runDone === 'true'")
    assert page.execute(STATUS) == "completed"
    assert page.execute(ROWS) == list(range(19))  # Note, 16 deltas, Note, StopEvent
    assert page.execute(TEXT) == ["".join(f"whales{i} " for i in range(16))]
    steps = page.execute("return [...document.querySelectorAll('#steps tr')].map(r => r.className)")
    assert steps == ["ok", "ok", "ok"]
    assert page.execute("return document.querySelectorAll('#waterfall rect').length") == 4
    meta = page.execute("return document.getElementById('run-meta').textContent")
    assert "16 words about it" in meta
    shot = page.screenshot()
    assert shot.startswith(b"\x89PNG")
    (tmp_path / "webview.png").write_bytes(shot)
    if os.environ.get("STEPSTREAM_UPDATE_DOCS"):
        shutil.copy(tmp_path / "webview.png", DOCS / "webview.png")
    assert errors(page) == []


def test_reload_resumes_with_no_gap_and_no_duplicate(page: Browser, url: str) -> None:
    """Reloaded mid-run, the page shows every event once, in order, and goes on live."""
    start = {"start_event": {"topic": "orcas", "words": 30, "delay": 0.08}}
    handler_id = httpx.post(f"{url}/workflows/writing/run-nowait", json=start).json()["handler_id"]
    page.get(f"{url}/#run/{handler_id}")
    page.wait_for("return document.querySelectorAll('#events tr').length >= 6")
    page.refresh()
    resumed = page.wait_for(
        "const rows = [...document.querySelectorAll('#events tr')].map(r => Number(r.dataset.seq));"
        " return rows.length >= 2 && {rows, status: document.querySelector('#run-meta .badge')"
        ".textContent}"
    )
    assert resumed["status"] == "running"
    assert resumed["rows"] == list(range(len(resumed["rows"])))
    page.wait_for("return document.body.dataset.runDone === 'true'")
    assert page.execute(ROWS) == list(range(33))
    assert page.execute(TEXT) == ["".join(f"orcas{i} " for i in range(30))]
    assert page.execute(STATUS) == "completed"
    assert errors(page) == []


def test_the_page_answers_an_input_prompt(page: Browser, url: str) -> None:
    """The InputRequiredEvent's prompt shows (again after a reload); the answer ends the run."""
    start_from_page(page, url, "asking", "{}")
    page.wait_for("return !document.getElementById('prompt').classList.contains('hidden')")
    page.refresh()
    shown = page.wait_for(
        "return !document.getElementById('prompt').classList.contains('hidden') &&"
        " document.getElementById('prompt-text').textContent"
    )
    assert shown == "Your name? "
    assert "waiting for HumanResponseEvent" in page.execute(
        "return document.querySelector('tr[data-step=ask]').textContent"
    )
    page.type("#prompt-input", "Ann")
    page.click("#prompt-form button")
    page.wait_for("return document.body.dataset.runDone === 'true'")
    assert page.execute(STATUS) == "completed"
    assert page.execute("return document.getElementById('prompt').classList.contains('hidden')")
    assert "hello Ann" in page.execute("return document.getElementById('run-meta').textContent")
    assert errors(page) == []


def test_payloads_are_shown_as_text(page: Browser, url: str) -> None:
    """Markup and control characters from a run are shown as text, never run or parsed."""
    start_from_page(page, url, "hostile", "{}")
    page.wait_for("return document.body.dataset.runDone === 'true'")
    assert page.execute("return document.title") == "stepstream"
    assert page.execute("return document.querySelectorAll('main img, main td td').length") == 0
    text = page.execute(TEXT)
    assert text == ["<img src=x onerror=\"document.title='pwned'\">\\x1b[31m\\u202e</td>"]
    line = page.execute("return document.querySelector('#output .line').textContent")
    assert "\\u001b[31m\\u202e" in line  # JSON escapes ESC itself
    assert "\x1b" not in page.execute("return document.body.textContent")
    assert errors(page) == []


def test_with_a_token_the_page_asks_for_it(page: Browser) -> None:
    """Behind a token the page asks for it (the 401 says why) and then lists the workflows."""
    with serve_in_thread(WorkflowServer({"writing": app.writing}, token="s3cret")) as base:  # noqa: S106
        page.get(f"{base}/")
        why = page.wait_for(
            "return !document.getElementById('token').classList.contains('hidden') &&"
            " document.getElementById('token-why').textContent"
        )
        assert why.startswith("missing bearer token")
        page.type("#token-input", "s3cret")
        page.click("#token-form button")
        page.wait_for("return document.querySelectorAll('#workflows .wf').length === 1")
        page.execute("sessionStorage.clear()")
    # The refused request is the only console line: the browser logs every 401.
    logged = errors(page)
    assert logged
    assert all("401" in line for line in logged)
