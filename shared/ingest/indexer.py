"""The index: turns blob events into rows, exactly once in effect, in sequencer order.

Design (see ``shared.domain.keys`` for the layout; the pure planning is
``shared.domain.planning``):

* A delivery is reduced to the newest event per blob, grouped by job container (one
  partition), and cut into chunks of at most 100 rows: the outputs, the task usage rows they
  touch and one counter shard.
* Each chunk is one batch transaction, guarded optimistically: rows believed absent are
  *created*, rows read before are *replaced* only if their ETag is unchanged. Anything that
  moved in between fails the whole transaction (it is atomic), and the chunk is re-read and
  re-planned. So a duplicate, a concurrent writer or a retry after a dropped connection (a
  batch is a POST the SDK will not retry) can never count twice.
* An event applies only if its sequencer is newer than the row's; deletes leave tombstones,
  so a late create cannot resurrect a deleted blob and a late delete cannot remove a newer one.
* Usage lives in 16 counter shards per job, updated in the same transaction as the outputs:
  exact, and concurrent writers spread over shards instead of fighting over one entity.
  A job-wide limit needs one consistent view of usage, so a job with ``maxOutputs`` or
  ``maxBytes`` routes every write through shard 0 and reads the (then frozen) others.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.conventions import is_convention_container, parse_blob_path
from shared.domain.events import BlobAction, BlobEvent, SkipReason
from shared.domain.planning import IngestReport, Plan, chunk_changes, plan_chunk
from shared.domain.quotas import Limits, QuotaDefaults
from shared.domain.rows import ROW_STATE, Change, Entity, Usage
from shared.store.errors import ConflictError, InvalidEntityError, StorageBusyError, StorageUnavailableError
from shared.store.row_locks import RowLocks
from shared.store.table import TableStore

from .crossings import CrossingAnnouncer
from .registry import JobRegistry

log = logging.getLogger(__name__)

#: Conflicts and dropped connections are retried this often (re-read, re-plan) per chunk.
MAX_ATTEMPTS = 12
_TASK_CACHE_SIZE = 20_000


class ContentionError(StorageBusyError):
    """A chunk kept losing optimistic races; the events are handed back to be redelivered."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Indexer:
    """Applies blob events to the index; one per process, shared by both entry points."""

    def __init__(
        self,
        store: TableStore,
        quota_defaults: QuotaDefaults,
        *,
        shard_count: int = keys.SHARD_COUNT,
    ) -> None:
        self.store = store
        self.quota_defaults = quota_defaults
        self.shard_count = shard_count
        self.registry = JobRegistry(store)
        self.crossings = CrossingAnnouncer(store)
        self._shards: dict[tuple[str, str], Entity] = {}
        self._tasks: OrderedDict[tuple[str, str], Entity] = OrderedDict()
        self._free_shards: dict[str, list[int]] = {}
        self._limited_locks: dict[str, asyncio.Lock] = {}
        # Hot path: chunks of this process never race each other for a task row or a shard.
        self._task_locks = RowLocks()
        self._shard_slots: dict[str, asyncio.Semaphore] = {}

    # -- entry point ---------------------------------------------------------------------

    async def ingest(self, events: Sequence[BlobEvent]) -> IngestReport:
        """Index a delivery. Raises ``StorageBusyError`` when it must be handed back.

        Chunks that committed before the error stay committed; redelivery finds them
        already applied, so handing the whole delivery back never double-counts.
        """
        report = IngestReport(received=len(events))
        latest: dict[tuple[str, str], Change] = {}
        for event in events:
            if not is_convention_container(event.container):
                report.skipped[SkipReason.NOT_A_JOB_CONTAINER.value] += 1
                continue
            output = parse_blob_path(event.blob_name)
            if output is None:
                report.skipped[SkipReason.NOT_A_CONVENTION_PATH.value] += 1
                continue
            change = Change.from_event(event, output)
            key = (change.container, change.row_key)
            previous = latest.get(key)
            if previous is None or change.sequencer > previous.sequencer:
                latest[key] = change
            report.unchanged += previous is not None
        by_container: dict[str, list[Change]] = {}
        for change in latest.values():
            by_container.setdefault(change.container, []).append(change)
        await self._apply(by_container, report)
        return report

    async def readmit(self, container: str, rows: Iterable[Entity]) -> IngestReport:
        """Re-evaluate rejected outputs (oldest first) after a limit was raised."""
        now = utcnow()
        changes = [Change.from_row(container, row, now=now, readmit=True) for row in rows]
        report = IngestReport(received=len(changes))
        await self._apply({container: changes} if changes else {}, report)
        return report

    async def _apply(self, by_container: Mapping[str, list[Change]], report: IngestReport) -> None:
        await asyncio.gather(*(self.registry.register(c) for c in by_container))
        jobs = [
            self._apply_chunk(container, chunk)
            for container, changes in by_container.items()
            for chunk in chunk_changes(changes)
        ]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        failure: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, IngestReport):
                report.add(outcome)
            elif failure is None or not isinstance(failure, StorageBusyError):
                failure = outcome
        if failure is not None:
            raise failure

    # -- jobs ------------------------------------------------------------------------------

    def forget_shards(self, container: str) -> None:
        """Drop the cached counter shards of ``container`` (its limits changed)."""
        for shard in range(self.shard_count):
            self._shards.pop((container, keys.shard_key(shard)), None)

    # -- one chunk -------------------------------------------------------------------------

    def _checkout_shard(self, container: str) -> int:
        free = self._free_shards.get(container)
        if not free:
            free = list(range(self.shard_count))
            random.shuffle(free)
            self._free_shards[container] = free
        return free.pop()

    def _release_shard(self, container: str, shard: int) -> None:
        self._free_shards.setdefault(container, []).insert(0, shard)

    async def _shard_row(self, container: str, shard: int, fresh: bool) -> Entity | None:
        key = (container, keys.shard_key(shard))
        if not fresh and key in self._shards:
            return self._shards[key]
        row = await self.store.get(container, keys.shard_key(shard))
        if row is None:
            self._shards.pop(key, None)
        else:
            self._shards[key] = row
        return row

    async def _task_rows(self, container: str, task_rows: set[str], fresh: bool) -> dict[str, Entity]:
        """Task usage rows as this process last saw them; ``fresh`` reads them from the table.

        A task not seen yet is assumed new (its row is created); if another writer made it
        first, the create fails the batch and the rows are read fresh.
        """
        if not fresh:
            return {k: row for k in task_rows if (row := self._tasks.get((container, k))) is not None}
        read = await self.store.get_many(container, task_rows)
        for row_key in task_rows:
            if row_key in read:
                self._remember_task(container, row_key, read[row_key])
            else:
                self._tasks.pop((container, row_key), None)
        return read

    def _remember_task(self, container: str, row_key: str, row: Entity) -> None:
        self._tasks[(container, row_key)] = row
        self._tasks.move_to_end((container, row_key))
        while len(self._tasks) > _TASK_CACHE_SIZE:
            self._tasks.popitem(last=False)

    async def _apply_chunk(self, container: str, changes: list[Change]) -> IngestReport:
        task_rows = {(container, c.task_row) for c in changes if c.task_row}
        slots = self._shard_slots.setdefault(container, asyncio.Semaphore(self.shard_count))
        # Task locks first, then a shard slot: a chunk waiting for a shard holds no lock
        # another chunk of this process needs to finish, so they cannot deadlock.
        async with self._task_locks.hold(task_rows), slots:
            return await self._apply_chunk_locked(container, changes)

    async def _apply_chunk_locked(self, container: str, changes: list[Change]) -> IngestReport:
        shard = self._checkout_shard(container)
        try:
            probe = await self._shard_row(container, shard, fresh=False)
            if Limits.effective(probe, self.quota_defaults).limits_job:
                lock = self._limited_locks.setdefault(container, asyncio.Lock())
                async with lock:
                    return await self._commit(container, changes, 0, limited=True)
            return await self._commit(container, changes, shard, limited=False)
        finally:
            self._release_shard(container, shard)

    async def _commit(self, container: str, changes: list[Change], shard: int, *, limited: bool) -> IngestReport:
        task_keys = {c.task_row for c in changes if c.task_row}
        # Creates assume their rows are new (one round trip when they are); deletes and
        # re-admissions expect rows to exist, so those chunks read them first.
        rows: dict[str, Entity] | None = (
            None if limited or any(c.readmit or c.action is BlobAction.DELETED for c in changes) else {}
        )
        refresh_shard, refresh_tasks = False, False
        for attempt in range(MAX_ATTEMPTS):
            others = Usage()
            if limited:
                shard_row, others = await self._all_shards(container)
            else:
                shard_row = await self._shard_row(container, shard, fresh=refresh_shard)
            limits = Limits.effective(shard_row, self.quota_defaults)
            if limits.limits_job and not limited:
                # The job got a job-wide limit since the cache was filled: go the exact way.
                lock = self._limited_locks.setdefault(container, asyncio.Lock())
                async with lock:
                    return await self._commit(container, changes, 0, limited=True)
            if rows is None:
                rows = await self.store.get_rows(container, [c.row_key for c in changes], select=ROW_STATE)
            tasks = await self._task_rows(container, task_keys, fresh=refresh_tasks)
            refresh_shard, refresh_tasks = False, False
            plan = plan_chunk(
                changes,
                rows=rows,
                tasks=tasks,
                shard_key=keys.shard_key(shard),
                shard_row=shard_row,
                others=others,
                limits=limits,
                now=utcnow(),
            )
            if not plan.operations:
                return plan.report
            try:
                etags = await self.store.submit(container, plan.operations)
            except InvalidEntityError as exc:
                return await self._without_invalid(container, changes, plan, exc, shard, limited=limited)
            except ConflictError as exc:
                # Somebody moved first. Re-read what lost the race: a counter shard or the task
                # rows alone when one of those failed its ETag, everything when an output did.
                failed = plan.failed_row(exc.index)
                if failed is not None and failed.startswith(keys.shard_prefix()):
                    refresh_shard = True
                elif failed is not None and failed.startswith(keys.task_usage_prefix()):
                    refresh_tasks = True
                else:
                    rows, refresh_shard, refresh_tasks = None, True, True
                log.debug("chunk of %s re-planned after a conflict on %s (attempt %d)", container, failed, attempt + 1)
            except StorageUnavailableError:
                # We cannot know whether the batch landed: re-read everything. The create and
                # ETag conditions make an already-landed batch a no-op now.
                rows, refresh_shard, refresh_tasks = None, True, True
                log.info("chunk of %s re-planned after a dropped connection (attempt %d)", container, attempt + 1)
            else:
                self._remember(container, plan, etags)
                if plan.crossings:
                    await self.crossings.announce(container, plan.crossings, limits)
                return plan.report
            if attempt >= 1:
                await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise ContentionError(f"chunk of {container} lost {MAX_ATTEMPTS} optimistic races")

    async def _without_invalid(
        self, container: str, changes: list[Change], plan: Plan, exc: InvalidEntityError, shard: int, *, limited: bool
    ) -> IngestReport:
        """Storage refused a row: skip and count the change it came from, commit the rest.

        Nothing of the batch was written (a transaction is atomic). When the refused row is
        not named, each change is committed alone, so one bad row holds back nothing else.
        """
        failed = plan.failed_row(exc.index)
        bad = [c for c in changes if c.row_key == failed]
        if not bad and len(changes) > 1:
            report = IngestReport()
            for change in changes:
                report.add(await self._commit(container, [change], shard, limited=limited))
            return report
        bad = bad or changes
        for change in bad:
            log.warning("skipped %s in %s: storage refused its row (%s)", change.output.blob_name, container, exc)
        report = IngestReport()
        report.skipped[SkipReason.UNINDEXABLE.value] += len(bad)
        rest = [c for c in changes if c not in bad]
        if rest:
            report.add(await self._commit(container, rest, shard, limited=limited))
        return report

    def _remember(self, container: str, plan: Plan, etags: Sequence[str | None]) -> None:
        for op, etag in zip(plan.operations, etags, strict=True):
            row_key = op.entity["RowKey"]
            if row_key.startswith(keys.shard_prefix()):
                self._shards[(container, row_key)] = {**op.entity, "__etag": etag}
            elif row_key.startswith(keys.task_usage_prefix()):
                self._remember_task(container, row_key, {**op.entity, "__etag": etag})

    async def _all_shards(self, container: str) -> tuple[Entity | None, Usage]:
        """Shard 0 (the one a limited job writes) and the sum of the others, freshly read."""
        low, high = keys.prefix_range(keys.shard_prefix())
        first: Entity | None = None
        others = Usage()
        async for row in self.store.query_range(container, low, high):
            if row["RowKey"] == keys.shard_key(0):
                first = row
            else:
                others = others.plus(Usage.of(row))
        return first, others
