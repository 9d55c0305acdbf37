"""The reconciler: repairs what no event announces (SPEC §10).

Azure sends no event for Append Block, Put Page or a resize, nor a per-blob BlobDeleted when a
whole container is deleted (nor reliably for lifecycle deletes, undelete or object
replication; see "Azure Blob Storage as an Event Grid source", which lists the operations that
do raise events). So on a schedule (``RECONCILE_SCHEDULE``) each run:

* lists the account's job containers (one listing call per 5,000 containers) and removes every
  row of a job whose container is gone, and the job itself, from every listing;
* reindexes every job active within ``RECONCILE_WINDOW_HOURS``: grown append and page blobs get their size (and
  quotas re-applied), vanished blobs are removed and unannounced ones added, all through the
  indexer, sequencer-ordered like real events;
* purges delete tombstones older than Event Grid's 24-hour retry window plus a margin: no
  event older than that can still arrive, so no late create can resurrect the blob.

It reads the outputs account and never writes to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from shared.domain import keys
from shared.domain.planning import MAX_BATCH_OPERATIONS, Op, Operation
from shared.domain.rows import DELETED, Entity
from shared.store.blobs import OutputsAccount, list_job_containers
from shared.store.errors import ConflictError
from shared.store.table import TableStore

from .reindex import JobNotFoundError, Reindexer

log = logging.getLogger(__name__)

#: Event Grid retries a delivery for at most 24 hours; a tombstone must outlive that.
TOMBSTONE_TTL = timedelta(hours=24) + timedelta(hours=1)


@dataclass(slots=True)
class ReconcileReport:
    jobs_removed: int = 0
    rows_removed: int = 0
    jobs_reconciled: int = 0
    added: int = 0
    fixed: int = 0
    removed: int = 0
    tombstones_purged: int = 0
    deltas_folded: int = 0
    feed_rows_purged: int = 0

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


class Reconciler:
    def __init__(self, store: TableStore, blobs: OutputsAccount, reindexer: Reindexer, window: timedelta,
                 *, feed_retention: timedelta = timedelta(hours=168)) -> None:
        self.store = store
        self.feed_retention = feed_retention
        self.blobs = blobs
        self.reindexer = reindexer
        self.window = window

    async def run(self, now: datetime | None = None) -> ReconcileReport:
        """One reconciliation of every job; what it changed is logged and returned."""
        now = now or datetime.now(timezone.utc)
        report = ReconcileReport()
        containers = await list_job_containers(self.blobs)
        jobs = {row["RowKey"]: row async for row in self.store.query_partition(keys.JOBS_PARTITION)}
        for container in sorted(set(jobs) - set(containers)):
            report.rows_removed += await self._remove_job(container)
            report.jobs_removed += 1
        candidates: set[str] = set()
        for container in sorted(set(jobs) & set(containers)):
            last = await self._last_activity(container, jobs[container])
            if last is not None and last >= now - self.window:
                candidates.add(container)
            if last is not None and last >= now - self.window - TOMBSTONE_TTL - timedelta(hours=1):
                report.tombstones_purged += await self._purge_tombstones(container, now - TOMBSTONE_TTL)
            if last is not None and last >= now - self.window - self.feed_retention - timedelta(hours=1):
                # The change feed keeps CHANGE_FEED_RETENTION_HOURS of changes (the newest row always).
                report.feed_rows_purged += await self.reindexer.indexer.compactor.purge_feed(container, now - self.feed_retention)
        for container in sorted(candidates):
            await self._reconcile_job(container, now, report)
        log.info("reconciled: %s", report.as_dict())
        return report

    async def _reconcile_job(self, container: str, now: datetime, report: ReconcileReport) -> None:
        try:
            result = await self.reindexer.reindex(container)
        except JobNotFoundError:
            return
        report.jobs_reconciled += 1
        # A writer folds the deltas it wrote a moment later; this catches any it could not.
        report.deltas_folded += await self.reindexer.indexer.compactor.fold(container)
        report.added += result.added
        report.fixed += result.fixed
        report.removed += result.removed
        await self.store.merge({"PartitionKey": keys.JOBS_PARTITION, "RowKey": container, "LastReconciledAt": now})

    async def _last_activity(self, container: str, job_row: Entity) -> datetime | None:
        """When the job last changed in the index: its newest counter shard, else when first seen."""
        low, high = keys.prefix_range(keys.shard_prefix())
        last: datetime | None = job_row.get("FirstSeenAt")
        async for row in self.store.query_range(container, low, high, select=("RowKey", "LastIndexedAt")):
            at = row.get("LastIndexedAt")
            if at is not None and (last is None or at > last):
                last = at
        return last

    async def _remove_job(self, container: str) -> int:
        """Delete every row of a job whose container is gone, then the job's own row."""
        rows = [row async for row in self.store.query_partition(container)]
        removed = await self._delete(container, rows)
        job = await self.store.get(keys.JOBS_PARTITION, container)
        if job is not None:
            removed += await self._delete(keys.JOBS_PARTITION, [job])
        log.info("container %s is gone: removed its job and %d rows", container, removed)
        return removed

    async def _purge_tombstones(self, container: str, cutoff: datetime) -> int:
        low, high = keys.outputs_span()
        old = [
            row async for row in self.store.query_range(container, low, high, where={"State": DELETED})
            if (row.get("IndexedAt") or cutoff) < cutoff
        ]
        return await self._delete(container, old)

    async def _delete(self, partition: str, rows: list[Entity]) -> int:
        """Delete rows as read (ETag-conditional, 100 a batch); rows changed meanwhile are kept."""
        deleted = 0
        for start in range(0, len(rows), MAX_BATCH_OPERATIONS):
            chunk = rows[start : start + MAX_BATCH_OPERATIONS]
            ops = [Operation(Op.DELETE, {"RowKey": row["RowKey"]}, row.get("__etag")) for row in chunk]
            try:
                await self.store.submit(partition, ops)
                deleted += len(ops)
            except ConflictError:
                for op in ops:  # one changed meanwhile: the others still go, one at a time
                    try:
                        await self.store.submit(partition, [op])
                        deleted += 1
                    except ConflictError:
                        pass
        return deleted
