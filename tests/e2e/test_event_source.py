"""The local event source (``devtools.event_proxy``): real Azurite, real SDK clients, no mocks.

Every operation goes through the proxy with the azure-storage-blob SDK; the events it emits are
captured by a recording delivery callback and compared with what Azure Storage raises for the
same operation (BlobCreated for Put Blob, Put Block List, Copy Blob, Put Blob From URL;
BlobDeleted for Delete Blob; nothing for anything else). The proxy publishes an operation's
event before it answers the client, so once an SDK call has returned, ``drain`` delivers
everything that call raised and the assertions are exact.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    ContentSettings,
    generate_blob_sas,
    generate_container_sas,
)
from multidict import CIMultiDict

from devtools.azurite import Azurite, free_port
from devtools.event_feed import BLOB_CREATED, BLOB_DELETED, EventFeed, Webhook
from devtools.event_proxy import EventProxy, classify
from devtools.run import feed_enabled
from shared.conventions import container_name
from shared.domain.events import BlobAction
from shared.store.clients import DEVSTORE_ACCOUNT, DEVSTORE_KEY
from shared.store.envelopes import parse_events

from ..helpers import eventually

Event = dict[str, Any]


@dataclass
class Source:
    """A proxy in front of the suite's Azurite, its captured deliveries, and an SDK client through it."""

    proxy: EventProxy
    blobs: BlobServiceClient
    batches: list[list[Event]] = field(default_factory=list)

    def emitted(self) -> list[Event]:
        """Everything emitted since the last call (delivered, in order)."""
        assert self.proxy.drain(10), "events not delivered"
        events = [event for batch in self.batches for event in batch]
        self.batches.clear()
        return events

    def container(self) -> ContainerClient:
        client = self.blobs.get_container_client(f"job-{uuid.uuid4().hex[:12]}")
        client.create_container()
        return client


@pytest.fixture
def source(azurite: Azurite) -> Iterator[Source]:
    batches: list[list[Event]] = []

    async def record(batch: list[Event]) -> None:
        batches.append(batch)

    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", EventFeed(record)).start()
    blobs = BlobServiceClient.from_connection_string(proxy.connection_string())
    yield Source(proxy, blobs, batches)
    blobs.close()
    proxy.stop()


def summary(events: list[Event]) -> list[tuple[str, str, str, int | None, str]]:
    """(type, api, blob name, contentLength, blobType) of each event."""
    prefix = "/blobServices/default/containers/"
    return [
        (e["eventType"].rsplit(".", 1)[1], e["data"]["api"], e["subject"][len(prefix):].split("/blobs/", 1)[1],
         e["data"].get("contentLength"), e["data"]["blobType"])
        for e in events
    ]


def sas_for(container: ContainerClient) -> str:
    return generate_container_sas(
        DEVSTORE_ACCOUNT, container.container_name, account_key=DEVSTORE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, create=True, delete=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )


# --- what is emitted, operation by operation ---------------------------------------------------


def test_put_blob_emits_one_blob_created_shaped_like_azure(source: Source) -> None:
    container = source.container()
    assert source.emitted() == []  # Create Container: nothing
    container.upload_blob("task-1/$TaskOutput/a.txt", b"hello", content_settings=ContentSettings(content_type="text/plain"))

    (event,) = source.emitted()
    props = container.get_blob_client("task-1/$TaskOutput/a.txt").get_blob_properties()
    assert set(event) == {"id", "topic", "subject", "eventType", "eventTime", "dataVersion", "metadataVersion", "data"}
    assert event["eventType"] == BLOB_CREATED
    assert event["topic"].endswith(f"/providers/Microsoft.Storage/storageAccounts/{DEVSTORE_ACCOUNT}")
    assert event["subject"] == f"/blobServices/default/containers/{container.container_name}/blobs/task-1/$TaskOutput/a.txt"
    assert (event["dataVersion"], event["metadataVersion"]) == ("", "1")
    data = event["data"]
    assert set(data) == {"api", "clientRequestId", "requestId", "eTag", "contentType", "contentLength", "blobType",
                         "url", "sequencer", "storageDiagnostics"}
    assert data["api"] == "PutBlob" and data["blobType"] == "BlockBlob"
    assert (data["contentLength"], data["contentType"]) == (5, "text/plain")
    assert data["eTag"] == props.etag
    assert data["url"] == container.get_blob_client("task-1/$TaskOutput/a.txt").url
    assert len(data["sequencer"]) == 32 and data["requestId"] and data["storageDiagnostics"]["batchId"]
    # The app's own parser reads it as Azure's.
    (parsed,) = parse_events([event]).blob_events
    assert (parsed.action, parsed.blob_name, parsed.size, parsed.api) == (BlobAction.CREATED, "task-1/$TaskOutput/a.txt", 5, "PutBlob")


