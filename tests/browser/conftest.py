"""A headless Chromium driven by Selenium, shared by every browser test of the session.

Debian's /usr/bin/chromium through /usr/bin/chromedriver, both paths given explicitly so that
Selenium Manager never looks for (or downloads) a browser or driver. Skipped, with the reason, when
selenium, chromium or chromedriver is missing (CI: apt-get install chromium chromium-driver; the
dev extra installs selenium).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--window-size=1280,900",
]


@dataclass(frozen=True)
class Load:
    """What one page load left in the browser's logs."""

    errors: list[str]  # console messages at level SEVERE (script errors, CSP violations)
    requests: list[str]  # every URL the page asked the network stack for
    seconds: float


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]') - browser tests skipped")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium or chromedriver missing (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    browser.set_page_load_timeout(60)
    browser.get("about:blank")  # off the new-tab page, whose own requests are not the report's
    try:
        yield browser
    finally:
        browser.quit()


def load(driver: Any, page: Path) -> Load:
    """Open `page` (after draining older log entries) and return its console errors and requests."""
    import time

    driver.get_log("browser")
    driver.get_log("performance")
    start = time.perf_counter()
    driver.get(page.resolve().as_uri())
    seconds = time.perf_counter() - start
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.requestWillBeSent":
            continue
        url, document = message["params"]["request"]["url"], message["params"].get("documentURL", "")
        if not (url.startswith("chrome://") or document.startswith("chrome://")):  # the browser's own pages
            requests.append(url)
    return Load(errors, requests, seconds)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots and measurements go: $HARNESS_TEST_ARTIFACTS, else a temporary folder."""
    folder = os.environ.get("HARNESS_TEST_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
