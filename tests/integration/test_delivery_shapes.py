"""Every delivery shape (issue 20): bounded work before anything is parsed, each refusal a precise
4xx with the index untouched, API reads served while a large body is decoded; and the smaller
items: a path with a newline reachable, CloudEvents subjects without their leading ``/``, the
OpenAPI document's IDs and limits, ``Allow`` on every 405."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from shared.domain.conventions import container_name
from shared.domain.events import MAX_EVENTS_PER_REQUEST, MAX_NESTING

from ..helpers import blob_event, from_local_account
from ..support.stack import EVENTS_KEY, RunningApp
from ..support.workload import index_state

JOB = "ShapesJob"
C = container_name(JOB)
MIB = 1024 * 1024


def raw_post(app: RunningApp, body: bytes) -> httpx.Response:
    return app.client.post("/api/events", content=body, headers={"content-type": "application/json"})


@pytest.fixture
def seeded(app: RunningApp) -> Iterator[tuple[RunningApp, tuple]]:
    assert app.post_events([blob_event(C, "t1/$TaskOutput/keep.txt", sequencer=5, size=10)]).json()["indexed"] == 1
    before = index_state(app, JOB)
    yield app, before
    assert index_state(app, JOB) == before  # every refusal leaves the index as it was


def _filled(item: bytes, size: int) -> bytes:
    return b"[" + b",".join([item] * (size // (len(item) + 1))) + b"]"


@pytest.mark.parametrize(("shape", "body", "status"), [
    ("16 MiB of empty objects", lambda: _filled(b"{}", 16 * MIB - 8), 413),
    ("16 MiB of numbers", lambda: _filled(b"1", 16 * MIB - 8), 413),
    ("16 MiB of short strings", lambda: _filled(b'"ab"', 16 * MIB - 8), 413),
    ("one more event than Event Grid delivers",
     lambda: json.dumps([blob_event(C, f"t2/$TaskOutput/{n}", sequencer=n) for n in range(MAX_EVENTS_PER_REQUEST + 1)]).encode(),
     413),
    ("nested past the recursion limit", lambda: b"[" * 5000 + b"]" * 5000, 400),
    ("nested deeper than any event", lambda: json.dumps([{"eventType": "x", "data": json.loads(
        "[" * MAX_NESTING + "]" * MAX_NESTING)}]).encode(), 400),
    ("NaN, which is no JSON", lambda: json.dumps([blob_event(C, "t3/$TaskOutput/x", sequencer=1)]).replace(
        '"contentLength": 100', '"contentLength": NaN').encode(), 400),
    ("not events", lambda: _filled(b"[]", 1000), 400),
])
def test_each_delivery_shape_is_a_precise_4xx_and_leaves_the_index_untouched(seeded, shape: str, body, status: int) -> None:
    app, _ = seeded
    response = raw_post(app, body())
    assert response.status_code == status, (shape, response.text[:300])
    assert response.json()["error"]["code"] == ("PayloadTooLarge" if status == 413 else "InvalidEvents")


def test_event_grids_largest_batch_is_indexed(app: RunningApp) -> None:
    events = [blob_event(C, f"t{n % 50}/$TaskOutput/{n}.bin", sequencer=n + 1, size=n) for n in range(MAX_EVENTS_PER_REQUEST)]
    response = app.post_events(events, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["indexed"] == MAX_EVENTS_PER_REQUEST


class HoldDecoding(logging.Handler):
    """Holds the thread that decodes a delivery (at its first log line) until ``release``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.decoding = threading.Event()
        self.released = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("decoding a delivery"):
            self.decoding.set()
            # Bounds a hang only: if decoding held the event loop, nothing could release it.
            self.released.wait(60)


def test_an_api_read_is_served_while_a_large_delivery_is_being_decoded(seeded) -> None:
    app, _ = seeded
    hold = HoldDecoding()
    logger = logging.getLogger("shared.http.routes.events")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(hold)
    order: list[str] = []
    try:
        def post_big() -> None:
            with httpx.Client(base_url=app.url, headers={"x-functions-key": EVENTS_KEY}, timeout=120) as client:
                response = client.post("/api/events", content=_filled(b"{}", 16 * MIB - 8),
                                       headers={"content-type": "application/json"})
            order.append(f"delivery answered {response.status_code}")

        poster = threading.Thread(target=post_big)
        poster.start()
        assert hold.decoding.wait(60), "the delivery never started decoding"
        read = app.get(f"/api/jobs/{JOB}/task-outputs", timeout=60)  # while the decoder is held
        order.append(f"read answered {read.status_code}")
        hold.released.set()
        poster.join(120)
    finally:
        hold.released.set()
        logger.removeHandler(hold)
        logger.setLevel(previous)
    assert order == ["read answered 200", "delivery answered 413"]


