"""Reindex of any size: past REINDEX_REQUEST_SECONDS a reindex answers 202 + Operation-Location,
its status monitor is in Table storage (any instance answers), and the reconciler finishes an
operation whose instance stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx
from azure.storage.blob import BlobServiceClient

from shared.domain.conventions import container_name
from shared.service import Service
from shared.settings import ReconcileSettings, Settings

from ..helpers import blob_event, eventually
from ..support.stack import RunningApp, settings_for

NAMES = [f"task-{n % 3}/$TaskOutput/f{n:02d}.bin" for n in range(23)] + ["$JobOutput/all.zip"]


def long_settings(azurite) -> Settings:
    """Every reindex outlives its request (0 s), and is cut into slices of 5."""
    return dataclasses.replace(settings_for(azurite), reconcile=dataclasses.replace(
        ReconcileSettings(), reindex_request_seconds=0, sweep_blobs=5, sweep_rows=5))


def seed(app: RunningApp, blob_service: BlobServiceClient, job: str) -> None:
    """Blobs of which the index knows none but a ghost whose blob is gone."""
    container = container_name(job)
    client = blob_service.get_container_client(container)
    client.create_container()  # a name of its own (``unique``): the suite's blob account is shared
    for name in NAMES:
        client.upload_blob(name, b"x" * 3)
    assert app.post_events([blob_event(container, "task-7/$TaskLog/ghost.txt", sequencer=5)]).status_code == 200


def unique(job: str) -> str:
    return f"{job}-{uuid.uuid4().hex[:8]}"


def indexed(app: RunningApp, job: str) -> set[str]:
    return {i["blobName"] for i in app.all_pages(f"/api/jobs/{job}/task-outputs")} | {
        i["blobName"] for i in app.all_pages(f"/api/jobs/{job}/outputs")}


def test_a_reindex_past_its_request_answers_202_and_any_instance_reports_it_to_the_end(
        serve: Callable[..., RunningApp], azurite, blob_service: BlobServiceClient) -> None:
    settings = long_settings(azurite)
    app, other = serve(settings), serve(settings)
    job = unique("long-reindex")
    seed(app, blob_service, job)
    response = app.client.post(f"/api/jobs/{job}/reindex")
    assert response.status_code == 202
    location = response.headers["Operation-Location"]
    assert location.startswith("/api/operations/")
    body = response.json()
    assert body["status"] == "running" and location.endswith(body["id"])
    assert set(body["progress"]) >= {"percentComplete", "phase", "blobsListed", "rowsChecked"}

    def finished() -> bool:
        return other.get(location).json()["status"] != "running"  # another instance answers

    assert eventually(finished, within=120)
    done = other.get(location).json()
    assert done["status"] == "succeeded", done
    assert done["progress"]["percentComplete"] == 100
    assert done["result"] == {"jobId": job, "container": container_name(job), "added": len(NAMES), "fixed": 0,
                              "removed": 1, "unchanged": 0}
    assert indexed(app, job) == set(NAMES)


def test_the_reconciler_finishes_an_operation_whose_instance_stopped(
        serve: Callable[..., RunningApp], azurite, blob_service: BlobServiceClient) -> None:
    settings = long_settings(azurite)
    app = serve(settings)
    job = unique("orphaned-reindex")
    seed(app, blob_service, job)

    async def start_then_stop() -> str:  # an instance that took the request and was recycled at once
        service = await Service.create(settings)
        try:
            return (await service.operations.start(job, container_name(job))).id
        finally:
            await service.close()

    operation_id = asyncio.run(start_then_stop())
    stalled = app.get(f"/api/operations/{operation_id}").json()
    assert stalled["status"] == "running" and stalled["progress"]["blobsListed"] == 0

    async def reconcile(now: datetime) -> dict:
        service = await Service.create(settings)
        try:
            return (await service.reconciler().run(now)).as_dict()
        finally:
            await service.close()

    # Not stale yet: the reconciler leaves it to its instance.
    assert asyncio.run(reconcile(datetime.now(timezone.utc)))["operations_resumed"] == 0
    report = asyncio.run(reconcile(datetime.now(timezone.utc) + timedelta(minutes=10)))
    assert report["operations_resumed"] == 1
    done = app.get(f"/api/operations/{operation_id}").json()
    assert done["status"] == "succeeded"
    assert done["progress"]["phase"] == "done"
    assert indexed(app, job) == set(NAMES)


def test_operation_ids_are_checked_and_need_a_key(app: RunningApp) -> None:
    assert app.get("/api/operations/not-an-id").json()["error"]["code"] == "InvalidOperationId"
    missing = app.get("/api/operations/" + "0" * 32)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "OperationNotFound"
    assert httpx.get(f"{app.url}/api/operations/{'0' * 32}").status_code == 401


def test_a_reindex_of_an_unknown_job_is_404_and_starts_nothing(app: RunningApp) -> None:
    response = app.client.post("/api/jobs/never-seen-job/reindex")
    assert response.status_code == 404 and response.json()["error"]["code"] == "JobNotFound"
