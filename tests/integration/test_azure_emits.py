"""What Azure really emits (SPEC §10): legal names of any length, Data Lake Gen2 renames and
directory deletes, CloudEvents through the trigger, and the reconciler for what no event says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.worker_binding import trigger_argument
from shared.domain.conventions import container_name
from shared.service import Service
from shared.settings import Settings

from ..helpers import blob_event, real_blob_event
from ..support.stack import RunningApp

ACCOUNT_URL = "https://devstoreaccount1.dfs.core.windows.net"  # the suite's outputs account


def namespace_event(event_type: str, container: str, name: str, sequencer: int, **data: object) -> dict:
    return {
        "id": f"ns-{sequencer}",
        "topic": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": event_type,
        "eventTime": "2026-11-23T10:00:00Z",
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {"api": event_type.rsplit(".", 1)[1], "sequencer": f"{sequencer:032d}", **data},
    }


def upload(blob_service: BlobServiceClient, container: str, names: list[str]) -> None:
    client = blob_service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for name in names:
        client.upload_blob(name, name.encode(), overwrite=True)


def indexed_names(app: RunningApp, job: str) -> set[str]:
    return {item["blobName"] for item in app.all_pages(f"/api/jobs/{job}/task-outputs")} | {
        item["blobName"] for item in app.all_pages(f"/api/jobs/{job}/outputs")}


def container_names(blob_service: BlobServiceClient, container: str) -> set[str]:
    return {b.name for b in blob_service.get_container_client(container).list_blobs()}


def post_real(app: RunningApp, blob_service: BlobServiceClient, container: str, names: list[str], start: int) -> None:
    events = [real_blob_event(blob_service, container, name, start + offset) for offset, name in enumerate(names)]
    assert app.post_events(events).status_code == 200


# -- any legal blob name ------------------------------------------------------------------


def test_a_1000_character_name_among_50_others_indexes_all_51(app: RunningApp) -> None:
    job = "long-names"
    container = container_name(job)
    long_path = "d/" * 200 + "é" * 300 + "-end.txt"  # 1,000 characters after the task and kind
    long_name = f"t1/$TaskOutput/{long_path}"[:1024]
    names = [f"t1/$TaskOutput/file-{i}.txt" for i in range(50)] + [long_name]
    events = [blob_event(container, name, sequencer=i + 1) for i, name in enumerate(names)]
    response = app.post_events(events)
    assert response.status_code == 200, response.text
    assert response.json()["indexed"] == 51
    listed = app.all_pages(f"/api/jobs/{job}/tasks/t1/outputs")
    assert {item["blobName"] for item in listed} == set(names)
    one_path = long_name.split("/", 2)[2]
    one = app.get(f"/api/jobs/{job}/tasks/t1/outputs/TaskOutput/{one_path}")
    assert one.status_code == 200 and one.json()["blobName"] == long_name
    # A prefix longer than a key can hold still finds exactly the long output.
    by_prefix = app.all_pages(f"/api/jobs/{job}/tasks/t1/outputs", kind="TaskOutput", prefix=one_path[:-3])
    assert [item["blobName"] for item in by_prefix] == [long_name]


def test_a_kind_of_any_length_is_indexed_and_listed_by_kind(app: RunningApp) -> None:
    job = "long-kinds"
    container = container_name(job)
    kind_a, kind_b = "K" * 600 + "a", "K" * 600 + "b"  # differ only past any key's cut
    events = [blob_event(container, f"t1/${kind_a}/x.txt", sequencer=1),
              blob_event(container, f"t1/${kind_b}/x.txt", sequencer=2),
              blob_event(container, f"${kind_a}/job.txt", sequencer=3)]
    assert app.post_events(events).json()["indexed"] == 3
    assert [i["kind"] for i in app.all_pages(f"/api/jobs/{job}/task-outputs", kind=kind_a)] == [kind_a]
    assert [i["kind"] for i in app.all_pages(f"/api/jobs/{job}/tasks/t1/outputs", kind=kind_b)] == [kind_b]
    assert [i["path"] for i in app.all_pages(f"/api/jobs/{job}/outputs", kind=kind_a)] == ["job.txt"]
    summary = app.get(f"/api/jobs/{job}").json()
    assert summary["kinds"][kind_a] == {"outputs": 2, "bytes": 200}


def test_reindex_of_a_job_with_a_1024_character_blob_name(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "long-reindex"
    container = container_name(job)
    name = ("t1/$TaskLog/" + "n" * 1100)[:1024]
    upload(blob_service, container, [name, "t1/$TaskLog/short.txt"])
    response = app.client.post(f"/api/jobs/{job}/reindex")
    assert response.status_code == 200, response.text
    assert response.json()["added"] == 2
    assert indexed_names(app, job) == container_names(blob_service, container)


# -- Data Lake Gen2 namespace events -------------------------------------------------------


def test_blob_renamed_removes_the_old_entry_and_indexes_the_new(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "dl-rename"
    container = container_name(job)
    upload(blob_service, container, ["t1/$TaskOutput/old.txt"])
    post_real(app, blob_service, container, ["t1/$TaskOutput/old.txt"], 1)
    # What the rename leaves in the container, then the one event Azure sends for it.
    blob_client = blob_service.get_container_client(container)
    blob_client.upload_blob("t1/$TaskOutput/new name.txt", b"renamed!", overwrite=True)
    blob_client.delete_blob("t1/$TaskOutput/old.txt")
    event = namespace_event("Microsoft.Storage.BlobRenamed", container, "t1/$TaskOutput/new name.txt", 5,
                            sourceUrl=f"{ACCOUNT_URL}/{container}/t1/%24TaskOutput/old.txt",
                            destinationUrl=f"{ACCOUNT_URL}/{container}/t1/%24TaskOutput/new%20name.txt")
    response = app.post_events([event])
    assert response.status_code == 200, response.text
    assert indexed_names(app, job) == container_names(blob_service, container) == {"t1/$TaskOutput/new name.txt"}
    assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 1, "bytes": len(b"renamed!")}
    assert app.post_events([event]).json()["unchanged"] == 1  # a redelivery changes nothing


def test_directory_renamed_and_recursive_directory_deleted(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "dl-dirs"
    container = container_name(job)
    old = [f"t1/$TaskOutput/frames/{i}.png" for i in range(5)] + ["t1/$TaskLog/run.log", "t2/$TaskOutput/keep.txt"]
    upload(blob_service, container, old)
    post_real(app, blob_service, container, old, 1)
    client = blob_service.get_container_client(container)
    for name in old[:5]:  # the folder t1/$TaskOutput/frames becomes t1/$TaskOutput/renders
        client.upload_blob(name.replace("/frames/", "/renders/"), name.encode(), overwrite=True)
        client.delete_blob(name)
    renamed = namespace_event("Microsoft.Storage.DirectoryRenamed", container, "t1/$TaskOutput/renders", 20,
                              sourceUrl=f"{ACCOUNT_URL}/{container}/t1/%24TaskOutput/frames",
                              destinationUrl=f"{ACCOUNT_URL}/{container}/t1/%24TaskOutput/renders")
    assert app.post_events([renamed]).status_code == 200
    assert indexed_names(app, job) == container_names(blob_service, container)
    for name in list(container_names(blob_service, container)):
        if name.startswith("t1/"):
            client.delete_blob(name)
    deleted = namespace_event("Microsoft.Storage.DirectoryDeleted", container, "t1", 30,
                              url=f"{ACCOUNT_URL}/{container}/t1", recursive="true")
    assert app.post_events([deleted]).status_code == 200
    assert indexed_names(app, job) == container_names(blob_service, container) == {"t2/$TaskOutput/keep.txt"}
    assert app.get(f"/api/jobs/{job}").json()["tasks"] == 1


def test_an_older_blob_created_does_not_resurrect_a_deleted_directory(app: RunningApp) -> None:
    job = "dl-order"
    container = container_name(job)
    deleted = namespace_event("Microsoft.Storage.DirectoryDeleted", container, "t1", 50,
                              url=f"{ACCOUNT_URL}/{container}/t1", recursive="true")
    app.post_events([blob_event(container, "t1/$TaskOutput/a.txt", sequencer=10)])
    app.post_events([deleted])
    late = app.post_events([blob_event(container, "t1/$TaskOutput/a.txt", sequencer=10)]).json()
    assert late["unchanged"] == 1
    assert indexed_names(app, job) == set()


# -- CloudEvents through the Event Grid trigger -------------------------------------------


def test_a_cloudevent_handed_to_the_trigger_is_indexed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, app: RunningApp
) -> None:
    from functions import blob_events

    container = container_name("cloud-trigger")
    payload = blob_event(container, "t1/$TaskPreview/thumb.png", schema="cloudevents", sequencer=3, size=42)
    event = trigger_argument(blob_events.index_blob_event, payload)  # its JSON, as the worker hands it
    holder = blob_events.services
    monkeypatch.setattr(holder, "_settings", settings)

    async def run() -> None:
        try:
            await blob_events.index_blob_event(event)
        finally:
            await holder.close()

    asyncio.run(run())
    listed = app.all_pages("/api/jobs/cloud-trigger/task-outputs", kind="TaskPreview")
    assert [(i["path"], i["size"]) for i in listed] == [("thumb.png", 42)]


# -- the reconciler -----------------------------------------------------------------------


def reconcile(settings: Settings, now: datetime | None = None) -> dict:
    async def run() -> dict:
        service = await Service.create(settings)
        try:
            return (await service.reconciler().run(now)).as_dict()
        finally:
            await service.close()

    return asyncio.run(run())


def test_deleting_a_container_removes_the_job_from_every_listing(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "gone-job"
    container = container_name(job)
    names = ["t1/$TaskOutput/a.txt", "$JobOutput/b.txt"]
    upload(blob_service, container, names)
    post_real(app, blob_service, container, names, 1)
    assert any(j["container"] == container for j in app.all_pages("/api/jobs"))
    blob_service.delete_container(container)  # Azure sends no event for this
    report = reconcile(app.settings)
    assert report["jobs_removed"] == 1
    assert all(j["container"] != container for j in app.all_pages("/api/jobs"))
    assert app.get(f"/api/jobs/{job}").status_code == 404
    assert app.all_pages(f"/api/jobs/{job}/task-outputs") == []


def test_a_grown_append_blob_is_resized_and_counts_against_max_bytes(
    serve: Callable[..., RunningApp], settings: Settings, blob_service: BlobServiceClient
) -> None:
    app = serve(settings)
    job = "grown-log"
    container = container_name(job)
    blob_service.create_container(container)
    log = blob_service.get_blob_client(container, "t1/$TaskLog/stdout.txt")
    log.create_append_blob()
    post_real(app, blob_service, container, ["t1/$TaskLog/stdout.txt"], 1)  # BlobCreated at size 0
    assert app.client.put(f"/api/jobs/{job}/quota", json={"maxBytes": 4 * 1024 * 1024}).status_code == 200
    chunk = b"x" * (4 * 1024 * 1024)
    log.append_block(chunk)
    log.append_block(b"y" * (1024 * 1024))  # 5 MiB by another writer: Azure sends nothing
    report = reconcile(app.settings)
    assert report["fixed"] == 1
    summary = app.get(f"/api/jobs/{job}").json()
    assert summary["rejections"] == {"outputs": 1, "bytes": 5 * 1024 * 1024}
    assert summary["usage"]["outputs"] == 0
    assert summary["lastReconciledAt"] is not None


def test_reconcile_adds_unannounced_blobs_and_purges_old_tombstones(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "quiet-job"
    container = container_name(job)
    upload(blob_service, container, ["t1/$TaskOutput/announced.txt", "t1/$TaskOutput/silent.txt"])
    post_real(app, blob_service, container, ["t1/$TaskOutput/announced.txt"], 1)
    app.post_events([blob_event(container, "t1/$TaskOutput/gone.txt", deleted=True, sequencer=9)])
    first = reconcile(app.settings)
    assert first["added"] == 1 and first["tombstones_purged"] == 0
    assert indexed_names(app, job) == container_names(blob_service, container)
    later = reconcile(app.settings, datetime.now(timezone.utc) + timedelta(hours=26))
    assert later["tombstones_purged"] == 1
    assert reconcile(app.settings)["added"] == 0  # a second run changes nothing
