"""The history page (`harness history`) in a real headless Chromium: it loads offline without console
errors, shows every run's row and gate pill, draws its trend charts with the regressed points ringed
in red, marks the regressed cells, keeps its no-script promise (its CSP blocks an injected script) and
fits a phone's width.

The page has no script by design (history.py: a CSP forbids scripts and fetches), so its only moving
parts are the charts and tables; the store is the unit tests' three gated nights (no engines):
a baseline, an unchanged student (pass) and a damaged one (regression), its student labelled with a
script tag. The driver is the session's (tests/browser/conftest.py).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.report.history import REGRESSED, write_history
from tests.browser.conftest import load
from tests.browser.test_report_browser import _overflow, clean_load, js
from tests.unit.test_regress_history import EVIL, _store

pytestmark = pytest.mark.integration  # a real browser


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root, ids = _store(tmp_path_factory.mktemp("history"))
    return write_history(root), ids


def _red_pixels(png: bytes) -> int:
    """Pixels close to the regressed ring's colour in a screenshot."""
    from PIL import Image

    target = np.array([int(REGRESSED[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    return int((np.abs(pixels - target).sum(axis=-1) < 60).sum())


def test_history_page_renders_runs_and_verdicts(driver: Any, history: tuple[Path, list[str]]) -> None:
    from selenium.webdriver.common.by import By

    page, ids = history
    clean_load(driver, page)  # no console errors, no request but the page itself
    assert driver.title.startswith("Run history")
    pills = []
    for index, run_id in enumerate(ids):
        row = driver.find_element(By.ID, f"run-{run_id}")
        assert row.is_displayed()
        cells = row.find_elements(By.TAG_NAME, "td")
        assert [cells[0].text, cells[1].text, cells[3].text] == [str(index), run_id, EVIL]  # text, not markup
        pill = cells[5].find_element(By.CSS_SELECTOR, ".pill")
        assert pill.is_displayed() and pill.size["width"] > 20
        pills.append(pill)
    assert [p.text for p in pills] == ["not gated", "pass", "regression"]
    assert [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#runs td:last-child")] == [
        "",
        "first",
        "first",
    ]
    colours = {p.text: p.value_of_css_property("background-color") for p in pills}
    assert len(set(colours.values())) == 3, colours  # the stylesheet applied: three distinct pills
    assert (
        js(driver, "return window.__pwned === undefined && document.querySelectorAll('script').length") == 0
    )


def test_history_charts_draw_and_ring_the_regressions(driver: Any, history: tuple[Path, list[str]]) -> None:
    from selenium.webdriver.common.by import By

    page, ids = history
    clean_load(driver, page)
    sections = driver.find_elements(By.CSS_SELECTOR, "section.trend")
    titles = [s.find_element(By.TAG_NAME, "h2").text for s in sections]
    assert len(titles) == 3 and titles[0].startswith("ICL · arith (k=2, exact_match)")
    assert titles[1:] == ["KD forward KL (T = 1, teacher text; lower is better)", "KD top-1 agreement"]
    red = []
    for section, title in zip(sections, titles, strict=True):
        chart = section.find_element(By.CSS_SELECTOR, "svg")
        assert chart.is_displayed() and chart.get_attribute("aria-label") == title
        assert chart.size["width"] > 300 and chart.size["height"] > 150, chart.size  # laid out, not collapsed
        drawn = js(driver, "return arguments[0].getBBox()", chart)
        assert drawn["width"] > 200 and drawn["height"] > 100  # the browser parsed and drew its contents
        red.append(_red_pixels(chart.screenshot_as_png))
        header = [th.text for th in section.find_elements(By.CSS_SELECTOR, "thead th")]
        assert header[1:] == [f"#{i}" for i in range(len(ids))]  # one column per run
    # the damaged night is ringed in the score and KL charts (and in their legends); top-1 agreement held
    assert red[0] > 50 and red[1] > 50 and red[2] == 0, red
    flagged = driver.find_elements(By.CSS_SELECTOR, "section.trend td.bad")
    shown = [" ".join(c.text.split()) for c in flagged]
    assert shown == ["33.3 regressed", "0.9 [0.81, 0.99] regressed"], shown
    plain = driver.find_element(By.CSS_SELECTOR, "section.trend tbody tr td.num:not(.bad)")
    assert flagged[0].value_of_css_property("color") != plain.value_of_css_property("color")


def test_history_page_blocks_scripts_and_fits_a_phone(
    driver: Any, history: tuple[Path, list[str]], artifacts: Path
) -> None:
    page, _ = history
    clean_load(driver, page)
    js(
        driver,
        "const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        "document.body.appendChild(s);",
    )
    assert js(driver, "return window.__ran === undefined")  # the page's CSP refused the inline script
    csp = [m for m in load_errors(driver) if "Content Security Policy" in m]
    assert csp, "the blocked script left no CSP report in the console"
    metrics = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        clean_load(driver, page)
        found = _overflow(driver)
        assert found["inner"] == 390 and found["scroll"] <= found["inner"] and found["out"] == [], found
        shot = artifacts / "history-phone.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def load_errors(driver: Any) -> list[str]:
    """Console messages at level SEVERE since the last read (load() drains them before a page)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_detector_sees_a_broken_page(driver: Any, tmp_path: Path) -> None:
    """The console check can fail: a page whose script throws is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><title>x</title><script>undefinedFunction()</script>", encoding="utf-8")
    assert any("undefinedFunction" in m for m in load(driver, page).errors)
