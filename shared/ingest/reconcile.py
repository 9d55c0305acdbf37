"""The reconciler: repairs what no event announces (SPEC §10), at a cost that follows change.

Azure sends no event for Append Block, Put Page or a resize, nor a per-blob BlobDeleted when a
whole container is deleted (nor reliably for lifecycle deletes, undelete or object
replication; see "Azure Blob Storage as an Event Grid source", which lists the operations that
do raise events). So on a schedule (``RECONCILE_SCHEDULE``) each run:

* lists the account's job containers (one listing call per 5,000 containers) and removes every
  row of a job whose container is gone, and the job itself, from every listing;
* for every job active within ``RECONCILE_WINDOW_HOURS``, ``RECONCILE_JOB_CONCURRENCY`` at a
  time: reads the properties of its append and page blobs (the only ones that grow without an
  event), and advances its *sweep* by one bounded slice on each side (``sweep.py``): the next
  ``RECONCILE_SWEEP_BLOBS`` blobs of its listing against the index, the next
  ``RECONCILE_SWEEP_ROWS`` rows of its index against storage. A job of a million outputs is
  swept over several runs; a small one is compared whole every run;
* purges delete tombstones older than Event Grid's 24-hour retry window plus a margin as the
  index side of the sweep passes them (no event older than that can still arrive), also for jobs
  that went quiet, until their tombstones are gone;
* continues long reindexes whose instance stopped (``operations.py``).

Each job is reconciled on its own: a failure (a row the core cannot read, storage refusing a
slice) is logged and counted in ``jobs_failed``, and the run goes on with the other jobs. Each
job's position is saved after its slice (``~reconcile`` partition), and jobs are taken oldest
reconciled first; a run stops starting jobs after ``RECONCILE_RUN_SECONDS``, under the Functions
timeout, so a run cut short resumes where it stopped and every job is reached. Memory per run is
bounded by the slice sizes and the job concurrency, whatever the jobs' sizes.

It reads the outputs account and never writes to it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.domain import keys
from shared.domain.rows import Entity
from shared.settings import ReconcileSettings
from shared.store.blobs import ContainerNotFoundError, OutputsAccount, list_job_containers
from shared.store.table import TableStore

from .compactor import Compactor
from .sweep import TOMBSTONE_TTL, JobSweep, SweepReport, delete_rows

log = logging.getLogger(__name__)

__all__ = ["TOMBSTONE_TTL", "Checkpoint", "ReconcileReport", "Reconciler"]

#: Rows of a gone job deleted per read (memory stays bounded whatever the job's size).
REMOVE_CHUNK = 1000


@dataclass(slots=True)
class ReconcileReport:
    jobs_removed: int = 0
    rows_removed: int = 0
    jobs_reconciled: int = 0
    #: Jobs whose reconciliation failed this run (logged); the run went on with the others.
    jobs_failed: int = 0
    #: Jobs not reached before ``RECONCILE_RUN_SECONDS``: first in line next run.
    jobs_deferred: int = 0
    added: int = 0
    fixed: int = 0
    removed: int = 0
    tombstones_purged: int = 0
    deltas_folded: int = 0
    blobs_listed: int = 0
    list_calls: int = 0
    rows_checked: int = 0
    blobs_read: int = 0
    #: Jobs whose sweep reached the end of their index this run (a pass completed).
    passes_completed: int = 0
    operations_resumed: int = 0

    def add(self, found: SweepReport) -> None:
        for name in ("added", "fixed", "removed", "tombstones_purged", "blobs_listed", "list_calls", "rows_checked",
                     "blobs_read"):
            setattr(self, name, getattr(self, name) + getattr(found, name))
    feed_rows_purged: int = 0

    def as_dict(self) -> dict[str, object]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a job's sweep stands: the blob name and row key each side resumes after."""

    blobs_after: str | None = None
    rows_after: str | None = None
    passes: int = 0
    last_run: datetime | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Checkpoint:
        if not row:
            return cls()
        return cls(row.get("BlobsAfter") or None, row.get("RowsAfter") or None, int(row.get("Passes") or 0),
                   row.get("LastRunAt"))

    def entity(self, container: str) -> Entity:
        return {"PartitionKey": keys.RECONCILE_PARTITION, "RowKey": container, "BlobsAfter": self.blobs_after or "",
                "RowsAfter": self.rows_after or "", "Passes": self.passes, "LastRunAt": self.last_run}


