"""Delete tombstones found by when they were written (the change feed), not by reading every output.

Against a real Azurite and the real app, with the reconciler's time injected (never slept on):
the purge reads the job's feed from its saved position and just the rows its deletes name, a
steady job's purge reads no feed row, a tombstone a newer event moved is never deleted, the
feed is never purged past the purge's position whatever its retention, and a quiet job's one
pass reads its tombstones alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from azure.storage.blob import BlobServiceClient

from shared.domain import keys
from shared.domain.conventions import container_name
from shared.domain.feed import counter_feed
from shared.domain.rows import DELETED, LIVE
from shared.ingest.reconcile import Checkpoint
from shared.ingest.tombstones import TombstonePurge
from shared.service import Service
from shared.settings import Settings

from ..helpers import blob_event
from ..support.stack import RunningApp
from ..support.workload import rows_by_partition, spread

T = TypeVar("T")
NAMES = [f"task-{n % 3}/$TaskOutput/f{n:02d}.bin" for n in range(12)]


def with_service(settings: Settings, work: Callable[[Service], Awaitable[T]]) -> T:
    async def main() -> T:
        service = await Service.create(settings)
        try:
            return await work(service)
        finally:
            await service.close()

    return asyncio.run(main())


def key_of(name: str) -> str:
    task, kind, path = name.split("/", 2)
    return keys.output_key(kind[1:], path, task)


def setup_job(app: RunningApp, blob_service: BlobServiceClient, job: str, deleted: list[str]) -> str:
    """A job whose NAMES were created (blobs and events), then ``deleted`` deleted, all folded."""
    container = container_name(job)
    client = blob_service.get_container_client(container)
    client.create_container()
    for name in NAMES:
        client.upload_blob(name, b"x" * 100)  # the size the events say: nothing to repair
    assert app.post_events([blob_event(container, n, sequencer=10 + i) for i, n in enumerate(NAMES)]).status_code == 200
    for name in deleted:
        client.delete_blob(name)
    if deleted:
        assert app.post_events([blob_event(container, n, deleted=True, sequencer=100 + i)
                                for i, n in enumerate(deleted)]).status_code == 200
    with_service(app.settings, lambda s: s.indexer.compactor.fold(container))
    return container


def states(app: RunningApp, container: str) -> dict[str, str]:
    async def read(service: Service) -> dict[str, str]:
        return {row["RowKey"]: row["State"] async for row in service.store.query_range(
            container, *keys.prefix_range(keys.TASK_OUTPUT + keys.SEPARATOR), select=("RowKey", "State"))}

    return with_service(app.settings, read)


def feed_seqs(app: RunningApp, container: str) -> list[int]:
    async def read(service: Service) -> list[int]:
        return [keys.feed_seq(str(row["RowKey"])) async for row in service.store.query_range(
            container, *keys.prefix_range(keys.feed_prefix()), select=("RowKey",))]

    return with_service(app.settings, read)


def test_the_feed_names_the_old_tombstones_and_only_those_rows_are_read(app: RunningApp, blob_service: BlobServiceClient) -> None:
    deleted = NAMES[:4]
    container = setup_job(app, blob_service, "tomb-feed", deleted)
    assert {k for k, s in states(app, container).items() if s == DELETED} == {key_of(n) for n in deleted}

    async def purge(service: Service, position: int, cutoff: datetime):
        return await TombstonePurge(service.store, limit=5000).purge(container, position, cutoff)

    # Not old yet: nothing goes, and the position stays at the first row written after the cutoff.
    young = with_service(app.settings, lambda s: purge(s, 0, datetime.now(timezone.utc) - timedelta(hours=25)))
    assert (young.purged, young.position, young.rows_read) == (0, 0, 0)
    assert young.feed_rows_read == 1  # the first read asks for one row

    later = datetime.now(timezone.utc) + timedelta(hours=1)  # every tombstone is older than this
    report = with_service(app.settings, lambda s: purge(s, 0, later))
    assert report.purged == len(deleted)
    assert report.rows_read == len(deleted)  # just the rows the feed's deletes name, no live row
    next_seq, _ = counter_feed(with_service(app.settings, lambda s: s.store.get(container, keys.counter_key())))
    assert report.position == next_seq  # every feed row looked at
    assert states(app, container) == {key_of(n): LIVE for n in NAMES[4:]}

    # Steady: from that position the purge reads no feed row and no output row.
    steady = with_service(app.settings, lambda s: purge(s, report.position, later))
    assert (steady.purged, steady.feed_rows_read, steady.rows_read, steady.position) == (0, 0, 0, report.position)


def test_a_tombstone_moved_by_a_newer_event_is_never_deleted(app: RunningApp, blob_service: BlobServiceClient) -> None:
    recreated, deleted_again, plain = NAMES[0], NAMES[1], NAMES[2]
    container = setup_job(app, blob_service, "tomb-moved", [recreated, deleted_again, plain])
    cutoff = datetime.now(timezone.utc)  # after the first deletes were written, before what follows
    blob_service.get_container_client(container).upload_blob(recreated, b"y" * 100)
    assert app.post_events([blob_event(container, recreated, sequencer=500),  # created again: live
                            blob_event(container, deleted_again, deleted=True, sequencer=501)]).status_code == 200
    with_service(app.settings, lambda s: s.indexer.compactor.fold(container))

    report = with_service(app.settings, lambda s: TombstonePurge(s.store, 5000).purge(container, 0, cutoff))
    rows = states(app, container)
    assert report.purged == 1 and key_of(plain) not in rows
    assert rows[key_of(recreated)] == LIVE
    # Deleted again after the cutoff (no change recorded: it was deleted already): kept, and the
    # position waits at its feed row until it is old enough.
    assert rows[key_of(deleted_again)] == DELETED and report.held
    later = with_service(app.settings, lambda s: TombstonePurge(s.store, 5000).purge(
        container, report.position, datetime.now(timezone.utc) + timedelta(hours=1)))
    assert later.purged == 1 and key_of(deleted_again) not in states(app, container)


def test_the_feed_is_not_purged_past_the_tombstones_even_with_a_retention_under_25_hours(
        serve: Callable[..., RunningApp], settings: Settings, blob_service: BlobServiceClient) -> None:
    short = dataclasses.replace(settings, change_feed_retention_hours=1)
    app = serve(short)
    deleted = NAMES[:3]
    container = setup_job(app, blob_service, "tomb-retention", deleted)
    before = feed_seqs(app, container)
    assert len(before) >= 2

    async def reconcile(service: Service, at: datetime) -> dict:
        return (await service.reconciler().run(at)).as_dict()

    start = datetime.now(timezone.utc)
    # Two hours on: the feed's rows are past its one-hour retention, but their tombstones are
    # not past theirs: the rows recording the deletes stay (only the creates' before them go).
    early = with_service(short, lambda s: reconcile(s, start + timedelta(hours=2)))
    assert early["tombstones_purged"] == 0
    kept = feed_seqs(app, container)
    checkpoint = with_service(short, lambda s: s.store.get(keys.RECONCILE_PARTITION, container))
    position = Checkpoint.of(checkpoint).position(container)
    assert all(seq in kept for seq in before if seq >= position)
    assert sum(s == DELETED for s in states(app, container).values()) == len(deleted)

    # 26 hours on: the tombstones go through the feed, then the feed rows that recorded them.
    late = with_service(short, lambda s: reconcile(s, start + timedelta(hours=26)))
    assert late["tombstones_purged"] == len(deleted)
    assert late["tombstone_feed_rows_read"] >= 1
    assert DELETED not in states(app, container).values()
    # (The run's repairs of the events' made-up ETags add feed rows of their own, kept.)
    assert not set(feed_seqs(app, container)) & set(before[:-1])


def test_a_quiet_job_s_tombstone_no_change_recorded_goes_in_one_pass_that_reads_no_live_row(
        app: RunningApp, blob_service: BlobServiceClient) -> None:
    container = setup_job(app, blob_service, "tomb-silent", [])
    # A delete that came before the create it follows: a tombstone for an output never listed.
    silent = "task-7/$TaskOutput/early.bin"
    assert app.post_events([blob_event(container, silent, deleted=True, sequencer=900)]).status_code == 200
    start = datetime.now(timezone.utc)

    async def reconcile(service: Service, at: datetime) -> dict:
        return (await service.reconciler().run(at)).as_dict()

    first = with_service(app.settings, lambda s: reconcile(s, start + timedelta(hours=26)))
    assert first["tombstones_purged"] == 1
    assert first["rows_checked"] == 1  # the service filtered the tombstones: no live row read
    assert key_of(silent) not in states(app, container)
    # The pass is done for this activity: later runs read no row of the job.
    again = with_service(app.settings, lambda s: reconcile(s, start + timedelta(hours=27)))
    assert (again["rows_checked"], again["tombstones_purged"]) == (0, 0)


def test_a_hot_job_s_tombstones_go_through_each_partition_s_feed(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = "tomb-spread"
    spread(app, job, 4)  # four partitions, each with its own feed
    deleted = NAMES[::2]  # tasks 0, 1 and 2: spread over the partitions
    container = setup_job(app, blob_service, job, deleted)
    partitions = rows_by_partition(app, container)
    assert len(partitions) > 1
    with_service(app.settings, lambda s: s.indexer.compactor.fold_job(list(partitions)))
    start = datetime.now(timezone.utc)

    async def reconcile(service: Service, at: datetime) -> dict:
        return (await service.reconciler().run(at)).as_dict()

    report = with_service(app.settings, lambda s: reconcile(s, start + timedelta(hours=26)))
    assert report["tombstones_purged"] == len(deleted)
    # All went through the feeds: the quiet job's pass that followed found no tombstone left.
    assert report["rows_checked"] == 0
    checkpoint = Checkpoint.of(with_service(app.settings, lambda s: s.store.get(keys.RECONCILE_PARTITION, container)))
    assert {p for p, seq in checkpoint.tombstones_from if seq > 0} == set(partitions)
    left = [state for partition in partitions for state in states(app, partition).values()]
    assert sorted(left) == [LIVE] * (len(NAMES) - len(deleted))  # the live rows stay, no tombstone does
