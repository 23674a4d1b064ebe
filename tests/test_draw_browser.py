"""The exported run page and ``stepstream draw``'s page, opened in a real headless Chromium.

Chromium runs from its command line with networking cut off (every host name resolves to
nothing), once to take a screenshot and once to dump the DOM after rendering, with the
page's console written to stderr. The PNG is decoded with the standard library.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from _helpers import EXAMPLES
from _helpers import run_command
from _helpers import stepstream_cli

EXAMPLE = EXAMPLES / "streaming.py"
STEPS = ("step_one", "step_two", "step_three")
WIDTH, HEIGHT = 1400, 1000
OK_GREEN = (0x16, 0xA3, 0x4A)  # the timeline's colour for status ok
STEP_BLUE = (0xDB, 0xEA, 0xFE)  # drawing.py's fill for a step box
CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium chromium-driver)",
)


def chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium with no network, in ``mode`` (screenshot or DOM)."""
    assert CHROMIUM is not None
    return run_command(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        *mode,
        page.as_uri(),
        timeout=120,
    )


def console_messages(stderr: str) -> list[str]:
    """Lines of Chromium's log that come from a page: console output and uncaught errors."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@dataclass(frozen=True)
class Rendered:
    """A page as Chromium rendered it: screenshot, DOM, and the page's console lines."""

    png: bytes
    dom: str
    console: list[str]


def render(page: Path, work: Path) -> Rendered:
    """Screenshot ``page`` and dump its rendered DOM, each in a fresh Chromium profile."""
    shot = work / f"{page.stem}.png"
    taken = chromium(page, work / "profile-shot", f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr
    dumped = chromium(page, work / "profile-dom", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr
    return Rendered(
        shot.read_bytes(), dumped.stdout, console_messages(taken.stderr + dumped.stderr)
    )


def _unfilter(line: bytearray, prev: bytes, kind: int, bpp: int) -> None:
    """Undo one PNG scanline filter in place (RFC 2083, section 6)."""
    if kind == 0:
        return
    if kind == 2:
        line[:] = bytes((x + y) & 255 for x, y in zip(line, prev, strict=True))
        return
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255


def png_pixels(data: bytes) -> tuple[int, int, set[tuple[int, int, int]]]:
    """Decode an 8-bit RGB or RGBA PNG: width, height and the set of its RGB colours."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += [body] if kind == b"IDAT" else []
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour_type, interlace) in {(8, 2, 0), (8, 6, 0)}, "unexpected PNG format"
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    prev, colours = bytes(stride), set[tuple[int, int, int]]()
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(line, prev, raw[start], bpp)
        colours.update(zip(line[0::bpp], line[1::bpp], line[2::bpp], strict=True))
        prev = bytes(line)
    return width, height, colours


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """The seed example's exported run page and its ``draw`` page, rendered once each."""
    work = tmp_path_factory.mktemp("browser")
    recorded = stepstream_cli("run", str(EXAMPLE), cwd=work)
    assert recorded.returncode == 0, recorded.stderr
    exported = stepstream_cli("traces", "export", "last", "--html", "timeline.html", cwd=work)
    assert exported.returncode == 0, exported.stderr
    drawn = stepstream_cli("draw", str(EXAMPLE), "-o", "flow.html", cwd=work)
    assert drawn.returncode == 0, drawn.stderr
    return {name: render(work / f"{name}.html", work) for name in ("timeline", "flow")}


@pytest.mark.parametrize(
    ("page", "least_colours", "colour"),
    [
        pytest.param("timeline", 50, OK_GREEN, id="run-page-shows-ok-green-bars"),
        pytest.param("flow", 20, STEP_BLUE, id="draw-page-shows-step-boxes"),
    ],
)
def test_screenshot_is_a_rendered_page(
    pages: dict[str, Rendered], page: str, least_colours: int, colour: tuple[int, int, int]
) -> None:
    """The run page's and the ``draw`` page's screenshots: full size, far from blank, coloured."""
    width, height, colours = png_pixels(pages[page].png)
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(colours) > least_colours
    assert colour in colours


def test_timeline_dom_has_the_steps_and_no_console_output(pages: dict[str, Rendered]) -> None:
    """The rendered run page holds every step, one bar per span, and logs nothing."""
    dom = pages["timeline"].dom
    for step in STEPS:
        assert f"run_step {step}" in dom
        assert f">{step}</text>" in dom  # its node in the observed graph
    assert dom.count('class="bar"') >= 1 + len(STEPS)  # the run span and the step spans
    assert "<svg" in dom
    assert pages["timeline"].console == []


def test_draw_dom_has_the_steps_and_no_console_output(pages: dict[str, Rendered]) -> None:
    """The rendered ``draw`` page names every step and event, and logs nothing."""
    dom = pages["flow"].dom
    for name in (*STEPS, "StartEvent", "FirstEvent", "SecondEvent", "StopEvent"):
        assert f">{name}</text>" in dom
    assert pages["flow"].console == []


def test_console_check_catches_a_page_that_logs_or_throws(tmp_path: Path) -> None:
    """The console check is live: a page that logs and throws is caught by it."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><p>x</p><script>console.error('boom'); missing_function();</script>",
        encoding="utf-8",
    )
    messages = console_messages(chromium(page, tmp_path / "profile", "--dump-dom").stderr)
    assert any('"boom"' in m for m in messages), messages
    assert any("Uncaught ReferenceError: missing_function" in m for m in messages), messages
