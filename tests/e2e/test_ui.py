"""The output browser (/ui/) in headless Debian Chromium, against the real app and Azurite.

Chromium and chromedriver come from the system (``make browser``); when they are missing these
tests fail: they never skip. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from devtools.browser import chromium, full_page_screenshot
from devtools.frames import frame_png, png_size
from shared.conventions import blob_name, container_name

from ..helpers import blob_event
from ..support.stack import ARTIFACTS, TEST_KEY, RunningApp

JOB = "nightly:job-7"          # a job schedule's job: ':' in the URL, hashed-free container name
C = container_name(JOB)
LOG_LINES = 3000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    driver = chromium(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Outputs:
    """Uploads convention blobs to Azurite and indexes them through the app's webhook."""

    def __init__(self, app: RunningApp, blob_service: BlobServiceClient) -> None:
        self.app = app
        self.container = blob_service.get_container_client(C)
        if not self.container.exists():
            self.container.create_container()
        self.sequencer = 0

    def delete(self, kind: str, path: str, task: str | None = None) -> None:
        name = blob_name(kind, path, task)
        self.container.delete_blob(name)
        self.sequencer += 1
        response = self.app.post_events([blob_event(C, name, deleted=True, sequencer=self.sequencer)])
        assert response.status_code == 200, response.text

    def save(self, kind: str, path: str, data: bytes, task: str | None = None, content_type: str = "application/octet-stream") -> None:
        name = blob_name(kind, path, task)
        self.container.upload_blob(name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type))
        self.sequencer += 1
        response = self.app.post_events([blob_event(C, name, size=len(data), sequencer=self.sequencer, content_type=content_type)])
        assert response.status_code == 200, response.text


@pytest.fixture
def outputs(app: RunningApp, blob_service: BlobServiceClient) -> Outputs:
    return Outputs(app, blob_service)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object], timeout: float = 20, what: str = "") -> object:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        shot(driver, "timeout")
        raise AssertionError(f"timed out waiting for {what}; page: {driver.find_element(By.TAG_NAME, 'body').text[:2000]}") from None


def shot(driver: WebDriver, name: str) -> Path:
    path = ARTIFACTS / f"ui-{name}.png"
    full_page_screenshot(driver, path)
    return path


def open_page(driver: WebDriver, app: RunningApp, path: str, key: str | None = TEST_KEY) -> None:
    driver.get(f"{app.url}{path}" + (f"?code={quote(key)}" if key else ""))


def job_page(job: str) -> str:
    return f"/ui/jobs/{quote(job, safe='')}"


def task_page(job: str, task: str) -> str:
    return f"{job_page(job)}/tasks/{quote(task, safe='')}"


def loaded_previews(driver: WebDriver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#previews img')].filter(i => i.complete && i.naturalWidth)"
        ".map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight, src: i.src}))")


# -- the page itself, over plain HTTP ---------------------------------------------------------


