"""Keys by role (issue 14): an events key gets 401 on every read route, an API key gets 401 on the
webhook (the reader role and Entra tokens: test_roles.py), served directly and under the Functions host (the registered webhook function called
the way the worker calls it), against Azurite over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import azure.functions as func
import httpx
import pytest

from devtools.worker_binding import trigger_argument
from shared.conventions import container_name

from ..helpers import LOCAL_TOPIC, blob_event
from ..support.stack import EVENTS_KEY, TEST_KEY, RunningApp

JOB = "KeysJob"
C = container_name(JOB)
VALUES = {"job_id": JOB, "task_id": "t1", "kind": "TaskOutput", "path": "a.txt", "operation_id": "0" * 32}


def operations(app: RunningApp) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document but the webhook and health, IDs filled in."""
    document = app.get("/api/openapi.json").json()
    found = []
    for path, item in document["paths"].items():
        for method in item:
            if path in ("/api/events", "/api/health"):
                continue
            found.append((method.upper(), path.format(**VALUES)))
    assert len(found) >= 15, found  # the whole API, not a handful
    return found


def call(app: RunningApp, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{app.url}{path}", json={} if method in ("PUT", "POST") else None, timeout=60, **kwargs)


def test_an_events_key_gets_401_on_every_read_route(app: RunningApp) -> None:
    assert app.post_events([blob_event(C, "t1/$TaskOutput/a.txt")]).json()["indexed"] == 1
    for method, path in operations(app):
        for presented in ({"headers": {"x-functions-key": EVENTS_KEY}}, {"params": {"code": EVENTS_KEY}}):
            response = call(app, method, path, **presented)
            assert response.status_code == 401, (method, path, presented, response.text)
            assert response.json() == {"error": {"code": "Unauthorized", "message": "A valid key is required."}}
        assert call(app, method, path, headers={"x-functions-key": TEST_KEY}).status_code != 401, (method, path)


def test_an_api_key_gets_401_on_the_webhook(app: RunningApp) -> None:
    event = blob_event(C, "t1/$TaskOutput/forged.txt")
    for key in (TEST_KEY, "second-key"):
        for presented in ({"headers": {"x-functions-key": key}}, {"params": {"code": key}}):
            assert httpx.post(f"{app.url}/api/events", json=[event], **presented).status_code == 401
        options = httpx.options(f"{app.url}/api/events", headers={"x-functions-key": key, "WebHook-Request-Origin": "eventgrid.azure.net"})
        assert options.status_code == 401
    assert app.all_pages(f"/api/jobs/{JOB}/task-outputs") == []
    response = httpx.post(f"{app.url}/api/events", json=[event], headers={"x-functions-key": EVENTS_KEY})
    assert response.status_code == 200 and response.json()["indexed"] == 1


def test_under_the_host_the_app_still_refuses_each_role_the_others_job(serve: Callable[..., RunningApp], settings) -> None:
    # hosted: the host checks no key on the API (auth level anonymous): the app checks every role.
    app = serve(settings, hosted=True)
    assert httpx.get(f"{app.url}/api/jobs").status_code == 401
    assert httpx.get(f"{app.url}/api/jobs", headers={"x-functions-key": TEST_KEY}).status_code == 200
    assert httpx.get(f"{app.url}/api/jobs", headers={"x-functions-key": EVENTS_KEY}).status_code == 401
    assert httpx.get(f"{app.url}/api/jobs", params={"code": EVENTS_KEY}).status_code == 401
    event = blob_event(C, "t1/$TaskOutput/a.txt")
    for headers in ({}, {"x-functions-key": TEST_KEY}, {"x-functions-key": "a-function-key"}):
        assert httpx.post(f"{app.url}/api/events", json=[event], headers=headers).status_code == 401, headers
    assert httpx.post(f"{app.url}/api/events", json=[event], headers={"x-functions-key": EVENTS_KEY}).status_code == 200


def test_the_registered_webhook_function_checks_the_events_key(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``events_webhook`` called as the Python worker calls it (an HttpRequest, an ASGI round trip)."""
    from functions import http_app as host
    from shared.http.dependencies import Access
    from shared.service import ServiceHolder

    holder = ServiceHolder(settings)
    monkeypatch.setattr(host.http_app.state, "services", holder)
    monkeypatch.setattr(host.http_app.state, "access", Access(settings))
    body = json.dumps([blob_event(C, "t1/$TaskOutput/hosted.txt", size=9)]).encode()

    def request(key: str | None) -> func.HttpRequest:
        headers = {"content-type": "application/json", "host": "app.azurewebsites.net"}
        if key:
            headers["x-functions-key"] = key
        return func.HttpRequest("POST", "https://app.azurewebsites.net/api/events", headers=headers, body=body)

    async def run() -> tuple[list[int], list]:
        statuses = [(await host.events_webhook(request(key), None)).status_code for key in (None, TEST_KEY, EVENTS_KEY)]  # type: ignore[arg-type]
        service = await holder.get()
        page = await service.query.task_outputs(JOB, "t1", None, "", 10, None)
        await holder.close()
        return statuses, page.items

    statuses, items = asyncio.run(run())
    assert statuses == [401, 401, 200]
    assert [(i["path"], i["size"]) for i in items] == [("hosted.txt", 9)]


def test_the_trigger_skips_an_event_of_another_account(azurite, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import blob_events
    from shared.service import ServiceHolder

    holder = ServiceHolder(settings)
    monkeypatch.setattr(blob_events, "services", holder)

    def grid_event(account: str, name: str) -> object:
        return trigger_argument(blob_events.index_blob_event, {
            "id": name, "data": {"api": "PutBlob", "url": f"https://{account}.blob.core.windows.net/{C}/t1/%24TaskOutput/{name}",
                                 "sequencer": "0" * 31 + "3", "contentLength": 4},
            "topic": LOCAL_TOPIC.replace("devstoreaccount1", account),
            "subject": f"/blobServices/default/containers/{C}/blobs/t1/$TaskOutput/{name}",
            "eventType": "Microsoft.Storage.BlobCreated", "eventTime": None, "dataVersion": "1"})

    async def run() -> list:
        await blob_events.index_blob_event(grid_event("attacker", "forged.txt"))
        await blob_events.index_blob_event(grid_event("devstoreaccount1", "real.txt"))
        service = await holder.get()
        page = await service.query.task_outputs(JOB, "t1", None, "", 10, None)
        await holder.close()
        return page.items

    assert [i["path"] for i in asyncio.run(run())] == ["real.txt"]
