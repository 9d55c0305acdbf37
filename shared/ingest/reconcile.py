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
* purges delete tombstones older than Event Grid's 24-hour retry window plus a margin (no event
  older than that can still arrive), found by when they were written: through the job's change
  feed, from a saved position (``tombstones.py``), also for jobs that went quiet, until their
  tombstones are gone; and only then purges the feed's rows past its retention, never past
  that position;
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
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.domain import keys
from shared.domain.rows import Entity, as_int
from shared.settings import ReconcileSettings
from shared.store.blobs import ContainerNotFoundError, OutputsAccount, list_job_containers
from shared.store.table import TableStore

from .compactor import Compactor
from .sweep import TOMBSTONE_TTL, JobSweep, SweepReport, delete_rows
from .tombstones import TombstonePurge

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
    #: Change feed rows the tombstone purge read (a steady job's: none).
    tombstone_feed_rows_read: int = 0
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
    #: The next change feed seq the tombstone purge reads (``tombstones.py``), per partition of
    #: the job (a hot job has several, each with its own feed).
    tombstones_from: tuple[tuple[str, int], ...] = ()
    #: The job's last activity whose quiet pass (its tombstones alone, once all are past their
    #: time) was started, and whether that pass ended.
    quiet_of: datetime | None = None
    quiet_done: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Checkpoint:
        if not row:
            return cls()
        return cls(row.get("BlobsAfter") or None, row.get("RowsAfter") or None, int(row.get("Passes") or 0),
                   row.get("LastRunAt"), _positions(row.get("TombstonesFrom")), row.get("QuietOf"), bool(row.get("QuietDone")))

    def position(self, partition: str) -> int:
        """The tombstone purge's feed position in ``partition`` (0: from the feed's start)."""
        return dict(self.tombstones_from).get(partition, 0)

    def entity(self, container: str) -> Entity:
        return {"PartitionKey": keys.RECONCILE_PARTITION, "RowKey": container, "BlobsAfter": self.blobs_after or "",
                "RowsAfter": self.rows_after or "", "Passes": self.passes, "LastRunAt": self.last_run,
                "TombstonesFrom": json.dumps(dict(self.tombstones_from), separators=(",", ":")),
                "QuietOf": self.quiet_of, "QuietDone": self.quiet_done}


def _positions(text: Any) -> tuple[tuple[str, int], ...]:
    """Saved feed positions (JSON ``{partition: seq}``); anything else reads as none: from the start."""
    try:
        saved = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return ()
    if not isinstance(saved, dict):
        return ()
    return tuple(sorted((str(p), as_int(seq)) for p, seq in saved.items()))


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
        self.tombstones = TombstonePurge(store, limits.sweep_rows)
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
        if last is None:
            return
        # Each partition has its own feed (a hot job's several): a position in each.
        positions = dict(checkpoint.tombstones_from)
        feed_kept = last >= now - self.window - self.feed_retention - timedelta(hours=1)
        for partition in partitions:
            position = positions.get(partition, 0)
            if feed_kept or last >= now - self.window - TOMBSTONE_TTL - timedelta(hours=1):
                # Tombstones first, then the feed rows that recorded them (never past the
                # position); for as long as the feed is purged too, so the position moves on.
                purge = await self.tombstones.purge(partition, position, now - TOMBSTONE_TTL)
                report.tombstones_purged += purge.purged
                report.tombstone_feed_rows_read += purge.feed_rows_read
                position = positions[partition] = purge.position
            if feed_kept:
                # The change feed keeps CHANGE_FEED_RETENTION_HOURS of changes (the newest row always).
                report.feed_rows_purged += await self.compactor.purge_feed(partition, now - self.feed_retention,
                                                                           keep_from=position)
        checkpoint_now = replace(checkpoint, tombstones_from=tuple(sorted(positions.items())))
        if last < now - self.window:
            # Quiet: nothing to compare (no event is due), and its tombstones go by the feed.
            await self._quiet(container, checkpoint, checkpoint_now, last, now, report)
            return
        found = SweepReport()
        try:
            found.add(await self.sweep.grown_blobs(container))
            part, blobs_after = await self.sweep.blob_slice(container, checkpoint.blobs_after, self.limits.sweep_blobs)
            found.add(part)
            # The rows it reads anyway: old tombstones among them go too (those no change recorded).
            part, rows_after = await self.sweep.row_slice(
                container, checkpoint.rows_after, self.limits.sweep_rows, now - TOMBSTONE_TTL)
            found.add(part)
        except ContainerNotFoundError:
            return  # deleted meanwhile: the next run removes the job
        passes = checkpoint.passes + (rows_after is None)
        report.passes_completed += rows_after is None
        await self.store.merge(Checkpoint(blobs_after, rows_after, passes, now, checkpoint_now.tombstones_from)
                               .entity(container))
        report.add(found)
        report.jobs_reconciled += 1
        # A writer folds the deltas it wrote a moment later; this catches any it could not.
        report.deltas_folded += await self.compactor.fold_job(partitions)
        await self.store.merge({"PartitionKey": keys.JOBS_PARTITION, "RowKey": container, "LastReconciledAt": now})

    async def _quiet(self, container: str, before: Checkpoint, checkpoint: Checkpoint, last: datetime, now: datetime,
                     report: ReconcileReport) -> None:
        """A quiet job's one pass over its tombstones alone, once every one is past its time.

        The feed records every delete of an output the index listed; a delete that came before
        the create it follows (Event Grid does not promise order) leaves a tombstone no change
        recorded. So once the job's newest tombstone is past ``TOMBSTONE_TTL``, one pass reads
        its tombstones alone (``State eq 'deleted'``, filtered by the service: it reads no
        live row) and purges them; a job active again later gets a pass again."""
        if last < now - TOMBSTONE_TTL and not (checkpoint.quiet_of == last and checkpoint.quiet_done):
            after = checkpoint.rows_after if checkpoint.quiet_of == last else None
            try:
                found, after = await self.sweep.row_slice(container, after, self.limits.sweep_rows, now - TOMBSTONE_TTL,
                                                          check=False)
            except ContainerNotFoundError:
                return
            report.add(found)
            checkpoint = replace(checkpoint, rows_after=after, quiet_of=last, quiet_done=after is None)
        if checkpoint != before:
            await self.store.merge(checkpoint.entity(container))

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
