"""Tracked saves commit blocks, so Azure announces every flush (issue 11, item 3).

Azure raises ``BlobCreated`` for Put Blob and Put Block List and nothing for Append Block: a
tracked log written as an append blob is indexed at size 0 until the reconciler runs. A tracked
save now stages each flush as blocks of a block blob and commits the block list so far. Real
Azurite, the real azure-storage-blob SDK, the local event source of ``devtools.event_proxy`` and
the real app; no mocks.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings
from rich.console import Console

from batch_outputs import OutputStorageError, TaskOutputKind, TaskOutputStorage, TrackedFile
from batch_outputs.follow import follow
from devtools.azurite import Azurite
from devtools.event_feed import EventFeed, Webhook
from devtools.event_proxy import EventProxy
from shared.conventions import container_name

from ..helpers import eventually

NEVER = timedelta(hours=1)  # no background flush: the test flushes by hand
BLOB = "task-1/$TaskLog/stdout.txt"


@pytest.fixture
def job() -> str:
    return f"tracked-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def storage(azurite: Azurite, job: str) -> TaskOutputStorage:
    storage = TaskOutputStorage.connect(azurite.connection_string, job, "task-1")
    storage.prepare()
    return storage


@pytest.fixture
def blob(blob_service: BlobServiceClient, job: str) -> BlobClient:
    return blob_service.get_blob_client(container_name(job), BLOB)


def committed(blob: BlobClient) -> list[tuple[str, int]]:
    blocks, _ = blob.get_block_list("committed")
    return [(block.id, block.size) for block in blocks]


def grow(log: Path, data: bytes) -> None:
    with open(log, "ab") as handle:
        handle.write(data)


def test_each_flush_commits_the_bytes_so_far_as_blocks_of_a_block_blob(storage: TaskOutputStorage, blob: BlobClient,
                                                                        tmp_path: Path) -> None:
    log = tmp_path / "stdout.txt"
    written = 0
    with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=NEVER) as tracked:
        assert tracked.blob_name == BLOB
        props = blob.get_blob_properties()
        assert (props.blob_type, props.size, props.content_settings.content_type) == ("BlockBlob", 0, "text/plain")
        assert tracked.flush() == 0  # no file yet: nothing committed
        assert committed(blob) == []

        blocks_before = 0
        for n, data in enumerate([b"line 0\n", b"line 1\nline 2\n", b"x" * 100_000, b"tail without newline"]):
            grow(log, data)
            written += len(data)
            assert tracked.flush() == len(data)
            props = blob.get_blob_properties()
            assert (props.blob_type, props.size) == ("BlockBlob", written), n
            assert props.content_settings.content_type == "text/plain"  # every commit keeps it
            blocks = committed(blob)
            assert len(blocks) == blocks_before + 1 and blocks[-1][1] == len(data)
            assert blob.get_block_list("uncommitted")[1] == []
            assert blob.download_blob().readall() == log.read_bytes()
            blocks_before = len(blocks)

            etag = props.etag
            assert tracked.flush() == 0  # no new bytes: no new block, no commit
            assert committed(blob) == blocks and blob.get_blob_properties().etag == etag

        big = b"".join(b"%08d\n" % i for i in range(600_000))  # 5.4 MB in one flush: two staged blocks, one commit
        grow(log, big)
        written += len(big)
        assert tracked.flush() == len(big)
        blocks = committed(blob)
        assert [size for _, size in blocks[blocks_before:]] == [4 * 1024 * 1024, len(big) - 4 * 1024 * 1024]
        assert len({len(block_id) for block_id, _ in blocks}) == 1  # one block ID width
        grow(log, b"written after the last flush\n")  # only the final flush sees it
    assert blob.download_blob().readall() == log.read_bytes()
    assert blob.get_blob_properties().size == log.stat().st_size == written + len(b"written after the last flush\n")
    assert storage.get(TaskOutputKind.LOG, "stdout.txt").size == log.stat().st_size


class RacedPath(type(Path())):  # type: ignore[misc]
    """A path whose existence check always says yes: the check raced the file's removal."""

    def exists(self, *args: Any, **kwargs: Any) -> bool:
        return True


