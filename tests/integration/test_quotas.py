"""Quotas over real HTTP against a real Azurite (SPEC §4): limits, rejections, re-admission."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from azure.storage.blob import BlobServiceClient

from shared.conventions import container_name

from ..helpers import blob_event
from ..support.stack import RunningApp, settings_for
from ..support.workload import rows_by_partition, spread

JOB = "quota-job"
C = container_name(JOB)


def summary(app: RunningApp, job: str = JOB) -> dict:
    response = app.get(f"/api/jobs/{job}")
    assert response.status_code == 200, response.text
    return response.json()


def listed(app: RunningApp, job: str = JOB) -> list[dict]:
    return app.all_pages(f"/api/jobs/{job}/task-outputs") + app.all_pages(f"/api/jobs/{job}/outputs")


def put_quota(app: RunningApp, job: str = JOB, **limits: int) -> dict:
    response = app.client.put(f"/api/jobs/{job}/quota", json=limits)
    assert response.status_code == 200, response.text
    return response.json()


def task_events(count: int, *, size: int = 10, tasks: int = 8) -> list[dict]:
    return [
        blob_event(C, f"task-{i % tasks}/$TaskOutput/out-{i:03d}.bin", sequencer=i + 1, size=size)
        for i in range(count)
    ]


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])
def test_max_outputs_50_of_80_then_raise_to_100_admits_all(app: RunningApp, partitions: int) -> None:
    spread(app, JOB, partitions)
    put_quota(app, maxOutputs=50)
    response = app.post_events(task_events(80))
    assert response.status_code == 200, response.text
    assert (response.json()["indexed"], response.json()["rejected"]) == (50, 30)

    items, rejected = listed(app), app.all_pages(f"/api/jobs/{JOB}/rejections")
    assert len(items) == 50
    assert len(rejected) == 30
    assert {r["reason"] for r in rejected} == {"maxOutputs"}
    assert {i["blobName"] for i in items}.isdisjoint(r["blobName"] for r in rejected)
    body = summary(app)
    assert body["usage"] == {"outputs": 50, "bytes": 500}
    assert body["rejections"] == {"outputs": 30, "bytes": 300}
    assert body["quota"] == {"maxOutputs": 50, "maxBytes": 0, "maxOutputsPerTask": 0}

    assert put_quota(app, maxOutputs=100)["maxOutputs"] == 100
    assert len(listed(app)) == 80  # at once: no new event needed
    assert app.all_pages(f"/api/jobs/{JOB}/rejections") == []
    body = summary(app)
    assert body["usage"] == {"outputs": 80, "bytes": 800}
    assert body["rejections"] == {"outputs": 0, "bytes": 0}
    assert len(rows_by_partition(app, C)) == partitions


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])
def test_raising_partially_admits_up_to_the_new_limit(app: RunningApp, partitions: int) -> None:
    spread(app, JOB, partitions)
    put_quota(app, maxOutputs=10)
    assert app.post_events(task_events(30)).status_code == 200
    put_quota(app, maxOutputs=25)
    body = summary(app)
    assert body["usage"]["outputs"] == 25
    assert body["rejections"]["outputs"] == 5
    assert len(listed(app)) == 25
    assert len(app.all_pages(f"/api/jobs/{JOB}/rejections")) == 5


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])
def test_max_bytes(app: RunningApp, partitions: int) -> None:
    spread(app, JOB, partitions)
    put_quota(app, maxBytes=1000)
    events = [blob_event(C, f"t{i}/$TaskOutput/f{i}.dat", sequencer=i + 1, size=300) for i in range(5)]
    assert app.post_events(events).status_code == 200
    body = summary(app)
    assert body["usage"] == {"outputs": 3, "bytes": 900}
    assert body["rejections"] == {"outputs": 2, "bytes": 600}
    assert {r["reason"] for r in app.all_pages(f"/api/jobs/{JOB}/rejections")} == {"maxBytes"}
    # A small blob still fits under the byte limit, a large one does not.
    small = blob_event(C, "$JobOutput/small.dat", sequencer=10, size=100)
    big = blob_event(C, "$JobOutput/big.dat", sequencer=11, size=101)
    assert app.post_events([small]).json()["indexed"] == 1
    assert app.post_events([big]).json()["rejected"] == 1
    assert summary(app)["usage"] == {"outputs": 4, "bytes": 1000}


def test_overwrite_that_grows_past_max_bytes_is_rejected_and_uncounted(app: RunningApp) -> None:
    put_quota(app, maxBytes=1000)
    assert app.post_events([blob_event(C, "$JobOutput/log.txt", sequencer=1, size=400)]).status_code == 200
    assert app.post_events([blob_event(C, "$JobOutput/log.txt", sequencer=2, size=900)]).status_code == 200
    assert summary(app)["usage"] == {"outputs": 1, "bytes": 900}
    assert app.post_events([blob_event(C, "$JobOutput/log.txt", sequencer=3, size=1200)]).status_code == 200
    body = summary(app)
    assert body["usage"] == {"outputs": 0, "bytes": 0}
    assert body["rejections"] == {"outputs": 1, "bytes": 1200}
    assert listed(app) == []
    # Deleting a rejected blob removes its rejection too.
    assert app.post_events([blob_event(C, "$JobOutput/log.txt", sequencer=4, deleted=True)]).status_code == 200
    body = summary(app)
    assert body["rejections"] == {"outputs": 0, "bytes": 0}
    assert app.all_pages(f"/api/jobs/{JOB}/rejections") == []


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])
def test_max_outputs_per_task(app: RunningApp, partitions: int) -> None:
    spread(app, JOB, partitions)
    put_quota(app, maxOutputsPerTask=3)
    events = [blob_event(C, f"t{t}/$TaskPreview/p{i}.png", sequencer=10 * t + i + 1) for t in range(4) for i in range(5)]
    events.append(blob_event(C, "$JobOutput/not-a-task-output.txt", sequencer=99))
    response = app.post_events(events)
    assert response.status_code == 200, response.text
    assert (response.json()["indexed"], response.json()["rejected"]) == (13, 8)
    tasks = {t["taskId"]: t for t in app.all_pages(f"/api/jobs/{JOB}/tasks")}
    assert {t: tasks[t]["outputs"] for t in tasks} == {f"t{t}": 3 for t in range(4)}
    assert {r["reason"] for r in app.all_pages(f"/api/jobs/{JOB}/rejections")} == {"maxOutputsPerTask"}
    # Deleting one of t0's outputs makes room for exactly one more in t0, none elsewhere.
    kept = sorted(i["path"] for i in app.all_pages(f"/api/jobs/{JOB}/tasks/t0/outputs"))
    assert app.post_events([blob_event(C, f"t0/$TaskPreview/{kept[0]}", sequencer=500, deleted=True)]).status_code == 200
    response = app.post_events([
        blob_event(C, "t0/$TaskPreview/new.png", sequencer=501),
        blob_event(C, "t1/$TaskPreview/new.png", sequencer=502),
    ])
    assert response.json()["rejected"] == 1
    assert len(app.all_pages(f"/api/jobs/{JOB}/tasks/t0/outputs")) == 3
    assert len(app.all_pages(f"/api/jobs/{JOB}/tasks/t1/outputs")) == 3
    put_quota(app, maxOutputsPerTask=0)
    assert summary(app)["usage"]["outputs"] == 4 * 5 - 1 + 2 + 1
    assert summary(app)["rejections"]["outputs"] == 0
    assert len(rows_by_partition(app, C)) == min(partitions, 4)


def test_a_default_job_wide_limit_applies_to_a_spread_job(azurite, serve: Callable[..., RunningApp]) -> None:
    app = serve(settings_for(azurite, QUOTA_MAX_OUTPUTS_PER_JOB="5"))
    spread(app, JOB, 4)
    assert app.get(f"/api/jobs/{JOB}/quota").json() == {"maxOutputs": 5, "maxBytes": 0, "maxOutputsPerTask": 0}
    response = app.post_events(task_events(12, tasks=12))
    assert (response.json()["indexed"], response.json()["rejected"]) == (5, 7)
    body = summary(app)
    assert body["usage"] == {"outputs": 5, "bytes": 50}
    assert body["rejections"] == {"outputs": 7, "bytes": 70}
    assert body["quota"]["maxOutputs"] == 5
    assert len(rows_by_partition(app, C)) == 4
    # Lifting it on the spread job admits the rest.
    assert put_quota(app, maxOutputs=0)["maxOutputs"] == 0
    assert summary(app)["usage"] == {"outputs": 12, "bytes": 120}


@pytest.mark.parametrize(
    "defaults,expected_quota",
    [
        ({"QUOTA_MAX_OUTPUTS_PER_JOB": "5"}, {"maxOutputs": 5, "maxBytes": 0, "maxOutputsPerTask": 0}),
        ({"QUOTA_MAX_BYTES_PER_JOB": "50"}, {"maxOutputs": 0, "maxBytes": 50, "maxOutputsPerTask": 0}),
        ({"QUOTA_MAX_OUTPUTS_PER_TASK": "1"}, {"maxOutputs": 0, "maxBytes": 0, "maxOutputsPerTask": 1}),
    ],
)
def test_defaults_come_from_settings_and_overrides_win(
    azurite, serve: Callable[..., RunningApp], defaults: dict, expected_quota: dict
) -> None:
    app = serve(settings_for(azurite, **defaults))
    assert app.get(f"/api/jobs/{JOB}/quota").json() == expected_quota
    response = app.post_events(task_events(8, size=10, tasks=4))
    assert response.status_code == 200
    body = summary(app)
    assert body["quota"] == expected_quota
    assert body["usage"]["outputs"] == {"maxOutputs": 5, "maxBytes": 5, "maxOutputsPerTask": 4}[
        next(k for k, v in expected_quota.items() if v)
    ]
    assert body["usage"]["outputs"] + body["rejections"]["outputs"] == 8
    # A per-job override replaces the default; 0 lifts the limit and admits everything.
    field = next(k for k, v in expected_quota.items() if v)
    assert put_quota(app, **{field: 0})[field] == 0
    assert summary(app)["usage"] == {"outputs": 8, "bytes": 80}
    # Another job still gets the defaults.
    assert app.get("/api/jobs/other-job/quota").json() == expected_quota


def test_quota_put_validation(app: RunningApp) -> None:
    for body in ({"maxOutputs": -1}, {"maxOutputs": "ten"}, {"maxOutputs": 1.5}, {"unknown": 1}, [1], "x"):
        response = app.client.put(f"/api/jobs/{JOB}/quota", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == "InvalidRequest"
    assert app.client.put("/api/jobs/bad%20job/quota", json={"maxOutputs": 1}).status_code == 400
    # A partial update keeps the other limits.
    put_quota(app, maxOutputs=7, maxBytes=70)
    assert put_quota(app, maxOutputsPerTask=2) == {"maxOutputs": 7, "maxBytes": 70, "maxOutputsPerTask": 2}


def test_indexer_never_writes_to_the_outputs_container(app: RunningApp, blob_service: BlobServiceClient) -> None:
    container = blob_service.get_container_client(C)
    container.create_container()
    for i in range(12):
        container.upload_blob(f"task-{i % 3}/$TaskOutput/real-{i}.txt", b"x" * (i + 1))

    def snapshot() -> tuple[dict, list]:
        blobs = {
            b.name: (b.etag, b.last_modified, b.size, dict(b.metadata or {}), b.tag_count)
            for b in container.list_blobs(include=["metadata", "tags", "snapshots", "versions", "deleted"])
        }
        props = container.get_container_properties()
        return blobs, [props.etag, props.last_modified, dict(props.metadata or {})]

    containers_before = sorted(c.name for c in blob_service.list_containers())
    before = snapshot()
    put_quota(app, maxOutputs=5)
    events = [
        blob_event(C, b.name, sequencer=n + 1, size=b.size) for n, b in enumerate(container.list_blobs())
    ]
    assert app.post_events(events).json()["rejected"] == 7
    delete = blob_event(C, events[0]["subject"].split("/blobs/", 1)[1], sequencer=100, deleted=True)
    assert app.post_events([delete]).status_code == 200
    put_quota(app, maxOutputs=100)
    assert summary(app)["usage"]["outputs"] == 11
    assert snapshot() == before  # rejected, readmitted or "deleted": the blobs are untouched
    assert sorted(c.name for c in blob_service.list_containers()) == containers_before


def feed_changes(app: RunningApp, **params: str) -> tuple[list[dict], str]:
    """Every change from ``params`` on (following nextLink), and the cursor after them."""
    body = app.get(f"/api/jobs/{JOB}/changes", params=params).json()
    changes = list(body["value"])
    while "nextLink" in body:
        body = app.client.get(body["nextLink"]).json()
        changes += body["value"]
    return changes, body["cursor"]


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])
def test_rejections_and_admissions_are_in_the_change_feed_and_the_crossing_resets(app: RunningApp, partitions: int) -> None:
    spread(app, JOB, partitions)
    put_quota(app, maxOutputs=5)
    _, cursor = feed_changes(app, **{"from": "start"})
    assert app.post_events(task_events(12, tasks=12)).status_code == 200
    changes, cursor = feed_changes(app, cursor=cursor)
    assert Counter(c["change"] for c in changes) == {"created": 5, "rejected": 7}
    assert app.get(f"/api/jobs/{JOB}").json()["rejections"]["outputs"] == 7
    put_quota(app, maxOutputs=9)
    changes, cursor = feed_changes(app, cursor=cursor)
    assert Counter(c["change"] for c in changes) == {"admitted": 4}
    assert summary(app)["usage"]["outputs"] == 9
    # Lowering below usage rejects nothing already admitted and admits nothing new.
    put_quota(app, maxOutputs=6)
    assert app.post_events(task_events(14, tasks=14)[12:]).status_code == 200
    body = summary(app)
    assert body["usage"]["outputs"] == 9 and body["rejections"]["outputs"] == 5
    assert len(rows_by_partition(app, C)) == partitions
