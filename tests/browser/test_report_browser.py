"""The HTML report in a real headless Chromium (Selenium): it loads offline without errors, its tables
sort, its explorer filters and pages, untrusted text runs no script, and it fits a phone's width.

The driver is shared by the session (tests/browser/conftest.py); pages are built from synthetic
records (tests/fake_record.py). Screenshots go to $HARNESS_TEST_ARTIFACTS (default: a temp folder).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.report import render_html
from harness.report.compare_runs import write_comparison
from harness.store.record import read_record
from tests.browser.conftest import load
from tests.fake_record import HOSTILE, write_fake_record

pytestmark = pytest.mark.integration  # a real browser
N_ITEMS = 30  # per suite variant: 7 variants, 210 explorer items, 11 pages of 20


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pages")
    plain = write_fake_record(root / "plain", n_items=N_ITEMS, kd_on_policy=True)
    _long_tokens(plain)
    hostile = write_fake_record(root / "hostile", n_items=12, hostile=True)
    other = write_fake_record(root / "other", n_items=N_ITEMS, seed=7)
    no_csp = root / "hostile-no-csp.html"
    hostile_html = render_html(read_record(hostile), root / "hostile.html")
    text = hostile_html.read_text(encoding="utf-8")
    stripped = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    assert stripped != text
    no_csp.write_text(stripped, encoding="utf-8")
    return {
        "plain": render_html(read_record(plain), root / "plain.html"),
        "hostile": hostile_html,
        "no_csp": no_csp,
        "compare": write_comparison(plain, other)["html"],
        "run": plain,
    }


def _long_tokens(run: Path) -> None:
    """Unbreakable strings in the first item (they must wrap, not widen the page on a phone)."""
    rows = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    for row in rows[:4]:
        row["extracted"] = "False||=||" * 40
        row["output"] += " " + "x" * 400
    (run / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def clean_load(driver: Any, page: Path) -> None:
    result = load(driver, page)
    assert result.errors == [], result.errors
    outside = [u for u in result.requests if not (u == page.resolve().as_uri() or u.startswith("data:"))]
    assert outside == [], f"the page made network requests: {outside}"
    assert driver.execute_script(
        "return document.getElementById('explorer-app') === null || "
        "document.getElementById('explorer-app').hasAttribute('data-ready')"
    )


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def test_pages_load_without_errors_or_requests(driver: Any, pages: dict[str, Path]) -> None:
    for name in ("plain", "hostile", "compare"):
        clean_load(driver, pages[name])
    assert js(driver, "return document.querySelectorAll('table.sortable').length") >= 3  # compare page


def _column(driver: Any, table: Any, col: int) -> list[str]:
    return js(
        driver,
        "const [table, i] = arguments, at = r => r.cells[i < 0 ? r.cells.length + i : i];"
        "return Array.from(table.tBodies[0].rows, r => at(r).innerText.split('\\n')[0]);",
        table,
        col,
    )


def _number(text: str) -> float | None:
    match = re.match(r"[≥<]?\s*([+-−]?\d+(?:\.\d+)?)", text.strip())
    return float(match.group(1).replace("−", "-")) if match else None


def test_clicking_a_header_sorts_the_table(driver: Any, pages: dict[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    clean_load(driver, pages["plain"])
    table = driver.find_element(By.CSS_SELECTOR, "#suite-icl-arith table")
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    assert [h.text.split("\n")[0] for h in headers[:3]] == ["Variant", "n", "teacher"]
    original = _column(driver, table, 0)
    assert original == ["k=0 baseline", "k=1", "k=2", "k=4"] or original[0].startswith("k=0")
    headers[2].find_element(By.CSS_SELECTOR, "button.sort").click()  # the teacher's score
    values = [_number(t) for t in _column(driver, table, 2)]
    assert values == sorted(values) and headers[2].get_attribute("aria-sort") == "ascending"
    headers[2].find_element(By.CSS_SELECTOR, "button.sort").click()
    values = [_number(t) for t in _column(driver, table, 2)]
    assert values == sorted(values, reverse=True) and headers[2].get_attribute("aria-sort") == "descending"
    assert headers[0].get_attribute("aria-sort") is None
    before = _column(driver, table, 0)
    headers[1].find_element(By.CSS_SELECTOR, "button.sort").click()  # n: all equal, so a stable sort
    assert set(_column(driver, table, 1)) == {str(N_ITEMS)} and _column(driver, table, 0) == before
    headers[0].find_element(By.CSS_SELECTOR, "button.sort").click()  # text, natural order
    assert [v.split()[0] for v in _column(driver, table, 0)] == ["k=0", "k=1", "k=2", "k=4"]
    # "undefined" stays last both ways: cot-arith's direct variant has no retention
    cot = driver.find_element(By.CSS_SELECTOR, "#suite-cot-arith table")
    last = cot.find_elements(By.CSS_SELECTOR, "thead th")[-1].find_element(By.CSS_SELECTOR, "button.sort")
    for _ in range(2):
        last.click()
        assert _column(driver, cot, -1)[-1].startswith("undefined")
    # grouped rows (rowspan) are not made sortable; the headline is
    assert js(driver, "return document.querySelector('#headline table').classList.contains('sortable')")


def _status(driver: Any) -> str:
    return js(driver, "return document.querySelector('#explorer-app .x-status').textContent")


def _visible_items(driver: Any) -> list[list[str]]:
    """[id, "suite · variant"] of every item on the explorer's current page."""
    return js(
        driver,
        "return Array.from(document.querySelectorAll('#explorer-app .x-items article'),"
        " a => [a.querySelector('.id').textContent, a.querySelector('.pill.role-model').textContent]);",
    )