def test_a_log_removed_between_a_check_and_a_read_is_missing_not_a_failure(storage: TaskOutputStorage, blob: BlobClient,
                                                                            tmp_path: Path) -> None:
    # A log being rotated can vanish between any check and the read that follows it.
    log = RacedPath(tmp_path / "stdout.txt")
    errors: list[BaseException] = []
    tracked = TrackedFile(storage.container, BLOB, log, NEVER, on_error=errors.append).start()
    try:
        assert tracked.flush() == 0 and committed(blob) == []  # gone: nothing gained, nothing failed
        grow(log, b"back\n")
        assert tracked.flush() == len(b"back\n")
    finally:
        tracked.close()
    assert errors == [] and tracked.errors == []
    assert blob.download_blob().readall() == b"back\n"

    # ``save --tracked`` checks the log's size while it follows it: a missing log stays idle
    console = Console(file=io.StringIO())
    log.unlink()
    assert follow(storage, TaskOutputKind.LOG, log, "stdout.txt", 0.05, None, 0.3, console) == BLOB


def test_background_flushes_commit_within_an_interval(storage: TaskOutputStorage, blob: BlobClient, tmp_path: Path) -> None:
    log = tmp_path / "stdout.txt"
    with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=timedelta(milliseconds=100)):
        for n in range(3):
            grow(log, f"step {n}\n".encode() * (n + 1))
            deadline = time.monotonic() + 10  # bounded wait, not a timing assertion
            while blob.get_blob_properties().size != log.stat().st_size and time.monotonic() < deadline:
                time.sleep(0.02)
            assert blob.get_blob_properties().size == log.stat().st_size
            assert len(committed(blob)) == n + 1
    assert blob.download_blob().readall() == log.read_bytes()


def test_a_restart_replaces_an_earlier_run_an_old_append_blob_and_stale_staged_blocks(
    storage: TaskOutputStorage, blob: BlobClient, tmp_path: Path
) -> None:
    # An earlier version of the library left an append blob at the target.
    blob.create_append_blob(content_settings=ContentSettings(content_type="text/plain"))
    blob.append_block(b"appended by an old version\n" * 10)
    log = tmp_path / "stdout.txt"
    log.write_bytes(b"run 1\n" * 50)
    with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=NEVER):
        pass
    props = blob.get_blob_properties()
    assert (props.blob_type, props.size) == ("BlockBlob", 300)
    assert blob.download_blob().readall() == b"run 1\n" * 50

    # A run that died after staging (never committed) leaves blocks of the same IDs behind.
    blob.stage_block("000000000000", b"stale" * 1000)
    blob.stage_block("000000000001", b"stale")
    log.write_bytes(b"run 2\n")  # the restarted task writes its log afresh
    with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=NEVER) as tracked:
        # replaced, and the first flush at start committed what the file already held
        assert blob.download_blob().readall() == b"run 2\n"
        assert tracked.flush() == 0
        grow(log, b"more\n")
    assert blob.download_blob().readall() == b"run 2\nmore\n"
    assert [size for _, size in committed(blob)] == [6, 5]


def test_a_full_block_list_is_merged_without_changing_the_content(storage: TaskOutputStorage, blob: BlobClient,
                                                                   tmp_path: Path) -> None:
    log = tmp_path / "stdout.txt"
    tracked = TrackedFile(storage.container, BLOB, log, NEVER, max_blocks=10, block_size=8, compacted_block_size=64).start()
    with tracked:
        counts = []
        for n in range(30):
            grow(log, b"%d:abc\n" % n)  # 6-7 bytes a flush: one block each
            assert tracked.flush() == len(b"%d:abc\n" % n)
            blocks = committed(blob)
            counts.append(len(blocks))
            assert len(blocks) <= 10
            assert blob.download_blob().readall() == log.read_bytes()
            assert blob.get_blob_properties().content_settings.content_type == "text/plain"
        assert counts[:10] == list(range(1, 11)) and counts[10] < 10  # the 11th flush found the list full
        assert all(size <= 64 for _, size in blocks) and any(size > 8 for _, size in blocks)
        assert len({len(block_id) for block_id, _ in blocks}) == 1
        grow(log, b"y" * 20)  # three 8-byte blocks in the final flush
    assert blob.download_blob().readall() == log.read_bytes()
    assert len(committed(blob)) <= 10
    assert blob.get_block_list("uncommitted")[1] == []