def test_ui_page_is_served_without_a_key_and_holds_no_data(app: RunningApp) -> None:
    for path in ("/ui/", job_page(JOB), task_page(JOB, "t1")):
        response = httpx.get(app.url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "script-src 'nonce-" in response.headers["content-security-policy"]
        assert JOB not in response.text and C not in response.text
    redirect = httpx.get(f"{app.url}/ui?code=abc")
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/ui/?code=abc")
    assert httpx.get(f"{app.url}/api/jobs").status_code == 401  # the API still needs a key


def test_log_tail_route_returns_the_last_whole_lines(app: RunningApp, outputs: Outputs) -> None:
    log = "".join(f"line {i:05d} of the render log\n" for i in range(1, LOG_LINES + 1)).encode()
    outputs.save("TaskLog", "stdout.txt", log, task="t1", content_type="text/plain")
    route = f"/api/jobs/{quote(JOB, safe='')}/tasks/t1/tail/TaskLog/stdout.txt"

    body = app.get(route, params={"maxBytes": 1000}).json()
    assert body["size"] == len(log) and body["truncated"] is True
    lines = body["text"].splitlines()
    assert lines[-1] == f"line {LOG_LINES:05d} of the render log"
    assert all(line.startswith("line ") and line.endswith(" log") for line in lines)  # no cut line
    assert len(body["text"].encode()) <= 1000 and body["start"] == len(log) - len(body["text"].encode())

    whole = app.get(route, params={"maxBytes": 65536}).json()
    assert app.get(route, params={"maxBytes": 65537}).status_code == 400
    assert whole["truncated"] is True and whole["text"].endswith(f"line {LOG_LINES:05d} of the render log\n")
    assert httpx.get(app.url + route).status_code == 401
    assert app.get(route.replace("stdout.txt", "stderr.txt")).status_code == 404


# -- in the browser ---------------------------------------------------------------------------


def test_job_page_shows_outputs_and_new_ones_without_a_reload(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    for i in range(3):
        outputs.save("TaskPreview", "preview.png", frame_png(i * 40, 120), task=f"frame-{i + 1:04d}", content_type="image/png")
        outputs.save("TaskLog", "stdout.txt", b"rendered\n", task=f"frame-{i + 1:04d}", content_type="text/plain")
    outputs.save("JobOutput", "movie.mp4", b"\x00" * 5000, content_type="video/mp4")

    open_page(browser, app, job_page(JOB))
    wait_for(browser, lambda d: len(loaded_previews(d)) == 3, what="three rendered previews")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert JOB in body and "movie.mp4" in body and "frame-0003" in body
    tasks = [row.get_attribute("data-task") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-task]")]
    assert tasks == ["frame-0001", "frame-0002", "frame-0003"]
    shot(browser, "job-page")

    # Saved after the page loaded: the page polls the API and shows it without a reload.
    marker = browser.execute_script("window.__sameDocument = true; return location.href")
    outputs.save("TaskPreview", "preview.png", frame_png(119, 120), task="frame-0004", content_type="image/png")
    wait_for(browser, lambda d: len(loaded_previews(d)) == 4, what="the preview saved after the page loaded")
    assert browser.execute_script("return window.__sameDocument === true && location.href") == marker
    assert "frame-0004" in [row.get_attribute("data-task") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-task]")]
    # Every output has a download link: a read-only SAS URL for its blob, never the API key.
    link = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-output="JobOutput/movie.mp4"] a.dl:not(.pending)'),
                    what="the download link of movie.mp4")
    href = link.get_attribute("href")
    assert "sig=" in href and TEST_KEY not in href
    assert httpx.get(href).content == b"\x00" * 5000
    shot(browser, "job-page-after-new-output")


def test_job_page_follows_the_change_feed_and_shows_deletions(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    """After its first read the page takes changes from the feed (a long-poll), not from the
    listings: an output saved appears, an output deleted leaves the tables and shows as a
    deletion among the recent changes."""
    for i in range(2):
        outputs.save("TaskPreview", "preview.png", frame_png(i * 60, 120), task=f"f{i}", content_type="image/png")
    outputs.save("JobOutput", "report.txt", b"r" * 10, content_type="text/plain")
    open_page(browser, app, job_page(JOB))
    wait_for(browser, lambda d: len(loaded_previews(d)) == 2, what="two previews")
    browser.execute_script("""
        window.__requests = [];
        const original = window.fetch;
        window.fetch = (url, options) => { window.__requests.push(String(url)); return original(url, options); };""")
    outputs.save("TaskPreview", "preview.png", frame_png(100, 120), task="f2", content_type="image/png")
    wait_for(browser, lambda d: len(loaded_previews(d)) == 3, what="the preview saved after the page loaded")
    outputs.delete("JobOutput", "report.txt")
    outputs.delete("TaskPreview", "preview.png", task="f0")
    wait_for(browser, lambda d: len(loaded_previews(d)) == 2 and not d.find_elements(By.CSS_SELECTOR, 'tr[data-output="JobOutput/report.txt"]'),
             what="the deleted outputs gone from the page")
    changes = [row.get_attribute("data-change") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-change]")]
    assert {"deleted TaskPreview/preview.png", "deleted JobOutput/report.txt", "created TaskPreview/preview.png"} <= set(changes)
    struck = browser.find_element(By.CSS_SELECTOR, 'tr.change-deleted td.path')
    assert browser.execute_script("return getComputedStyle(arguments[0]).textDecorationLine", struck) == "line-through"
    requests = browser.execute_script("return window.__requests")
    assert any("/changes?" in r and "wait=" in r for r in requests)
    # The outputs and previews came from the feed: no listing of them was read again.
    assert not [r for r in requests if "/outputs?" in r or "/task-outputs?" in r], requests
    shot(browser, "job-page-after-deletions")


def test_preview_renders_at_its_natural_size(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    png = frame_png(10, 60, 200, 120)
    assert png_size(png) == (200, 120)
    outputs.save("TaskPreview", "preview.png", png, task="t-big", content_type="image/png")
    open_page(browser, app, task_page(JOB, "t-big"))
    image = wait_for(browser, lambda d: d.execute_script(
        "const i = document.querySelector('.hero img'); return i && i.complete && i.naturalWidth ? i : null"), what="the preview")
    size = browser.execute_script("const i = arguments[0]; return [i.naturalWidth, i.naturalHeight, i.width, i.height]", image)
    assert size == [200, 120, 200, 120]  # decoded from the PNG, and shown unscaled
    assert image.get_attribute("src").startswith(app.settings.outputs_storage.connection_string and "http://127.0.0.1:")


def test_task_page_shows_the_log_tail(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    log = "".join(f"Fra:7 | Sample {i}/{LOG_LINES}\n" for i in range(1, LOG_LINES + 1)).encode()
    outputs.save("TaskLog", "stdout.txt", log, task="frame-0007", content_type="text/plain")
    outputs.save("TaskIntermediate", "tiles/tile-0.exr", b"tile", task="frame-0007")
    open_page(browser, app, task_page(JOB, "frame-0007"))
    pre = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'pre[data-log="stdout.txt"]'), what="the log tail")
    text = pre.text
    assert f"Sample {LOG_LINES}/{LOG_LINES}" in text and f"Sample {LOG_LINES - 50}/{LOG_LINES}" in text
    assert "Sample 1/" not in text and "earlier not shown" in text
    # Scrolled to its end: the last line is what a user sees first.
    assert browser.execute_script("const p = arguments[0]; return p.scrollTop + p.clientHeight >= p.scrollHeight - 2", pre)
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "tiles/tile-0.exr" in page and "null" not in page
    shot(browser, "task-page")


def test_key_leaves_the_address_bar_and_no_link_carries_it(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    outputs.save("TaskPreview", "preview.png", frame_png(0, 2), task="t1", content_type="image/png")
    open_page(browser, app, job_page(JOB))
    wait_for(browser, lambda d: len(loaded_previews(d)) == 1, what="the preview")
    assert "code=" not in browser.current_url and TEST_KEY not in browser.current_url
    assert browser.current_url == f"{app.url}{job_page(JOB)}"
    assert browser.execute_script("return sessionStorage.getItem('batchOutputs.key')") == TEST_KEY
    rendered = browser.execute_script("return [...document.querySelectorAll('[href],[src]')].map(e => e.href || e.src)")
    assert rendered and not [url for url in rendered if TEST_KEY in url or "code=" in url]
    # The key stays for this tab: a link to the task page opens without asking again.
    browser.find_element(By.CSS_SELECTOR, "#previews a.thumb").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".hero img"), what="the task page")
    assert browser.current_url == f"{app.url}{task_page(JOB, 't1')}"


