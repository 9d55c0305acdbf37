"""The API over real HTTP against a real Azurite: webhook semantics, listings, paging, auth."""

from __future__ import annotations

import random

import httpx
import pytest

from shared.conventions import container_name

from ..helpers import blob_event, from_local_account, load_events
from ..support.stack import RunningApp

JOB = "MyJob"
C = container_name(JOB)


def names(items: list[dict]) -> set[str]:
    return {item["blobName"] for item in items}


# -- health and auth -----------------------------------------------------------------------


def test_health_is_anonymous_and_reveals_nothing(app: RunningApp) -> None:
    response = httpx.get(f"{app.url}/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("headers,params", [({}, {}), ({"x-functions-key": "wrong"}, {}), ({}, {"code": "wrong"}), ({"x-functions-key": ""}, {})])
def test_no_key_or_a_wrong_key_is_401(app: RunningApp, headers: dict, params: dict) -> None:
    for method, path in [("GET", "/api/jobs"), ("POST", "/api/events"), ("GET", f"/api/jobs/{JOB}"), ("GET", "/api/openapi.json")]:
        response = httpx.request(method, f"{app.url}{path}", headers=headers, params=params, json=[])
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": {"code": "Unauthorized", "message": "A valid key is required."}}


def test_key_as_code_query_parameter_and_any_configured_key(app: RunningApp) -> None:
    assert httpx.get(f"{app.url}/api/jobs", params={"code": "test-key-1"}).status_code == 200
    assert httpx.get(f"{app.url}/api/jobs", headers={"x-functions-key": "second-key"}).status_code == 200


# -- webhook -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample",
    ["eventgrid_blob_created.json", "eventgrid_blob_deleted.json", "cloudevents_blob_created.json",
     "cloudevents_blob_deleted.json", "adls_create_then_flush.json"],
)
def test_documented_samples_answer_200(app: RunningApp, sample: str) -> None:
    events = [from_local_account(e) for e in load_events(sample)]
    response = app.post_events(events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["received"] == len(events)
    # the documented samples use containers that are not job containers: skipped, not errors
    assert body["skippedByReason"] == {"not-a-job-container": len(events)}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/cloudevents+json", "application/cloudevents-batch+json"]
)
def test_cloudevents_content_types(app: RunningApp, content_type: str) -> None:
    event = blob_event(C, "t1/$TaskOutput/ce.txt", schema="cloudevents", size=7)
    body = event if content_type == "application/cloudevents+json" else [event]
    import json as _json

    response = app.client.post("/api/events", content=_json.dumps(body), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["indexed"] == 1
    (item,) = app.all_pages(f"/api/jobs/{JOB}/tasks/t1/outputs")
    assert (item["path"], item["size"]) == ("ce.txt", 7)


def test_validation_handshake(app: RunningApp) -> None:
    response = app.post_events(load_events("subscription_validation.json"))
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def test_cloudevents_options_handshake(app: RunningApp) -> None:
    response = app.client.options("/api/events", headers={"WebHook-Request-Origin": "eventemitter.example.com"})
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert app.client.options("/api/events").status_code == 400


@pytest.mark.parametrize("body", [b"not json", b"{}", b"[]", b"[1]", b'{"data": {}}', b'"x"'])
def test_bodies_that_are_not_events_answer_400(app: RunningApp, body: bytes) -> None:
    response = app.client.post("/api/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidEvents"
    assert app.all_pages("/api/jobs") == []  # nothing indexed, nothing registered


def test_data_lake_create_then_flush_records_the_final_size(app: RunningApp) -> None:
    events = [from_local_account(e) for e in load_events("adls_create_then_flush.json")]
    for event in events:
        event["subject"] = event["subject"].replace("my-file-system/blobs/new-file.txt", f"{C}/blobs/t1/$TaskOutput/new-file.txt")
    random.shuffle(events)
    assert app.post_events(events).status_code == 200
    (item,) = app.all_pages(f"/api/jobs/{JOB}/task-outputs")
    assert item["size"] == 4096


# -- the core slice's done-when ------------------------------------------------------------

HOSTILE = {
    "task-1/$TaskOutput/frames/a b#1.txt": 11,
    "task-2/$TaskPreview/thumb ü%20.png": 22,
    "$JobOutput/movie.mp4": 33,
}


def test_outputs_round_trip_exactly_and_deletes_remove(app: RunningApp) -> None:
    events = [blob_event(C, name, size=size, sequencer=i + 1) for i, (name, size) in enumerate(HOSTILE.items())]
    assert app.post_events(events).json()["indexed"] == 3

    task_items = app.all_pages(f"/api/jobs/{JOB}/task-outputs")
    assert {(i["taskId"], i["kind"], i["path"], i["size"]) for i in task_items} == {
        ("task-1", "TaskOutput", "frames/a b#1.txt", 11),
        ("task-2", "TaskPreview", "thumb ü%20.png", 22),
    }
    (job_item,) = app.all_pages(f"/api/jobs/{JOB}/outputs")
    assert (job_item["taskId"], job_item["kind"], job_item["path"], job_item["size"]) == (None, "JobOutput", "movie.mp4", 33)
    assert job_item["jobId"] == JOB and job_item["container"] == C
    assert job_item["url"].endswith(f"/{C}/%24JobOutput/movie.mp4")
    preview = next(i for i in task_items if i["kind"] == "TaskPreview")
    assert preview["url"].endswith("/task-2/%24TaskPreview/thumb%20%C3%BC%2520.png")
    assert preview["blobName"] == "task-2/$TaskPreview/thumb ü%20.png"

    assert app.post_events([blob_event(C, "task-2/$TaskPreview/thumb ü%20.png", deleted=True, sequencer=9)]).status_code == 200
    assert names(app.all_pages(f"/api/jobs/{JOB}/task-outputs")) == {"task-1/$TaskOutput/frames/a b#1.txt"}
    summary = app.get(f"/api/jobs/{JOB}").json()
    assert summary["usage"] == {"outputs": 2, "bytes": 44}
    assert summary["tasks"] == 1


def test_filters_kind_and_prefix(app: RunningApp) -> None:
    blobs = [
        "t1/$TaskOutput/frames/1.png", "t1/$TaskOutput/frames/2.png", "t1/$TaskOutput/log.txt",
        "t1/$TaskPreview/p.png", "t2/$TaskPreview/p.png", "t2/$TaskLog/stdout.txt",
        "$JobOutput/a/x.mp4", "$JobOutput/b.mp4", "$JobPreview/a/y.png",
    ]
    app.post_events([blob_event(C, b, sequencer=i + 1) for i, b in enumerate(blobs)])
    get = lambda path, **p: names(app.all_pages(path, **p))  # noqa: E731
    assert get(f"/api/jobs/{JOB}/task-outputs", kind="TaskPreview") == {"t1/$TaskPreview/p.png", "t2/$TaskPreview/p.png"}
    assert get(f"/api/jobs/{JOB}/tasks/t1/outputs") == {b for b in blobs if b.startswith("t1/")}
    assert get(f"/api/jobs/{JOB}/tasks/T1/outputs", kind="TaskOutput", prefix="frames/") == {
        "t1/$TaskOutput/frames/1.png", "t1/$TaskOutput/frames/2.png"}
    assert get(f"/api/jobs/{JOB}/tasks/t1/outputs", prefix="frames/") == {
        "t1/$TaskOutput/frames/1.png", "t1/$TaskOutput/frames/2.png"}
    assert get(f"/api/jobs/{JOB}/outputs") == {"$JobOutput/a/x.mp4", "$JobOutput/b.mp4", "$JobPreview/a/y.png"}
    assert get(f"/api/jobs/{JOB}/outputs", prefix="a/") == {"$JobOutput/a/x.mp4", "$JobPreview/a/y.png"}
    assert get(f"/api/jobs/{JOB}/outputs", kind="JobOutput", prefix="a/") == {"$JobOutput/a/x.mp4"}
    assert get(f"/api/jobs/{JOB}/task-outputs", kind="NoSuchKind") == set()

    tasks = {t["taskId"]: t for t in app.all_pages(f"/api/jobs/{JOB}/tasks")}
    assert set(tasks) == {"t1", "t2"}
    assert tasks["t1"]["kinds"] == {"TaskOutput": {"outputs": 3, "bytes": 300}, "TaskPreview": {"outputs": 1, "bytes": 100}}
    assert tasks["t2"]["outputs"] == 2


def in_order_state(app: RunningApp) -> tuple:
    items = app.all_pages(f"/api/jobs/{JOB}/task-outputs")
    summary = app.get(f"/api/jobs/{JOB}").json()
    return (
        sorted((i["blobName"], i["size"], i["etag"]) for i in items),
        summary["usage"], summary["kinds"], summary["tasks"],
    )


def history() -> list[dict]:
    """Creates, overwrites and deletes of 60 blobs, in sequencer order."""
    events, seq = [], 0
    for n in range(60):
        name = f"task-{n % 7}/$TaskOutput/f{n}.bin"
        seq += 1
        events.append(blob_event(C, name, size=n + 1, sequencer=seq))
        if n % 3 == 0:  # overwritten with a new size
            seq += 1
            events.append(blob_event(C, name, size=1000 + n, sequencer=seq))
        if n % 5 == 0:  # deleted
            seq += 1
            events.append(blob_event(C, name, deleted=True, sequencer=seq))
        if n % 10 == 0:  # deleted, then created again
            seq += 1
            events.append(blob_event(C, name, size=7, sequencer=seq))
    return events


def test_duplicates_and_reordering_end_in_the_in_order_state(serve, settings, azurite) -> None:
    from ..support.stack import settings_for

    events = history()
    reference = serve(settings)
    for event in events:  # one event a request, in order: the reference
        assert reference.post_events([event]).status_code == 200
    expected = in_order_state(reference)
    assert expected[1]["outputs"] == len(expected[0])

    shuffled = serve(settings_for(azurite))
    rng = random.Random(7)
    deliveries = events * 2  # every event delivered twice
    rng.shuffle(deliveries)
    for start in range(0, len(deliveries), 37):
        assert shuffled.post_events(deliveries[start:start + 37]).status_code == 200
    assert in_order_state(shuffled) == expected

    # and the same batch once more changes nothing, counters included
    before = shuffled.get(f"/api/jobs/{JOB}").json()
    assert shuffled.post_events(events).json()["indexed"] == 0
    after = shuffled.get(f"/api/jobs/{JOB}").json()
    assert before == after


def test_late_create_never_resurrects_and_late_delete_never_removes(app: RunningApp) -> None:
    name = "t1/$TaskOutput/x.bin"
    app.post_events([blob_event(C, name, deleted=True, sequencer=5)])
    app.post_events([blob_event(C, name, size=10, sequencer=3)])  # older create arrives late
    assert app.all_pages(f"/api/jobs/{JOB}/task-outputs") == []
    app.post_events([blob_event(C, name, size=20, sequencer=8)])
    app.post_events([blob_event(C, name, deleted=True, sequencer=6)])  # older delete arrives late
    (item,) = app.all_pages(f"/api/jobs/{JOB}/task-outputs")
    assert item["size"] == 20
    app.post_events([blob_event(C, name, size=15, sequencer=7)])  # older overwrite
    assert app.all_pages(f"/api/jobs/{JOB}/task-outputs")[0]["size"] == 20
    assert app.get(f"/api/jobs/{JOB}").json()["usage"] == {"outputs": 1, "bytes": 20}


def test_unconventional_blobs_are_skipped_and_counted(app: RunningApp) -> None:
    response = app.post_events([
        blob_event("images", "t1/$TaskOutput/a"),
        blob_event(C, "loose-file.txt"),
        blob_event(C, "t1/$TaskOutput/ok.txt"),
    ])
    body = response.json()
    assert response.status_code == 200
    assert body["indexed"] == 1
    assert body["skippedByReason"] == {"not-a-job-container": 1, "not-a-convention-path": 1}


# -- summaries, jobs, paging ---------------------------------------------------------------


def test_job_summary_fields(app: RunningApp) -> None:
    app.post_events([
        blob_event(C, "t1/$TaskOutput/a", size=5, sequencer=1),
        blob_event(C, "t2/$TaskOutput/b", size=6, sequencer=2),
        blob_event(C, "t2/$TaskLog/c", size=7, sequencer=3),
        blob_event(C, "$JobOutput/d", size=8, sequencer=4),
    ])
    summary = app.get(f"/api/jobs/{JOB}").json()
    assert summary["jobId"] == JOB and summary["container"] == C
    assert summary["tasks"] == 2
    assert summary["kinds"] == {
        "JobOutput": {"outputs": 1, "bytes": 8},
        "TaskLog": {"outputs": 1, "bytes": 7},
        "TaskOutput": {"outputs": 2, "bytes": 11},
    }
    assert summary["usage"] == {"outputs": 4, "bytes": 26}
    assert summary["quota"] == {"maxOutputs": 0, "maxBytes": 0, "maxOutputsPerTask": 0}
    assert summary["rejections"] == {"outputs": 0, "bytes": 0}
    assert summary["lastIndexedAt"].endswith("Z")

    (job,) = app.all_pages("/api/jobs")
    assert (job["jobId"], job["container"], job["outputs"], job["bytes"], job["tasks"]) == ("myjob", C, 4, 26, 2)


def test_unknown_and_invalid_ids(app: RunningApp) -> None:
    assert app.get("/api/jobs/never-seen").status_code == 404
    assert app.get("/api/jobs/never-seen").json()["error"]["code"] == "JobNotFound"
    assert app.get("/api/jobs/never-seen/task-outputs").json() == {"value": []}
    for path in ["/api/jobs/bad%20job%21", "/api/jobs/bad%20job/outputs", "/api/jobs/x'%20or%20'1'%3D'1/task-outputs",
                 "/api/jobs/ok/tasks/bad%20task/outputs", "/api/jobs/" + "x" * 65]:
        response = app.get(path)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] in ("InvalidJobId", "InvalidTaskId")
    assert app.get(f"/api/jobs/{JOB}/outputs", params={"kind": ""}).status_code == 400
    assert app.get(f"/api/jobs/{JOB}/outputs", params={"maxpagesize": 0}).status_code == 400
    assert app.get(f"/api/jobs/{JOB}/outputs", params={"maxpagesize": 5001}).status_code == 400
    assert app.get("/api/nope").status_code == 404


def test_schedule_job_ids_with_a_colon_work(app: RunningApp) -> None:
    job = "nightly:job-7"
    app.post_events([blob_event(container_name(job), "t1/$TaskPreview/thumb.png", size=3)])
    (item,) = app.all_pages(f"/api/jobs/{job}/task-outputs", kind="TaskPreview")
    assert item["jobId"] == job and item["path"] == "thumb.png"
    assert app.get(f"/api/jobs/{job}").json()["usage"]["outputs"] == 1


@pytest.mark.parametrize("page_size", [1, 7, 50, 1000])
def test_paging_returns_every_output_exactly_once(app: RunningApp, page_size: int) -> None:
    blobs = [f"task-{n % 13}/${'TaskPreview' if n % 4 == 0 else 'TaskOutput'}/f{n:03d}.bin" for n in range(150)]
    app.post_events([blob_event(C, b, sequencer=i + 1) for i, b in enumerate(blobs)])
    for path, expected in [
        (f"/api/jobs/{JOB}/task-outputs", set(blobs)),
        (f"/api/jobs/{JOB}/tasks/task-0/outputs", {b for b in blobs if b.startswith("task-0/")}),
    ]:
        items = app.all_pages(path, maxpagesize=page_size)
        assert len(items) == len(expected) and names(items) == expected
    first = app.get(f"/api/jobs/{JOB}/task-outputs", params={"maxpagesize": page_size}).json()
    assert len(first["value"]) == min(page_size, 150)
    assert ("nextLink" in first) == (page_size < 150)


def test_tampered_or_moved_tokens_are_400(app: RunningApp) -> None:
    app.post_events([blob_event(C, f"t/$TaskOutput/{n}", sequencer=n + 1) for n in range(5)])
    app.post_events([blob_event(container_name("OtherJob"), f"t/$TaskOutput/{n}", sequencer=n + 1) for n in range(5)])
    next_link = app.get(f"/api/jobs/{JOB}/task-outputs", params={"maxpagesize": 2}).json()["nextLink"]
    assert "code=" not in next_link  # keys never travel in links
    assert app.get(next_link).status_code == 200
    token = httpx.URL(next_link).params["continuationToken"]
    body, signature = token.split(".")
    tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + signature
    for bad in [tampered, token + "x", "garbage", "a.b"]:
        response = app.get(f"/api/jobs/{JOB}/task-outputs", params={"maxpagesize": 2, "continuationToken": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "InvalidContinuationToken"
    for other in ["/api/jobs/OtherJob/task-outputs", f"/api/jobs/{JOB}/outputs", f"/api/jobs/{JOB}/tasks/t/outputs"]:
        assert app.get(other, params={"continuationToken": token}).status_code == 400, other
    assert app.get(f"/api/jobs/{JOB}/task-outputs", params={"continuationToken": token, "kind": "TaskLog"}).status_code == 400
