"""An output row converges to its blob's true state whatever a forged event carried, and Data Lake
directory deletes and renames apply from what storage holds under the path (issue 20)."""

from __future__ import annotations

import asyncio

from azure.storage.blob import BlobServiceClient

from shared.domain.conventions import container_name
from shared.service import Service
from shared.settings import Settings

from ..helpers import blob_event, from_local_account, real_blob_event
from ..support.stack import RunningApp

FORGED = "f" * 64
NAME = "t1/$TaskOutput/frame.bin"


def upload(blob_service: BlobServiceClient, container: str, name: str, data: bytes) -> None:
    client = blob_service.get_container_client(container)
    if not client.exists():
        client.create_container()
    client.upload_blob(name, data, overwrite=True)


def indexed(app: RunningApp, job: str) -> dict[str, int]:
    return {i["blobName"]: i["size"] for i in app.all_pages(f"/api/jobs/{job}/task-outputs")}


def in_container(blob_service: BlobServiceClient, container: str) -> dict[str, int]:
    return {b.name: b.size for b in blob_service.get_container_client(container).list_blobs()}


def post(app: RunningApp, events: list[dict]) -> dict:
    response = app.post_events(events)
    assert response.status_code == 200, response.text
    return response.json()


def reconcile(settings: Settings) -> dict:
    async def run() -> dict:
        service = await Service.create(settings)
        try:
            return (await service.reconciler().run()).as_dict()
        finally:
            await service.close()

    return asyncio.run(run())


def test_a_forged_delete_is_undone_by_reindex_and_genuine_events_apply_after_it(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "forged-delete"
    c = container_name(job)
    upload(blob_service, c, NAME, b"v1")
    assert post(app, [real_blob_event(blob_service, c, NAME, 5)])["indexed"] == 1
    # An events-key holder, from the right account, with a sequencer above every genuine one.
    assert post(app, [blob_event(c, NAME, deleted=True, sequencer=FORGED)])["indexed"] == 1
    assert indexed(app, job) == {}
    upload(blob_service, c, NAME, b"v2-longer")
    assert post(app, [real_blob_event(blob_service, c, NAME, 6)])["unchanged"] == 1  # pinned until repaired
    report = app.client.post(f"/api/jobs/{job}/reindex").json()
    assert report["added"] == 1
    assert indexed(app, job) == in_container(blob_service, c) == {NAME: 9}
    assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 1, "bytes": 9}
    # The repaired row does not keep the forged sequencer: the blob's next genuine events apply.
    upload(blob_service, c, NAME, b"v3")
    assert post(app, [real_blob_event(blob_service, c, NAME, 7)])["indexed"] == 1
    assert indexed(app, job) == {NAME: 2}
    blob_service.get_blob_client(c, NAME).delete_blob()
    assert post(app, [blob_event(c, NAME, deleted=True, sequencer=8)])["indexed"] == 1
    assert indexed(app, job) == in_container(blob_service, c) == {}
    final = app.client.post(f"/api/jobs/{job}/reindex").json()
    assert (final["added"], final["fixed"], final["removed"]) == (0, 0, 0)


def test_a_forged_create_is_fixed_by_the_reconciler_and_genuine_events_apply_after_it(
    app: RunningApp, blob_service: BlobServiceClient
) -> None:
    job = "forged-create"
    c = container_name(job)
    upload(blob_service, c, NAME, b"abc")
    assert post(app, [real_blob_event(blob_service, c, NAME, 5)])["indexed"] == 1
    forged = blob_event(c, NAME, sequencer=FORGED, size=10**12)
    assert post(app, [forged])["indexed"] == 1
    assert indexed(app, job) == {NAME: 10**12}
    assert reconcile(app.settings)["fixed"] == 1
    assert indexed(app, job) == in_container(blob_service, c) == {NAME: 3}
    upload(blob_service, c, NAME, b"abcdef")
    assert post(app, [real_blob_event(blob_service, c, NAME, 6)])["indexed"] == 1
    assert indexed(app, job) == {NAME: 6}
    assert reconcile(app.settings)["fixed"] == 0


def test_a_reindex_repair_never_overwrites_a_row_a_real_event_moved_meanwhile(app: RunningApp, blob_service: BlobServiceClient) -> None:
    """A repair supersedes only the row as it read it: a newer genuine row is left alone."""
    job = "repair-race"
    c = container_name(job)
    upload(blob_service, c, NAME, b"12345")
    assert post(app, [real_blob_event(blob_service, c, NAME, 5)])["indexed"] == 1
    assert app.client.post(f"/api/jobs/{job}/reindex").json()["unchanged"] == 1
    # The repair's sequencer is below every real one: a stale event is no repair.
    assert post(app, [real_blob_event(blob_service, c, NAME, 4)])["unchanged"] == 1
    assert indexed(app, job) == {NAME: 5}