def test_a_list_that_cannot_be_merged_fails_clearly_and_keeps_what_was_committed(storage: TaskOutputStorage, blob: BlobClient,
                                                                                  tmp_path: Path) -> None:
    log = tmp_path / "stdout.txt"
    tracked = TrackedFile(storage.container, BLOB, log, NEVER, max_blocks=4, block_size=4, compacted_block_size=4).start()
    grow(log, b"aaaabbbbccccdddd")
    assert tracked.flush() == 16 and len(committed(blob)) == 4
    grow(log, b"eeee")
    with pytest.raises(OutputStorageError, match="limit of 4 committed blocks"):
        tracked.flush()
    with pytest.raises(OutputStorageError, match="final flush"):
        tracked.close()
    assert blob.download_blob().readall() == b"aaaabbbbccccdddd"


@dataclass
class Recorded:
    events: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, batch: list[dict[str, Any]]) -> None:
        self.events.extend(batch)

    def take(self, proxy: EventProxy) -> list[tuple[str, str, int, str]]:
        assert proxy.drain(10), "events not delivered"
        taken = [(e["eventType"], e["data"]["api"], e["data"]["contentLength"], e["data"]["blobType"]) for e in self.events]
        self.events.clear()
        return taken


@pytest.fixture
def proxied(azurite: Azurite) -> Iterator[tuple[EventProxy, Recorded]]:
    recorded = Recorded()
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", EventFeed(recorded)).start()
    yield proxy, recorded
    proxy.stop()


def test_every_flush_with_new_bytes_raises_blob_created_with_the_new_size(proxied: tuple[EventProxy, Recorded], job: str,
                                                                          tmp_path: Path) -> None:
    proxy, recorded = proxied
    storage = TaskOutputStorage.connect(proxy.connection_string(), job, "task-1")
    storage.prepare()
    log = tmp_path / "stdout.txt"
    created = "Microsoft.Storage.BlobCreated"
    with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=NEVER) as tracked:
        assert recorded.take(proxy) == [(created, "PutBlob", 0, "BlockBlob")]
        size = 0
        for data in (b"one\n", b"two\n" * 100, b"three\n" * 10_000):
            grow(log, data)
            size += len(data)
            tracked.flush()
            assert recorded.take(proxy) == [(created, "PutBlockList", size, "BlockBlob")]
            tracked.flush()
            assert recorded.take(proxy) == []  # nothing new: nothing committed, nothing raised
        grow(log, b"last\n")
    assert recorded.take(proxy) == [(created, "PutBlockList", size + 5, "BlockBlob")]  # the final flush


def test_the_index_shows_a_tracked_log_s_current_size_without_the_reconciler(
    azurite: Azurite, serve: Callable[..., Any], settings: Any, job: str, tmp_path: Path
) -> None:
    app = serve(settings)
    feed = EventFeed(Webhook(f"{app.url}/api/events", settings.events_keys[0]), first_backoff=0.05, max_backoff=0.2)
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", feed).start()
    interval = 0.5
    try:
        storage = TaskOutputStorage.connect(proxy.connection_string(), job, "task-1")
        storage.prepare()
        log = tmp_path / "stdout.txt"

        def indexed_size() -> int | None:
            items = app.all_pages(f"/api/jobs/{job}/tasks/task-1/outputs")
            return next((item["size"] for item in items if item["blobName"] == BLOB), None)

        def indexed(expected: int) -> bool:
            return eventually(lambda: indexed_size() == expected)

        # No reconciler runs here: only the events the flushes themselves raise can change the
        # index. (The wait bounds a hang; latency belongs to benchmarks, not tests.)
        with storage.save_tracked(TaskOutputKind.LOG, log, "stdout.txt", interval=timedelta(seconds=interval)):
            assert indexed(0)
            for n in range(3):
                grow(log, f"progress {n}\n".encode() * 1000 * (n + 1))
                expected = log.stat().st_size
                assert indexed(expected), (indexed_size(), expected)
                item = next(i for i in app.all_pages(f"/api/jobs/{job}/tasks/task-1/outputs") if i["blobName"] == BLOB)
                assert item["contentType"] == "text/plain"
            grow(log, b"done\n")
        assert indexed(log.stat().st_size), (indexed_size(), log.stat().st_size)
        assert feed.dead_lettered == 0
    finally:
        proxy.stop()

