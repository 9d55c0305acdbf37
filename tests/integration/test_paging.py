"""Paging over every list route: each item exactly once; tokens bound to their query and key."""

from __future__ import annotations

import httpx
import pytest

from shared.conventions import container_name

from ..helpers import blob_event
from ..support.stack import RunningApp, settings_for

JOB = "PagedJob"
C = container_name(JOB)


def seed(app: RunningApp) -> list[str]:
    blobs = [f"task-{n % 9}/${'TaskPreview' if n % 3 == 0 else 'TaskLog'}/p{n % 2}/f{n:03d}.txt" for n in range(60)]
    blobs += [f"$JobOutput/{'a' if n % 2 else 'b'}/j{n:02d}.bin" for n in range(25)]
    blobs += [f"$MyCustomKind/c{n}.bin" for n in range(5)]
    events = [blob_event(C, name, sequencer=i + 1, size=i + 1) for i, name in enumerate(blobs)]
    for job in range(12):
        events.append(blob_event(container_name(f"other-{job}"), "t/$TaskOutput/x", sequencer=1))
    assert app.post_events(events).status_code == 200
    return blobs


def walk(app: RunningApp, path: str, **params) -> list[dict]:
    """Every page, checking each page's size bound on the way."""
    size = params.get("maxpagesize", 1000)
    items: list[dict] = []
    response = app.get(path, params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["value"]) <= size
        items.extend(body["value"])
        if "nextLink" not in body:
            return items
        assert len(body["value"]) == size  # only a last page may be short
        response = app.get(body["nextLink"])


@pytest.mark.parametrize("page_size", [1, 4, 5000])
def test_every_list_route_returns_each_item_once(app: RunningApp, page_size: int) -> None:
    blobs = seed(app)
    outputs = lambda items: sorted(i["blobName"] for i in items)  # noqa: E731
    assert outputs(walk(app, f"/api/jobs/{JOB}/outputs", maxpagesize=page_size)) == sorted(b for b in blobs if b.startswith("$"))
    assert outputs(walk(app, f"/api/jobs/{JOB}/outputs", prefix="a/", maxpagesize=page_size)) == sorted(
        b for b in blobs if b.startswith("$JobOutput/a/"))
    assert outputs(walk(app, f"/api/jobs/{JOB}/task-outputs", kind="TaskLog", prefix="p1/", maxpagesize=page_size)) == sorted(
        b for b in blobs if "/$TaskLog/p1/" in b)
    assert outputs(walk(app, f"/api/jobs/{JOB}/tasks/task-3/outputs", maxpagesize=page_size)) == sorted(
        b for b in blobs if b.startswith("task-3/"))
    tasks = walk(app, f"/api/jobs/{JOB}/tasks", maxpagesize=page_size)
    assert sorted(t["taskId"] for t in tasks) == [f"task-{n}" for n in range(9)]
    jobs = walk(app, "/api/jobs", maxpagesize=page_size)
    assert sorted(j["container"] for j in jobs) == sorted([C] + [container_name(f"other-{n}") for n in range(12)])


def test_rejections_page_too(serve, azurite) -> None:
    app = serve(settings_for(azurite, QUOTA_MAX_OUTPUTS_PER_TASK="2"))
    app.post_events([blob_event(C, f"t{n % 2}/$TaskOutput/{n:02d}", sequencer=n + 1) for n in range(14)])
    rejected = walk(app, f"/api/jobs/{JOB}/rejections", maxpagesize=3)
    assert len(rejected) == 10 and len({r["blobName"] for r in rejected}) == 10
    assert {r["reason"] for r in rejected} == {"maxOutputsPerTask"}


def token_of(app: RunningApp, path: str, **params) -> str:
    body = app.get(path, params={"maxpagesize": 1, **params}).json()
    return httpx.URL(body["nextLink"]).params["continuationToken"]


def test_tokens_are_bound_to_route_job_and_filters(app: RunningApp) -> None:
    seed(app)
    other = "other-1"
    cases = {
        "jobs": ("/api/jobs", {}),
        "tasks": (f"/api/jobs/{JOB}/tasks", {}),
        "outputs-prefix": (f"/api/jobs/{JOB}/outputs", {"prefix": "a/"}),
        "task-outputs-kind": (f"/api/jobs/{JOB}/task-outputs", {"kind": "TaskLog"}),
        "one-task": (f"/api/jobs/{JOB}/tasks/task-1/outputs", {}),
    }
    tokens = {name: token_of(app, path, **params) for name, (path, params) in cases.items()}
    for name, (path, params) in cases.items():
        assert app.get(path, params={**params, "maxpagesize": 1, "continuationToken": tokens[name]}).status_code == 200
        for other_name, token in tokens.items():
            if other_name != name:
                response = app.get(path, params={**params, "continuationToken": token})
                assert response.status_code == 400, (name, other_name)
                assert response.json()["error"]["code"] == "InvalidContinuationToken"
    moved = [
        (f"/api/jobs/{other}/tasks", {}, tokens["tasks"]),
        (f"/api/jobs/{JOB}/outputs", {"prefix": "b/"}, tokens["outputs-prefix"]),
        (f"/api/jobs/{JOB}/outputs", {}, tokens["outputs-prefix"]),
        (f"/api/jobs/{JOB}/task-outputs", {"kind": "TaskPreview"}, tokens["task-outputs-kind"]),
        (f"/api/jobs/{JOB}/tasks/task-2/outputs", {}, tokens["one-task"]),
        (f"/api/jobs/{JOB}/rejections", {}, tokens["tasks"]),
    ]
    for path, params, token in moved:
        assert app.get(path, params={**params, "continuationToken": token}).status_code == 400, path


def test_tokens_signed_with_another_key_are_400(serve, azurite) -> None:
    settings = settings_for(azurite)
    first = serve(settings)
    seed(first)
    token = token_of(first, f"/api/jobs/{JOB}/task-outputs")
    same_key = serve(settings)  # another instance with the same TOKEN_SIGNING_KEY
    assert same_key.get(f"/api/jobs/{JOB}/task-outputs", params={"continuationToken": token}).status_code == 200
    import dataclasses

    other_key = serve(dataclasses.replace(settings, token_signing_key="another-signing-key"))
    response = other_key.get(f"/api/jobs/{JOB}/task-outputs", params={"continuationToken": token})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidContinuationToken"


@pytest.mark.parametrize("value", ["0", "-1", "5001", "abc", "1.5", ""])
def test_maxpagesize_bounds(app: RunningApp, value: str) -> None:
    response = app.get(f"/api/jobs/{JOB}/task-outputs", params={"maxpagesize": value})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidRequest"


def test_one_tasks_listing_survives_a_new_kind_between_pages(app: RunningApp) -> None:
    app.post_events([blob_event(C, f"t1/$TaskOutput/{n}", sequencer=n + 1) for n in range(4)])
    first = app.get(f"/api/jobs/{JOB}/tasks/t1/outputs", params={"maxpagesize": 2}).json()
    # a kind that sorts before TaskOutput appears for the task while the client pages
    app.post_events([blob_event(C, "t1/$TaskLog/stdout.txt", sequencer=50)])
    second = app.get(first["nextLink"]).json()
    assert "nextLink" not in second
    seen = [i["blobName"] for i in first["value"] + second["value"]]
    assert len(seen) == len(set(seen))
    assert {f"t1/$TaskOutput/{n}" for n in range(4)} <= set(seen)
