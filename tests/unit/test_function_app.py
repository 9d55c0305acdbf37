"""What the Functions host reads from function_app.py: functions, triggers, routes, auth levels
(the trigger indexing through the shared service against Azurite: tests/integration/test_function_app.py)."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import azure.functions as func

import function_app
from devtools.worker_binding import trigger_argument
from functions.blob_events import event_of, health, index_blob_event
from shared.domain.events import BlobEvent
from shared.store.envelopes import parse_event


@functools.cache
def bindings() -> dict[str, list]:
    # The host indexes the app once; get_functions() refuses a second call on the same app.
    return {f.get_function_name(): f.get_bindings() for f in function_app.app.get_functions()}


def test_registered_functions() -> None:
    assert set(bindings()) == {"http_app_func", "events_webhook", "index_blob_event", "health", "reconcile"}


def test_api_is_one_asgi_function_that_checks_roles_itself() -> None:
    trigger = bindings()["http_app_func"][0]
    assert trigger.type == "httpTrigger"
    assert trigger.route == "/{*route}"
    # The app checks keys and Entra tokens by role (issue 23): the host checks none.
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS


def test_health_is_anonymous_under_the_host() -> None:
    trigger = bindings()["health"][0]
    assert (trigger.type, trigger.route, trigger.auth_level) == ("httpTrigger", "api/health", func.AuthLevel.ANONYMOUS)


def test_event_grid_trigger() -> None:
    (trigger,) = bindings()["index_blob_event"]
    assert trigger.type == "eventGridTrigger"


def test_reconciler_timer_reads_its_schedule_from_the_app_setting() -> None:
    (trigger,) = bindings()["reconcile"]
    assert trigger.type == "timerTrigger"
    # The host resolves %NAME% from app settings: the Bicep and the sample settings set it.
    assert trigger.schedule == "%RECONCILE_SCHEDULE%"
    sample = json.loads(Path("local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
    assert sample["RECONCILE_SCHEDULE"] == "0 */15 * * * *"


def test_host_json_routes_match_the_app() -> None:
    host = json.loads(Path("host.json").read_text(encoding="utf-8"))
    assert host["extensions"]["http"]["routePrefix"] == ""  # the app's routes carry /api
    assert host["version"] == "2.0"


def test_trigger_event_is_parsed_by_the_same_core() -> None:
    event = trigger_argument(index_blob_event, {
        "id": "1", "data": {"api": "PutBlob", "url": "https://a/b", "sequencer": "0" * 31 + "1", "contentLength": 3},
        "topic": "/t", "subject": "/blobServices/default/containers/job-x/blobs/t1/$TaskOutput/a b.txt",
        "eventType": "Microsoft.Storage.BlobCreated", "eventTime": None, "dataVersion": "1",
    })
    parsed = parse_event(event_of(event))
    assert isinstance(parsed, BlobEvent)
    assert (parsed.container, parsed.blob_name, parsed.size) == ("job-x", "t1/$TaskOutput/a b.txt", 3)


def test_the_anonymous_health_function_sends_detail_to_the_keyed_admin_route() -> None:
    """Under the host ``/api/health`` is its own function, free of the app's settings, so it does
    not tell who asks for the index's detail: it answers 401 and names ``/api/admin/health``."""
    plain = asyncio.run(health(func.HttpRequest("GET", "/api/health", body=b"")))
    assert (plain.status_code, json.loads(plain.get_body())) == (200, {"status": "ok"})
    detail = asyncio.run(health(func.HttpRequest("GET", "/api/health", params={"detail": "true"}, body=b"")))
    assert detail.status_code == 401
    assert "/api/admin/health" in json.loads(detail.get_body())["error"]["message"]


def test_the_worker_hands_the_trigger_the_events_json_and_bad_json_is_skipped(caplog) -> None:
    """A ``str`` parameter takes the worker's generic binding (no azure-functions converter);
    data that is not a JSON object is logged and acknowledged before any storage is touched."""
    payload = {"id": "1", "eventType": "Microsoft.Storage.BlobCreated", "subject": "s", "data": {}}
    assert trigger_argument(index_blob_event, payload) == json.dumps(payload)
    for bad in ("{not json", "[1, 2]", b"\xff\xfe"):
        asyncio.run(index_blob_event(bad))
    assert [r.getMessage() for r in caplog.records].count("skipped an event: malformed-event (the trigger's data is not a JSON object)") == 3
