"""Data Lake Gen2 events and the trigger's CloudEvents, read into the core's views (pure)."""

from __future__ import annotations

from devtools.worker_binding import trigger_argument
from functions.blob_events import event_of, index_blob_event
from shared.domain.events import BlobEvent, NamespaceAction, NamespaceEvent, SkippedEvent, SkipReason
from shared.store.envelopes import parse_event, parse_events

CONTAINER = "job-x"


def event(event_type: str, subject_path: str, **data: object) -> dict:
    return {"id": "e1", "topic": "/t", "eventType": event_type, "eventTime": "2026-11-23T10:00:00Z",
            "subject": f"/blobServices/default/containers/{CONTAINER}/blobs/{subject_path}", "dataVersion": "",
            "data": {"sequencer": "0" * 31 + "5", **data}}


def test_blob_renamed() -> None:
    parsed = parse_event(event("Microsoft.Storage.BlobRenamed", "t1/$TaskOutput/new name.txt",
                               sourceUrl=f"https://acct.dfs.core.windows.net/{CONTAINER}/t1/%24TaskOutput/old%20name.txt"))
    assert isinstance(parsed, NamespaceEvent)
    assert (parsed.action, parsed.name, parsed.source) == (
        NamespaceAction.BLOB_RENAMED, "t1/$TaskOutput/new name.txt", "t1/$TaskOutput/old name.txt")


def test_directory_renamed_and_deleted() -> None:
    renamed = parse_event(event("Microsoft.Storage.DirectoryRenamed", "t2",
                                sourceUrl=f"https://acct.dfs.core.windows.net/{CONTAINER}/t1"))
    deleted = parse_event(event("Microsoft.Storage.DirectoryDeleted", "t2/", recursive="true",
                                url=f"https://acct.dfs.core.windows.net/{CONTAINER}/t2"))
    assert isinstance(renamed, NamespaceEvent) and (renamed.name, renamed.source) == ("t2", "t1")
    assert isinstance(deleted, NamespaceEvent) and deleted.name == "t2" and deleted.recursive


def test_a_rename_from_another_container_or_without_sequencer_is_skipped() -> None:
    foreign = parse_event(event("Microsoft.Storage.BlobRenamed", "t1/$TaskOutput/a",
                                sourceUrl="https://acct.dfs.core.windows.net/other/t1/%24TaskOutput/a"))
    no_seq = event("Microsoft.Storage.DirectoryDeleted", "t1")
    del no_seq["data"]["sequencer"]
    assert isinstance(foreign, SkippedEvent) and foreign.reason is SkipReason.MALFORMED
    skipped = parse_event(no_seq)
    assert isinstance(skipped, SkippedEvent) and skipped.reason is SkipReason.MALFORMED


def test_a_delivery_sorts_blob_and_namespace_events() -> None:
    batch = parse_events([
        event("Microsoft.Storage.BlobCreated", "t1/$TaskOutput/a", contentLength=1),
        event("Microsoft.Storage.DirectoryDeleted", "t1", recursive="true"),
    ])
    assert len(batch.blob_events) == 1 and len(batch.namespace_events) == 1 and not batch.skipped


def test_the_trigger_reads_both_schemas_from_the_json_the_worker_hands_it() -> None:
    grid = event("Microsoft.Storage.BlobCreated", "t1/$TaskOutput/a b.txt", contentLength=3, url="https://a/b")
    cloud = {"specversion": "1.0", "id": "c1", "source": "/subscriptions/s/storageAccounts/acct",
             "type": "Microsoft.Storage.BlobCreated", "time": "2026-11-23T10:00:00.1234567Z",
             "subject": grid["subject"], "data": grid["data"]}
    for payload in (grid, cloud):
        handed = trigger_argument(index_blob_event, payload)
        assert isinstance(handed, str)  # a str parameter: the generic binding, no converter
        parsed = parse_event(event_of(handed))
        assert isinstance(parsed, BlobEvent), parsed
        assert (parsed.container, parsed.blob_name, parsed.size) == (CONTAINER, "t1/$TaskOutput/a b.txt", 3)