# -- Data Lake Gen2: what storage holds under the path, not sequencers across names ----------

#: Microsoft's published samples ("Azure Blob Storage as an Event Grid source", Data Lake Gen2):
#: a CreateFile and a recursive DirectoryDeleted of its folder, with the same sequencer.
SAMPLE_SEQUENCER = "00000000000004420000000000028963"


def create_file_sample(container: str, name: str) -> dict:
    return from_local_account({
        "topic": "/subscriptions/id/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/my-storage-account",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": {
            "api": "CreateFile", "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000", "eTag": "\"0x8D4BCC2E4835CD0\"",
            "contentType": "text/plain", "contentLength": 0, "contentOffset": 0, "blobType": "BlockBlob",
            "url": f"https://my-storage-account.dfs.core.windows.net/{container}/{name}",
            "sequencer": SAMPLE_SEQUENCER, "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
        },
        "dataVersion": "3", "metadataVersion": "1",
    })


def directory_deleted_sample(container: str, directory: str) -> dict:
    return from_local_account({
        "topic": "/subscriptions/id/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/my-storage-account",
        "subject": f"/blobServices/default/containers/{container}/blobs/{directory}",
        "eventType": "Microsoft.Storage.DirectoryDeleted",
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": {
            "api": "DeleteDirectory", "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
            "url": f"https://my-storage-account.dfs.core.windows.net/{container}/{directory}",
            "recursive": "true", "sequencer": SAMPLE_SEQUENCER,
            "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
        },
        "dataVersion": "3", "metadataVersion": "1",
    })


def test_microsofts_create_file_then_directory_deleted_samples_leave_nothing_listed(app: RunningApp) -> None:
    job = "dl-sample"
    c = container_name(job)
    name = "t1/$TaskOutput/new-file.txt"
    assert post(app, [create_file_sample(c, name)])["indexed"] == 1
    assert indexed(app, job) == {name: 0}
    assert post(app, [directory_deleted_sample(c, "t1/$TaskOutput")])["indexed"] == 1
    assert indexed(app, job) == {}
    assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 0, "bytes": 0}
    # Redelivered, in either order, they change nothing.
    assert post(app, [create_file_sample(c, name)])["unchanged"] == 1
    assert post(app, [directory_deleted_sample(c, "t1/$TaskOutput")])["unchanged"] == 1
    assert indexed(app, job) == {}


def test_a_directory_delete_keeps_what_storage_still_holds_under_the_folder(app: RunningApp, blob_service: BlobServiceClient) -> None:
    """The folder's sequencer is not compared with its blobs': a blob storage holds stays listed
    (recreated after the delete), one it does not is removed, whatever their own sequencers."""
    job = "dl-kept"
    c = container_name(job)
    upload(blob_service, c, "t1/$TaskOutput/again.txt", b"back")
    low = real_blob_event(blob_service, c, "t1/$TaskOutput/again.txt", 1)
    high = blob_event(c, "t1/$TaskOutput/gone.txt", sequencer="f" * 32, size=3)  # above the folder's
    assert post(app, [low, high])["indexed"] == 2
    assert post(app, [directory_deleted_sample(c, "t1")])["indexed"] == 1
    assert indexed(app, job) == in_container(blob_service, c) == {"t1/$TaskOutput/again.txt": 4}


def test_a_directory_rename_lists_the_new_folder_from_storage(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "dl-rename-seq"
    c = container_name(job)
    upload(blob_service, c, "t1/$TaskOutput/new/a.txt", b"a")
    # The old path's row carries a sequencer above the rename's: storage decides, not the order.
    assert post(app, [blob_event(c, "t1/$TaskOutput/old/a.txt", sequencer="f" * 32, size=1)])["indexed"] == 1
    renamed = from_local_account({
        "topic": "/subscriptions/id/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/x",
        "subject": f"/blobServices/default/containers/{c}/blobs/t1/$TaskOutput/new",
        "eventType": "Microsoft.Storage.DirectoryRenamed", "eventTime": "2026-12-05T10:00:00Z", "id": "r1",
        "data": {"api": "RenameDirectory", "sequencer": SAMPLE_SEQUENCER,
                 "sourceUrl": f"https://x.dfs.core.windows.net/{c}/t1/%24TaskOutput/old",
                 "destinationUrl": f"https://x.dfs.core.windows.net/{c}/t1/%24TaskOutput/new"},
        "dataVersion": "1", "metadataVersion": "1"})
    assert post(app, [renamed])["indexed"] == 1
    assert indexed(app, job) == in_container(blob_service, c) == {"t1/$TaskOutput/new/a.txt": 1}