# -- the smaller items ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["line\nbreak.txt", "cr\rlf\r\n.txt", "tab\tand/nested\n/x.txt", "trailing\n"])
def test_a_path_with_a_newline_is_reachable_by_its_single_output_route(app: RunningApp, path: str) -> None:
    name = f"t1/$TaskOutput/{path}"
    job_name = f"$JobOutput/{path}"
    assert app.post_events([blob_event(C, name, sequencer=1, size=3), blob_event(C, job_name, sequencer=1, size=4)]).json()["indexed"] == 2
    (listed,) = [i for i in app.all_pages(f"/api/jobs/{JOB}/task-outputs") if i["blobName"] == name]
    one = app.get(f"/api/jobs/{JOB}/tasks/t1/outputs/TaskOutput/{quote(listed['path'], safe='/')}")
    assert one.status_code == 200, one.text
    assert one.json()["blobName"] == name and one.json()["size"] == 3
    job_one = app.get(f"/api/jobs/{JOB}/outputs/JobOutput/{quote(path, safe='/')}")
    assert job_one.status_code == 200, job_one.text
    assert job_one.json()["blobName"] == job_name


def test_microsofts_cloudevents_sample_without_the_leading_slash_is_indexed(app: RunningApp) -> None:
    # cloud-event-schema.md ("Azure Blob Storage as an Event Grid source", CloudEvents schema).
    sample = from_local_account({
        "source": "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/Microsoft.Storage/storageAccounts/x",
        "subject": f"blobServices/default/containers/{C}/blobs/t1/$TaskPreview/new-file.png",
        "type": "Microsoft.Storage.BlobCreated",
        "time": "2019-11-18T15:13:39.4589254Z",
        "id": "9aeb0fdf-c01e-0131-0922-9eb54906e209",
        "data": {
            "api": "PutBlockList", "clientRequestId": "4c5dd7fb-2c48-4a27-bb30-5361b5de920a",
            "requestId": "9aeb0fdf-c01e-0131-0922-9eb549000000", "eTag": "0x8D76C39E4407333", "contentType": "image/png",
            "contentLength": 30699, "blobType": "BlockBlob",
            "url": f"https://x.blob.core.windows.net/{C}/t1/$TaskPreview/new-file.png",
            "sequencer": "000000000000000000000000000099240000000000c41c18",
            "storageDiagnostics": {"batchId": "681fe319-3006-00a8-0022-9e7cde000000"},
        },
        "specversion": "1.0",
    })
    body = app.post_events([sample]).json()
    assert body["indexed"] == 1, body
    listed = app.all_pages(f"/api/jobs/{JOB}/task-outputs", kind="TaskPreview")
    assert [(i["path"], i["size"]) for i in listed] == [("new-file.png", 30699)]


def test_the_openapi_document_states_the_ids_the_api_accepts(app: RunningApp) -> None:
    document = app.get("/api/openapi.json").json()
    parameters = {p["name"]: p["schema"] for p in document["paths"]["/api/jobs/{job_id}/tasks/{task_id}/outputs"]["get"]["parameters"]}
    assert parameters["job_id"]["maxLength"] == 88 and parameters["task_id"]["maxLength"] == 64
    for name, accepted, refused in (("job_id", ["a" * 64, f"{'s' * 64}:job-{'9' * 19}"], ["a" * 65, "a:b"]),
                                    ("task_id", ["t" * 64], ["t" * 65, "t:1"])):
        import re
        pattern = re.compile(parameters[name]["pattern"])
        assert all(pattern.search(v) for v in accepted) and not any(pattern.search(v) for v in refused)
    assert app.get(f"/api/jobs/{'a' * 65}/tasks").json()["error"]["code"] == "InvalidJobId"


@pytest.mark.parametrize("value", [False, True, 1.5, "5", None])
def test_a_quota_limit_is_an_integer_not_false(app: RunningApp, value: object) -> None:
    assert app.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": 7}).status_code == 200
    response = app.client.put(f"/api/jobs/{JOB}/quota", json={"maxOutputs": value})
    if value is None:  # absent: the limit is left as it is
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400, response.text
    assert app.get(f"/api/jobs/{JOB}/quota").json()["maxOutputs"] == 7


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", f"/api/jobs/{JOB}", {"GET", "PUT"}),
    ("PATCH", f"/api/jobs/{JOB}/quota", {"GET", "PUT"}),
    ("GET", "/api/events", {"POST", "OPTIONS"}),
    ("DELETE", "/api/jobs", {"GET"}),
    ("GET", f"/api/jobs/{JOB}/reindex", {"POST"}),
])
def test_a_405_says_every_method_the_path_allows(app: RunningApp, method: str, path: str, allowed: set[str]) -> None:
    headers = {"x-functions-key": EVENTS_KEY} if path == "/api/events" else {}
    response = app.client.request(method, path, headers=headers)
    assert response.status_code == 405, response.text
    assert set(response.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == allowed
    assert response.json()["error"]["code"] == "MethodNotAllowed"
