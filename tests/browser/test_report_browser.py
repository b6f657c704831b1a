"""The HTML report in a real headless Chromium, offline: the DOM it builds and the pixels it paints.

Needs Debian's `chromium` (apt-get install chromium); skipped with a reason when it is absent.
No driver or extra Python package: Chromium's own --dump-dom and --screenshot switches.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import render_html
from harness.report.html import CSP
from harness.store.record import read_record
from tests.fake_record import HOSTILE, write_fake_record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium) - browser tests skipped"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium(tmp_path: Path, page: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class DomCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def dom_of(tmp_path: Path, page: Path) -> DomCollector:
    dom = chromium(tmp_path, page, "--dump-dom")
    assert "<body" in dom, "chromium printed no DOM"
    collector = DomCollector()
    collector.feed(dom)
    return collector


def png_pixels_vary(path: Path) -> int:
    """How many distinct byte values the PNG's decompressed scanlines hold (a blank page: a handful)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat)))


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    record = read_record(write_fake_record(root / "run", n_items=10, hostile=True))
    return render_html(record, root / "index.html")


def test_dom_has_sections_and_payloads_only_as_text(tmp_path: Path, hostile_page: Path) -> None:
    dom = dom_of(tmp_path, hostile_page)
    ids = {attrs.get("id") for _, attrs in dom.tags}
    assert {"headline", "kd", "explorer", "provenance", "notes", "suite-icl-arith"} <= ids
    assert [t for t, _ in dom.tags if t == "svg"], "the KD charts did not become SVG elements"
    # nothing the browser built from the page can run: no script/img elements, no on* handlers
    assert not [t for t, _ in dom.tags if t in ("script", "img", "iframe", "textarea", "object")]
    assert not [(t, k) for t, attrs in dom.tags for k in attrs if k.startswith("on")]
    text = "".join(dom.text)
    for payload in HOSTILE:
        assert payload in text, f"{payload!r} is not shown as text"


def test_detector_catches_a_live_payload(tmp_path: Path) -> None:
    """Control: the checks above do see an element injected by unescaped text.

    The page carries the report's CSP, which blocks the inline handler. (Without it the alert
    fires and blocks Chromium until the timeout: a live payload in the report would fail above too.)
    """
    page = tmp_path / "bad.html"
    head = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    page.write_text(f"<!DOCTYPE html><html><head>{head}</head><body><pre>{HOSTILE[1]}</pre></body></html>")
    dom = dom_of(tmp_path, page)
    assert [t for t, _ in dom.tags if t == "img"]
    assert [k for t, attrs in dom.tags for k in attrs if k == "onerror"]


@pytest.mark.parametrize("size", ["1280,1600", "390,844"], ids=["desktop", "phone"])
def test_screenshot_is_painted(tmp_path: Path, hostile_page: Path, size: str) -> None:
    shot = tmp_path / "shot.png"
    chromium(tmp_path, hostile_page, f"--window-size={size}", f"--screenshot={shot}")
    assert shot.stat().st_size > 20_000, "screenshot suspiciously small: a blank page?"
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == tuple(int(x) for x in size.split(","))
    assert png_pixels_vary(shot) > 64, "screenshot is (nearly) uniform: nothing was painted"