def test_without_a_key_the_page_asks_for_one(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    outputs.save("TaskLog", "stdout.txt", b"hello\n", task="t1", content_type="text/plain")
    # A schedule's job has a hashed container: the jobs list names it once the job is registered.
    assert app.client.put(f"/api/jobs/{quote(JOB, safe='')}").status_code == 200
    open_page(browser, app, "/ui/", key=None)
    form = wait_for(browser, lambda d: d.find_element(By.ID, "key-form"), what="the key form")
    shot(browser, "key-form")
    form.find_element(By.ID, "key").send_keys("wrong-key")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda d: "not accepted" in d.find_element(By.ID, "key-form").text, what="the refusal")

    browser.find_element(By.ID, "key").send_keys(TEST_KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    link = wait_for(browser, lambda d: d.find_element(By.LINK_TEXT, JOB), what="the jobs list")
    assert TEST_KEY not in browser.current_url
    link.click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-task="t1"]'), what="the job page")


def shown_duration(seconds: float) -> str:
    """The page's own rendering of a duration (app.js ``duration``)."""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def test_job_page_shows_how_far_behind_the_index_is(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    now = datetime.now(timezone.utc)
    events = []
    for number, age in ((1, 4.0), (2, 95.0)):
        name = blob_name("TaskOutput", f"lagged-{number}.bin", f"lag-{number}")
        event = blob_event(C, name, sequencer=900 + number, size=3)
        event["eventTime"] = (now - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
        events.append(event)
    assert app.post_events(events).status_code == 200
    lag = app.get(f"/api/jobs/{quote(JOB, safe='')}").json()["lag"]
    assert lag["events"] == 2 and lag["max"] >= 95 and lag["p95"] == lag["max"] and 4 <= lag["p50"] < 95

    open_page(browser, app, job_page(JOB))
    stat = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#lag .detail"), what="the lag figure")
    assert browser.find_element(By.CSS_SELECTOR, "#lag .label").text.lower() == "lag p95, last hour"
    assert browser.find_element(By.CSS_SELECTOR, "#lag .value").text == shown_duration(lag["p95"])
    assert stat.text == f"p50 {shown_duration(lag['p50'])} · max {shown_duration(lag['max'])} · 2 events"
    assert "eventTime to indexed" in browser.find_element(By.CSS_SELECTOR, "#lag").get_attribute("title")
    shot(browser, "job-page-lag")