def _choose(driver: Any, name: str, label: str | None = None, value: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    select = Select(driver.find_element(By.CSS_SELECTOR, f"#explorer-app [data-x={name}]"))
    if label is not None:
        select.select_by_visible_text(label)
    else:
        select.select_by_value(str(value))


def _items(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]


def test_explorer_filters_by_suite_cell_and_text(driver: Any, pages: dict[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    clean_load(driver, pages["plain"])
    total = 7 * N_ITEMS
    assert _status(driver) == f"Items 1–20 of {total} · page 1 of {-(-total // 20)}"
    assert len(_visible_items(driver)) == 20
    _choose(driver, "suite", "cot-arith · cot")
    assert _status(driver).startswith(f"Items 1–20 of {N_ITEMS} matching ({total} in all)")
    assert {suite for _, suite in _visible_items(driver)} == {"cot-arith · cot"}
    # teacher right, student wrong on cot-arith / cot: count them in the record
    scores = {(r["item_id"], r["model"]): r["score"] for r in _items(pages["run"]) if r["variant"] == "cot"}
    ids = sorted({i for i, _ in scores})
    expected = [i for i in ids if scores[(i, "teacher")] == 1 and scores[(i, "student")] == 0]
    _choose(driver, "pair", "teacher vs student")
    _choose(driver, "cell", value="teacher_only")
    assert sorted(i for i, _ in _visible_items(driver)) == expected
    assert _status(driver).startswith(f"Items 1–{len(expected)} of {len(expected)} matching")
    _choose(driver, "cell", value="any")
    box = driver.find_element(By.CSS_SELECTOR, "#explorer-app [data-x=text]")
    box.send_keys("cot-arith-0007")
    driver.implicitly_wait(0)
    js(driver, "return new Promise(r => setTimeout(r, 400));")  # the search waits 150 ms for typing
    assert _visible_items(driver) == [["cot-arith-0007", "cot-arith · cot"]]
    box.clear()
    box.send_keys("no such text anywhere")
    js(driver, "return new Promise(r => setTimeout(r, 400));")
    assert _visible_items(driver) == [] and _status(driver).startswith("No item matches")


def test_two_by_two_count_and_item_links_open_the_explorer(driver: Any, pages: dict[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    clean_load(driver, pages["plain"])
    link = driver.find_element(
        By.CSS_SELECTOR,
        '#suite-icl-arith a.xf[data-variant="k=2"][data-model="student"][data-cell="student_only"]',
    )
    count = int(link.text)
    js(driver, "arguments[0].click();", link)
    shown = _visible_items(driver)
    assert len(shown) == count and {s for _, s in shown} == {"icl-arith · k=2"}
    # a cell's item list links items past the first page: the explorer pages to them
    item = driver.find_elements(By.CSS_SELECTOR, "#suite-if-basic a.xi")[-1]
    target, label = item.get_attribute("data-item"), item.get_attribute("textContent")
    assert js(driver, "return document.getElementById(arguments[0]) === null", target)
    js(driver, "arguments[0].click();", item)
    assert label in [i for i, _ in _visible_items(driver)]
    assert js(driver, "return document.getElementById(arguments[0]) !== null", target)
    # so does a link (or a typed address) to an item's anchor
    anchor = "item-cot-arith-cot-cot-arith-0015"
    assert js(driver, "return document.getElementById(arguments[0]) === null", anchor)
    js(driver, "location.hash = arguments[0];", anchor)
    js(driver, "return new Promise(r => setTimeout(r, 100));")
    assert js(driver, "return document.getElementById(arguments[0]) !== null", anchor)
    assert "cot-arith-0015" in [i for i, _ in _visible_items(driver)]


def _pwned(driver: Any) -> Any:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
        driver.switch_to.alert.dismiss()
        return f"alert({text})"
    except NoAlertPresentException:
        return js(driver, "return window.__pwned === undefined ? null : window.__pwned;")


def test_hostile_record_runs_no_script(driver: Any, pages: dict[str, Path]) -> None:
    from selenium.webdriver.common.by import By

    for page in (pages["hostile"], pages["no_csp"]):  # escaping holds even without the CSP
        load(driver, page)
        assert _pwned(driver) is None
        assert js(driver, "return document.querySelectorAll('script').length") == 2
        handlers = js(
            driver,
            "return Array.from(document.querySelectorAll('*')).flatMap(e => Array.from(e.attributes)"
            ".filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name));",
        )
        assert handlers == []
        assert (
            js(driver, "return document.querySelectorAll('main img, main iframe, main textarea').length") == 0
        )
        body = driver.find_element(By.TAG_NAME, "body").get_attribute("textContent")
        for payload in HOSTILE:
            assert payload in body
        # every page the script builds from the data, and a search for a payload
        for _ in range(5):
            js(driver, "document.querySelector('#explorer-app [data-page=next]').click();")
        box = driver.find_element(By.CSS_SELECTOR, "#explorer-app [data-x=text]")
        box.send_keys("<svg onload")
        js(driver, "return new Promise(r => setTimeout(r, 400));")
        assert _visible_items(driver) and _pwned(driver) is None
        assert js(driver, "return document.getElementById('explorer-app').hasAttribute('data-ready')")


def test_detector_catches_a_live_payload(driver: Any, tmp_path: Path) -> None:
    """Control: without escaping (and without the CSP) the same payload does run, and is seen."""
    page = tmp_path / "bad.html"
    page.write_text(f"<!DOCTYPE html><html><body><div>{HOSTILE[5]}</div></body></html>")
    load(driver, page)
    js(driver, "return new Promise(r => setTimeout(r, 200));")
    assert _pwned(driver) is not None


def test_reads_fine_with_scripts_off(driver: Any, pages: dict[str, Path]) -> None:
    """No script: the first page of items is there with a note saying so, the controls are hidden."""
    from selenium.webdriver.common.by import By

    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        load(driver, pages["plain"])  # WebDriver's own calls still run; the page's script does not
        assert not js(driver, "return document.getElementById('explorer-app').hasAttribute('data-ready')")
        assert js(driver, "return document.querySelectorAll('table.sortable').length") == 0
        assert len(_visible_items(driver)) == 20
        app = driver.find_element(By.ID, "explorer-app")
        assert app.text.startswith("Scripts are off: this is the first page only (20 of 210 items).")
        hidden = "return Array.from(document.querySelectorAll('.x-js'), e => getComputedStyle(e).display);"
        assert set(js(driver, hidden)) == {"none"}
        assert driver.find_element(By.CSS_SELECTOR, "#headline table").is_displayed()
    finally:
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def _overflow(driver: Any) -> dict[str, Any]:
    """Page width vs viewport, and elements sticking out on the right outside a scrolling wrapper."""
    return js(
        driver,
        """
        const w = window.innerWidth, out = [];
        const scrolls = e => {
          for (let p = e.parentElement; p; p = p.parentElement) {
            if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(p).overflowX)) return true;
          }
          return false;
        };
        document.querySelectorAll('body *').forEach(e => {
          const r = e.getBoundingClientRect();
          if (r.width && r.right > w + 1 && !scrolls(e)) {
            out.push(e.tagName + '.' + e.className + ' ' + Math.round(r.right));
          }
        });
        return {scroll: document.scrollingElement.scrollWidth, inner: w, out: out.slice(0, 10)};
        """,
    )


def test_phone_width_and_screenshots(driver: Any, pages: dict[str, Path], artifacts: Path) -> None:
    clean_load(driver, pages["plain"])
    desktop = artifacts / "report-desktop.png"
    assert driver.save_screenshot(str(desktop)) and desktop.stat().st_size > 20_000
    metrics = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        for name in ("plain", "compare"):
            clean_load(driver, pages[name])
            js(driver, "document.querySelectorAll('details').forEach(d => d.open = true);")
            found = _overflow(driver)
            assert found["inner"] == 390
            assert found["scroll"] <= found["inner"] and found["out"] == [], found
        clean_load(driver, pages["plain"])
        phone = artifacts / "report-phone.png"
        assert driver.save_screenshot(str(phone)) and phone.stat().st_size > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