def test_staged_upload_emits_only_put_block_list(source: Source) -> None:
    container = source.container()
    blobs = BlobServiceClient.from_connection_string(source.proxy.connection_string(), max_single_put_size=1024, max_block_size=512)
    staged = blobs.get_container_client(container.container_name)
    staged.upload_blob("t/$TaskOutput/big.bin", b"x" * 3000, content_settings=ContentSettings(content_type="application/x-big"))
    blobs.close()

    assert len(container.get_blob_client("t/$TaskOutput/big.bin").get_block_list()[0]) == 6  # it was staged
    events = source.emitted()
    assert summary(events) == [("BlobCreated", "PutBlockList", "t/$TaskOutput/big.bin", 3000, "BlockBlob")]
    assert events[0]["data"]["contentType"] == "application/x-big"

    # Put Block alone raises nothing; the Put Block List that commits it does.
    blob = container.get_blob_client("t/$TaskOutput/staged")
    blob.stage_block("b1", b"abc")
    blob.stage_block("b2", b"defg")
    assert source.emitted() == []
    blob.commit_block_list(["b1", "b2"])
    assert summary(source.emitted()) == [("BlobCreated", "PutBlockList", "t/$TaskOutput/staged", 7, "BlockBlob")]


def test_copy_emits_blob_created_with_the_copy_s_size(source: Source) -> None:
    container = source.container()
    container.upload_blob("src", b"0123456789", content_settings=ContentSettings(content_type="image/png"))
    source.emitted()
    src = container.get_blob_client("src")

    container.get_blob_client("t/$TaskPreview/copy.png").start_copy_from_url(src.url)  # Copy Blob
    events = source.emitted()
    assert summary(events) == [("BlobCreated", "CopyBlob", "t/$TaskPreview/copy.png", 10, "BlockBlob")]
    assert events[0]["data"]["contentType"] == "image/png"

    # Copy Blob From URL (synchronous), from a SAS URL: read back through the proxy, raises no event.
    sas = generate_blob_sas(DEVSTORE_ACCOUNT, container.container_name, "src", account_key=DEVSTORE_KEY,
                            permission=BlobSasPermissions(read=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    container.get_blob_client("t/$TaskPreview/sync.png").start_copy_from_url(f"{src.url}?{sas}", requires_sync=True)
    assert summary(source.emitted()) == [("BlobCreated", "CopyBlob", "t/$TaskPreview/sync.png", 10, "BlockBlob")]
    assert container.download_blob("t/$TaskPreview/sync.png").readall() == b"0123456789"


def test_put_blob_from_url_is_classified_but_azurite_refuses_it(source: Source) -> None:
    """Azure raises BlobCreated (api PutBlobFromUrl); Azurite answers 501, and failures raise nothing."""
    headers = CIMultiDict({"x-ms-copy-source": "http://127.0.0.1:10000/devstoreaccount1/c/src", "x-ms-blob-type": "BlockBlob"})
    emission = classify("PUT", "127.0.0.1:10000", "/devstoreaccount1/job-x/dst", headers)
    assert emission is not None and (emission.event_type, emission.api) == (BLOB_CREATED, "PutBlobFromUrl")

    container = source.container()
    container.upload_blob("src", b"abc")
    source.emitted()
    src = container.get_blob_client("src")
    with pytest.raises(HttpResponseError) as refused:
        container.get_blob_client("dst").upload_blob_from_url(f"{src.url}?{sas_for(container)}")
    assert refused.value.status_code == 501
    assert source.emitted() == []


def test_append_blob_emits_created_with_size_zero_and_nothing_for_appends(source: Source) -> None:
    container = source.container()
    log = container.get_blob_client("t/$TaskLog/stdout.txt")
    log.create_append_blob(content_settings=ContentSettings(content_type="text/plain"))
    log.append_block(b"line 1\n")
    log.append_block(b"line 2\n")
    assert log.get_blob_properties().size == 14

    events = source.emitted()
    assert summary(events) == [("BlobCreated", "PutBlob", "t/$TaskLog/stdout.txt", 0, "AppendBlob")]
    assert events[0]["data"]["contentType"] == "text/plain"


def test_page_blob_emits_created_with_its_declared_size_and_nothing_for_pages_or_resize(source: Source) -> None:
    container = source.container()
    disk = container.get_blob_client("t/$TaskOutput/disk.vhd")
    disk.create_page_blob(4096)
    disk.upload_page(b"\x01" * 512, offset=0, length=512)
    disk.resize_blob(8192)
    assert summary(source.emitted()) == [("BlobCreated", "PutBlob", "t/$TaskOutput/disk.vhd", 4096, "PageBlob")]


def test_properties_metadata_tags_snapshots_and_leases_emit_nothing(source: Source) -> None:
    container = source.container()
    blob = container.get_blob_client("t/$TaskOutput/a.txt")
    blob.upload_blob(b"abc")
    source.emitted()

    blob.set_blob_metadata({"owner": "me"})
    blob.set_http_headers(ContentSettings(content_type="text/csv"))
    blob.set_blob_tags({"stage": "final"})
    snapshot = blob.create_snapshot()
    lease = blob.acquire_lease()
    lease.release()
    container.get_blob_client("t/$TaskOutput/a.txt", snapshot=snapshot["snapshot"]).delete_blob()  # only the snapshot
    blob.download_blob().readall()
    list(container.list_blobs())
    assert source.emitted() == []


def test_delete_blob_emits_blob_deleted_and_failures_emit_nothing(source: Source) -> None:
    container = source.container()
    container.upload_blob("t/$TaskOutput/a.csv", b"abc", content_settings=ContentSettings(content_type="text/csv"))
    with pytest.raises(ResourceExistsError):
        container.upload_blob("t/$TaskOutput/a.csv", b"again")  # 409: nothing
    created = source.emitted()
    assert len(created) == 1

    container.delete_blob("t/$TaskOutput/a.csv")
    with pytest.raises(ResourceNotFoundError):
        container.delete_blob("t/$TaskOutput/a.csv")  # 404: nothing
    (event,) = source.emitted()
    assert event["eventType"] == BLOB_DELETED
    data = event["data"]
    assert set(data) == {"api", "clientRequestId", "requestId", "contentType", "blobType", "url", "sequencer", "storageDiagnostics"}
    assert (data["api"], data["contentType"], data["blobType"]) == ("DeleteBlob", "text/csv", "BlockBlob")
    assert data["sequencer"] > created[0]["data"]["sequencer"]
    (parsed,) = parse_events([event]).blob_events
    assert parsed.action is BlobAction.DELETED and parsed.blob_name == "t/$TaskOutput/a.csv"


def test_batch_delete_emits_one_blob_deleted_per_deleted_blob(source: Source) -> None:
    container = source.container()
    for name in ("a", "b", "c"):
        container.upload_blob(f"t/$TaskOutput/{name}", b"x")
    source.emitted()
    container.delete_blobs("t/$TaskOutput/a", "t/$TaskOutput/missing", "t/$TaskOutput/c", raise_on_any_failure=False)
    assert summary(source.emitted()) == [
        ("BlobDeleted", "DeleteBlob", "t/$TaskOutput/a", None, "BlockBlob"),
        ("BlobDeleted", "DeleteBlob", "t/$TaskOutput/c", None, "BlockBlob"),
    ]
    assert [b.name for b in container.list_blobs()] == ["t/$TaskOutput/b"]


def test_delete_container_emits_nothing(source: Source) -> None:
    container = source.container()
    container.upload_blob("t/$TaskOutput/a", b"x")
    container.upload_blob("t/$TaskOutput/b", b"y")
    assert len(source.emitted()) == 2
    container.delete_container()
    assert source.emitted() == []


def test_sequencers_increase_per_blob(source: Source) -> None:
    container = source.container()
    name = "t/$TaskOutput/again.txt"
    for size in (1, 2, 3):
        container.upload_blob(name, b"x" * size, overwrite=True)
    container.delete_blob(name)
    container.upload_blob(name, b"back")
    container.upload_blob("t/$TaskOutput/other.txt", b"o")
    events = [e for e in source.emitted() if e["subject"].endswith(name)]
    assert [(e["data"]["api"], e["data"].get("contentLength")) for e in events] == [
        ("PutBlob", 1), ("PutBlob", 2), ("PutBlob", 3), ("DeleteBlob", None), ("PutBlob", 4)]
    sequencers = [e["data"]["sequencer"] for e in events]
    assert sequencers == sorted(sequencers) and len(set(sequencers)) == len(sequencers)
    assert all(len(s) == 32 for s in sequencers)


def test_concurrent_writes_to_one_blob_are_sequenced_in_the_order_azurite_applied_them(source: Source) -> None:
    container = source.container()
    name = "t/$TaskOutput/contended"

    async def race() -> None:
        from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

        async with AsyncBlobServiceClient.from_connection_string(source.proxy.connection_string()) as blobs:
            client = blobs.get_blob_client(container.container_name, name)
            await asyncio.gather(*(client.upload_blob(b"x" * n, overwrite=True) for n in range(1, 21)))

    asyncio.run(race())
    events = source.emitted()
    last = max(events, key=lambda e: e["data"]["sequencer"])
    props = container.get_blob_client(name).get_blob_properties()
    assert len(events) == 20
    assert (last["data"]["contentLength"], last["data"]["eTag"]) == (props.size, props.etag)


def test_names_sas_and_large_bodies_pass_through_unchanged(source: Source) -> None:
    container = source.container()
    name = "task 7/$TaskOutput/ü %20#?x/" + "日" * 300
    blob = BlobClient(f"{source.proxy.url}/{DEVSTORE_ACCOUNT}", container.container_name, name, credential=sas_for(container))
    payload = bytes(range(256)) * (24 * 1024 * 4)  # 24 MiB: one Put Blob, streamed
    blob.upload_blob(payload)
    assert blob.download_blob().readall() == payload
    assert blob.get_blob_properties().size == len(payload)
    (event,) = source.emitted()
    assert event["subject"].split("/blobs/", 1)[1] == name
    assert event["data"]["contentLength"] == len(payload)
    assert event["data"]["url"] == blob.url.split("?", 1)[0]
    (parsed,) = parse_events([event]).blob_events
    assert parsed.blob_name == name


# --- delivery ------------------------------------------------------------------------------------


def test_each_operation_is_delivered_without_waiting_for_more(source: Source) -> None:
    # "Within a second" is by construction: the source holds an event at most its linger
    # (50 ms) before posting it, and never waits for a batch to fill or for a poll.
    assert source.proxy.feed.linger <= 0.1
    container = source.container()
    for i in range(5):
        container.upload_blob(f"t/$TaskOutput/{i}", b"x")
        assert eventually(lambda: bool(source.batches)), "one upload alone was never delivered"
        assert [e["subject"].rsplit("/blobs/", 1)[1] for e in source.emitted()] == [f"t/$TaskOutput/{i}"]


def test_failed_deliveries_are_retried_in_order_and_never_dropped(azurite: Azurite) -> None:
    attempts: list[int] = []
    delivered: list[Event] = []

    async def flaky(batch: list[Event]) -> None:
        attempts.append(len(batch))
        if len(attempts) <= 3:
            raise ConnectionError("app not up yet")
        delivered.extend(batch)

    feed = EventFeed(flaky, batch_size=4, first_backoff=0.05)
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", feed).start()
    try:
        container = ContainerClient.from_connection_string(proxy.connection_string(), f"job-{uuid.uuid4().hex[:12]}")
        container.create_container()
        names = [f"t/$TaskOutput/{i:02d}" for i in range(10)]
        for name in names:
            container.upload_blob(name, b"x")
        assert proxy.drain(15)
        assert [e["subject"].rsplit("/blobs/", 1)[1] for e in delivered] == names
        assert feed.failures == 3 and feed.delivered == 10 and feed.pending == 0
        assert max(attempts) <= 4
    finally:
        proxy.stop()


def test_switch_local_event_feed() -> None:
    assert feed_enabled({}) and feed_enabled({"LOCAL_EVENT_FEED": "on"})
    assert not any(feed_enabled({"LOCAL_EVENT_FEED": v}) for v in ("off", "OFF", "0", "false", "no"))


# --- through the real app ---------------------------------------------------------------------


def test_put_and_delete_through_the_proxy_are_indexed_by_the_app(azurite: Azurite, serve: Callable[..., Any], settings: Any) -> None:
    key = settings.events_keys[0]
    webhook = Webhook(f"http://127.0.0.1:{free_port()}/api/events", key)  # the app is not up yet
    feed = EventFeed(webhook, first_backoff=0.05, max_backoff=0.2)
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", feed).start()
    try:
        job = f"Proxied-{uuid.uuid4().hex[:8]}"
        container = ContainerClient.from_connection_string(proxy.connection_string(), container_name(job))
        container.create_container()
        container.upload_blob("task-1/$TaskOutput/frames/a b#1.txt", b"frame one")
        container.upload_blob("task-1/$TaskLog/stdout.txt", b"log")
        time.sleep(0.3)
        assert feed.pending == 2 and feed.failures >= 1  # handed back, kept

        app = serve(settings)
        webhook.endpoint = f"{app.url}/api/events"

        def outputs() -> set[tuple[str, int]]:
            items = app.all_pages(f"/api/jobs/{job}/tasks/task-1/outputs")
            return {(item["blobName"], item["size"]) for item in items}

        assert eventually(lambda: outputs() == {("task-1/$TaskOutput/frames/a b#1.txt", 9), ("task-1/$TaskLog/stdout.txt", 3)}), outputs()

        container.delete_blob("task-1/$TaskOutput/frames/a b#1.txt")
        assert eventually(lambda: outputs() == {("task-1/$TaskLog/stdout.txt", 3)}), outputs()
        # Metadata and appends raise nothing: the index keeps what the last event said.
        container.get_blob_client("task-1/$TaskLog/stdout.txt").set_blob_metadata({"k": "v"})
        assert proxy.drain(5) and feed.dead_lettered == 0
        assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 1, "bytes": 3}
    finally:
        proxy.stop()


def test_only_azures_events_then_the_reconciler_leave_exact_usage(azurite: Azurite, serve: Callable[..., Any], settings: Any) -> None:
    """The ledger fed only what Azure emits: appends and a container delete raise no event;
    the reconciler (as its timer runs it) resizes the append blob and removes the deleted job."""
    from shared.service import Service

    app = serve(settings)
    feed = EventFeed(Webhook(f"{app.url}/api/events", settings.events_keys[0]), first_backoff=0.05, max_backoff=0.2)
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", feed).start()
    try:
        jobs = [f"OnlyAzure-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        kept, dropped = (ContainerClient.from_connection_string(proxy.connection_string(), container_name(j)) for j in jobs)
        for container in (kept, dropped):
            container.create_container()
            container.upload_blob("task-1/$TaskOutput/a.bin", b"x" * 10)
        log = kept.get_blob_client("task-2/$TaskLog/stdout.txt")
        log.create_append_blob()  # BlobCreated, size 0
        for _ in range(3):
            log.append_block(b"line\n")  # no event: Azure sends none for appends
        assert proxy.drain(5) and feed.dead_lettered == 0
        assert eventually(lambda: app.get(f"/api/jobs/{jobs[0]}").json()["usage"] == {"outputs": 2, "bytes": 10})
        dropped.delete_container()  # no event either
        assert proxy.drain(5)
        assert app.get(f"/api/jobs/{jobs[1]}").status_code == 200  # nothing told the index yet

        async def reconcile() -> dict[str, Any]:
            service = await Service.create(settings)
            try:
                return (await service.reconciler().run()).as_dict()
            finally:
                await service.close()

        report = asyncio.run(reconcile())
        assert report["jobs_removed"] == 1 and report["fixed"] >= 1, report
        summary = app.get(f"/api/jobs/{jobs[0]}").json()
        assert (summary["usage"], summary["tasks"]) == ({"outputs": 2, "bytes": 25}, 2)
        assert app.get(f"/api/jobs/{jobs[1]}").status_code == 404
        assert asyncio.run(reconcile())["fixed"] == 0  # a second run changes nothing
    finally:
        proxy.stop()
