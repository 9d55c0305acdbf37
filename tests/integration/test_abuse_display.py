"""Names that lie about themselves (issue 14): in the output browser a bidi override cannot make
``\\u202egnp.exe`` read as ``exe.png``. Headless Debian Chromium against the real app (it fails,
never skips, when the browser is missing: ``make browser``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from devtools.browser import chromium
from shared.conventions import blob_name, container_name

from ..helpers import blob_event
from ..support.stack import TEST_KEY, RunningApp

JOB = "BidiJob"
C = container_name(JOB)
SPOOFED = "\u202egnp.exe"          # an .exe that reads as "exe.png"
ISOLATE = "\u2067evil\u2069.txt"    # a right-to-left isolate, balanced
HANG = 60


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    driver = chromium(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_bidi_controls_in_names_are_shown_and_isolated(browser: WebDriver, app: RunningApp) -> None:
    events = [blob_event(C, blob_name("TaskOutput", path, "t1"), sequencer=n + 1, size=5)
              for n, path in enumerate([SPOOFED, ISOLATE, "plain.txt"])]
    assert app.post_events(events).json()["indexed"] == 3
    browser.get(f"{app.url}/ui/jobs/{JOB}/tasks/t1?code={quote(TEST_KEY)}")
    WebDriverWait(browser, HANG, poll_frequency=0.2).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-output] td.path")) == 3)
    cells = {cell.find_element(By.XPATH, "..").get_attribute("data-output"): cell
             for cell in browser.find_elements(By.CSS_SELECTOR, "tr[data-output] td.path")}

    spoofed = cells[f"TaskOutput/{SPOOFED}"]
    assert spoofed.text == "[U+202E]gnp.exe"                        # what a reader sees: no reversal
    assert "\u202e" not in browser.execute_script("return arguments[0].textContent", spoofed)
    assert spoofed.find_element(By.CSS_SELECTOR, "bdi .ctl").text == "[U+202E]"
    isolate = cells[f"TaskOutput/{ISOLATE}"]
    assert isolate.text == "[U+2067]evil[U+2069].txt"
    # Each name is its own bidi island, so even an unmarked right-to-left name cannot reorder its row.
    assert browser.execute_script("return getComputedStyle(arguments[0].querySelector('bdi')).unicodeBidi", spoofed) == "isolate"
    titles = [a.get_attribute("title") for a in browser.find_elements(By.CSS_SELECTOR, "tr[data-output] a.dl")]
    assert titles and not [t for t in titles if "\u202e" in t or "\u2067" in t]