class Reconciler:
    def __init__(self, store: TableStore, blobs: OutputsAccount, sweep: JobSweep, compactor: Compactor,
                 window: timedelta, limits: ReconcileSettings,
                 resume_operations: Callable[[float, datetime], Awaitable[int]] | None = None,
                 clock: Callable[[], float] = time.monotonic, *,
                 feed_retention: timedelta = timedelta(hours=168)) -> None:
        self.store = store
        self.feed_retention = feed_retention
        self.blobs = blobs
        self.sweep = sweep
        self.compactor = compactor
        self.window = window
        self.limits = limits
        self.resume_operations = resume_operations
        #: What ``RECONCILE_RUN_SECONDS`` is measured with (a test steps it).
        self.clock = clock

    async def run(self, now: datetime | None = None) -> ReconcileReport:
        """One reconciliation of every job; what it changed is logged and returned."""
        now = now or datetime.now(timezone.utc)
        deadline = self.clock() + self.limits.run_seconds
        report = ReconcileReport()
        containers = await list_job_containers(self.blobs)
        jobs = {row["RowKey"]: row async for row in self.store.query_partition(keys.JOBS_PARTITION)}
        checkpoints = {row["RowKey"]: Checkpoint.of(row) async for row in self.store.query_partition(keys.RECONCILE_PARTITION)}
        slots = asyncio.Semaphore(self.limits.job_concurrency)

        async def isolated(container: str, work: Callable[[], Awaitable[None]]) -> None:
            async with slots:
                if self.clock() >= deadline:
                    report.jobs_deferred += 1
                    return
                try:
                    await work()
                except Exception:  # one job's failure is its own: logged, counted, the run goes on
                    report.jobs_failed += 1
                    log.exception("reconciling %s failed; the other jobs go on", container)

        gone = sorted(set(jobs) - set(containers))
        await asyncio.gather(*(isolated(c, functools.partial(self._remove_job, c, report)) for c in gone))
        # Oldest reconciled first: the jobs a run cut short did not reach come first next time.
        never = datetime.min.replace(tzinfo=timezone.utc)
        present = sorted(set(jobs) & set(containers), key=lambda c: (checkpoints.get(c, Checkpoint()).last_run or never, c))
        await asyncio.gather(*(
            isolated(c, functools.partial(self._reconcile_job, c, jobs[c], checkpoints.get(c, Checkpoint()), now, report))
            for c in present
        ))
        if self.resume_operations is not None:
            try:
                report.operations_resumed += await self.resume_operations(deadline, now)
            except Exception:
                log.exception("resuming long-running operations failed")
        log.info("reconciled: %s", report.as_dict())
        return report

    async def _reconcile_job(self, container: str, job_row: Entity, checkpoint: Checkpoint, now: datetime,
                             report: ReconcileReport) -> None:
        partitions = (await self.sweep.layouts.get(container)).all()
        last = await self._last_activity(partitions, job_row)
        if last is not None and last >= now - self.window - self.feed_retention - timedelta(hours=1):
            # The change feed keeps CHANGE_FEED_RETENTION_HOURS of changes (the newest row always).
            for partition in partitions:
                report.feed_rows_purged += await self.compactor.purge_feed(partition, now - self.feed_retention)
        if last is None or last < now - self.window - TOMBSTONE_TTL - timedelta(hours=1):
            return  # quiet for longer than any tombstone lives: nothing left to do
        active = last >= now - self.window
        found = SweepReport()
        blobs_after = checkpoint.blobs_after
        try:
            if active:
                found.add(await self.sweep.grown_blobs(container))
                part, blobs_after = await self.sweep.blob_slice(container, checkpoint.blobs_after, self.limits.sweep_blobs)
                found.add(part)
            part, rows_after = await self.sweep.row_slice(
                container, checkpoint.rows_after, self.limits.sweep_rows, now - TOMBSTONE_TTL, check=active)
            found.add(part)
        except ContainerNotFoundError:
            return  # deleted meanwhile: the next run removes the job
        passes = checkpoint.passes + (rows_after is None)
        report.passes_completed += rows_after is None
        await self.store.merge(Checkpoint(blobs_after, rows_after, passes, now).entity(container))
        report.add(found)
        if not active:
            return
        report.jobs_reconciled += 1
        # A writer folds the deltas it wrote a moment later; this catches any it could not.
        report.deltas_folded += await self.compactor.fold_job(partitions)
        await self.store.merge({"PartitionKey": keys.JOBS_PARTITION, "RowKey": container, "LastReconciledAt": now})

    async def _last_activity(self, partitions: list[str], job_row: Entity) -> datetime | None:
        """When the job last changed in the index: its newest counter shard (of any of its
        partitions), else when first seen."""
        low, high = keys.prefix_range(keys.shard_prefix())
        last: datetime | None = job_row.get("FirstSeenAt")
        for partition in partitions:
            async for row in self.store.query_range(partition, low, high, select=("RowKey", "LastIndexedAt")):
                at = row.get("LastIndexedAt")
                if isinstance(at, datetime) and (last is None or at > last):
                    last = at
        return last

    async def _remove_job(self, container: str, report: ReconcileReport) -> None:
        """Delete every row of a job whose container is gone (a chunk at a time), its sweep
        position, then the job's own row."""
        removed = 0
        for partition in (await self.sweep.layouts.get(container)).all():
            after: str | None = None
            while True:
                rows, more = await self.store.read_page(partition, None, None, limit=REMOVE_CHUNK, after=after,
                                                        select=("RowKey",))
                removed += await delete_rows(self.store, partition, rows)
                if not more or not rows:
                    break
                after = rows[-1]["RowKey"]
        checkpoint = await self.store.get(keys.RECONCILE_PARTITION, container)
        if checkpoint is not None:
            await delete_rows(self.store, keys.RECONCILE_PARTITION, [checkpoint])
        job = await self.store.get(keys.JOBS_PARTITION, container)
        if job is not None:
            removed += await delete_rows(self.store, keys.JOBS_PARTITION, [job])
        self.sweep.layouts.forget(container)  # a job of that name made later may choose another
        report.rows_removed += removed
        report.jobs_removed += 1
        log.info("container %s is gone: removed its job and %d rows", container, removed)
