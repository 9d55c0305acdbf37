"""The output browser with a reader's credentials (issue 23), in headless Chromium against the
real app and Azurite: a reader key, and a user signed in through App Service authentication
(Easy Auth), whose same-origin ``/.auth/me`` the test serves in front of the app the way the
platform does, with an access token of the suite's test issuer."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from starlette.types import Receive, Scope, Send

from devtools.azurite import free_port
from devtools.browser import chromium
from shared.http.app import create_app

from ..helpers import blob_event
from ..support.entra import TokenIssuer, running_issuer
from ..support.stack import EVENTS_KEY, READ_KEY, RunningApp, settings_for
from .test_ui import JOB, C, Outputs, job_page, open_page, wait_for

READ = ["Outputs.Read"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    driver = chromium(profile)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def outputs(app: RunningApp, blob_service) -> Outputs:
    return Outputs(app, blob_service)


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    yield from running_issuer()


def test_a_reader_key_opens_the_job_page(browser: WebDriver, app: RunningApp, outputs: Outputs) -> None:
    outputs.save("TaskLog", "stdout.txt", b"hello\n", task="t1", content_type="text/plain")
    outputs.save("JobOutput", "movie.mp4", b"\x00" * 50, content_type="video/mp4")
    open_page(browser, app, job_page(JOB), key=READ_KEY)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-task="t1"]'), what="the job page")
    assert "movie.mp4" in browser.find_element(By.TAG_NAME, "body").text
    # Download links work for a reader: the page asks only GET routes.
    link = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-output="JobOutput/movie.mp4"] a.dl:not(.pending)'),
                    what="the download link")
    assert "sig=" in link.get_attribute("href") and READ_KEY not in link.get_attribute("href")


class EasyAuth:
    """What App Service authentication adds in front of the app: ``/.auth/me`` answering the
    signed-in user's session (with the access token for the API), everything else passed on."""

    def __init__(self, app: Callable, token: Callable[[], str | None]) -> None:
        self.app, self.token, self.me_calls = app, token, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/.auth/me":
            self.me_calls += 1
            token = self.token()
            expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
            status, body = (200, [{"provider_name": "aad", "access_token": token, "expires_on": expires, "user_id": "ada@contoso.com"}]) \
                if token else (401, {})
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})
            return
        await self.app(scope, receive, send)


@pytest.fixture
def signed_in(azurite, issuer: TokenIssuer) -> Iterator[tuple[str, EasyAuth, dict]]:
    """The app behind Easy Auth on a free port; ``session["roles"]`` is what the user's token carries."""
    session: dict = {"roles": READ}
    front = EasyAuth(create_app(settings_for(azurite, **issuer.settings())),
                     lambda: issuer.token(session["roles"]) if session["roles"] is not None else None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(front, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "app did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", front, session
    server.should_exit = True
    thread.join(timeout=10)


def test_a_user_signed_in_through_easy_auth_reads_with_the_token(browser: WebDriver, signed_in, blob_service) -> None:
    url, front, session = signed_in
    container = blob_service.get_container_client(C)
    if not container.exists():
        container.create_container()
    container.upload_blob("t9/$TaskLog/out.txt", b"signed in\n", overwrite=True)
    posted = httpx.post(f"{url}/api/events", json=[blob_event(C, "t9/$TaskLog/out.txt", size=10)], headers={"x-functions-key": EVENTS_KEY})
    assert posted.status_code == 200, posted.text

    browser.get(f"{url}/ui/")
    browser.execute_script("sessionStorage.clear()")  # no key of an earlier test in this tab
    browser.get(f"{url}{job_page(JOB)}")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-task="t9"]'), what="the job page, signed in")
    assert front.me_calls >= 1
    assert browser.execute_script("return sessionStorage.getItem('batchOutputs.key')") is None

    # A user whose token carries no role of ours is told so, and offered the key form.
    session["roles"] = []
    browser.get(f"{url}{job_page(JOB)}")
    form = wait_for(browser, lambda d: d.find_element(By.ID, "key-form"), what="the refusal")
    assert "reader role" in form.text
    assert browser.find_elements(By.ID, "sign-in")  # the platform's sign-in is offered beside the key


def test_without_easy_auth_no_sign_in_link_is_offered(browser: WebDriver, app: RunningApp) -> None:
    browser.get(f"{app.url}/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{app.url}/ui/")
    form = wait_for(browser, lambda d: d.find_element(By.ID, "key-form"), what="the key form")
    assert not browser.find_elements(By.ID, "sign-in")
    assert "READ_KEYS" in form.text
