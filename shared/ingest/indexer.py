"""The index: turns blob events into rows, exactly once in effect, in sequencer order.

Design (see ``shared.domain.keys`` for the layout, ``shared.domain.planning`` for the pure
planning and ``shared.domain.ledger`` for how usage is kept):

* A delivery is reduced to the newest event per blob, grouped by job container (one
  partition), and cut into chunks of at most 98 outputs.
* Each chunk is one batch transaction: its outputs, each *created* when believed absent or
  *replaced* on the ETag it was read with, and one *created* delta row with what they change
  in the job's and the tasks' usage. Anything that moved in between fails the whole
  transaction (it is atomic), and the chunk is re-read and re-planned. So a duplicate, a
  concurrent writer or a retry after a dropped connection (a batch is a POST the SDK will
  not retry) can never count twice, and writers of one job never rewrite a shared row.
* An event applies only if its sequencer is newer than the row's; deletes leave tombstones,
  so a late create cannot resurrect a deleted blob and a late delete cannot remove a newer one.
* Limits: a job-wide limit is admitted from this writer's escrow (``escrow.py``); a per-task
  limit reads the task's exact usage and guards the task's row, so writers of one task
  serialize while writers of different tasks do not.
* Deltas are folded into the counters by the ``Compactor`` a moment later.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.conventions import is_convention_container, parse_blob_path
from shared.domain.events import BlobAction, BlobEvent, SkipReason
from shared.domain.layout import Layout
from shared.domain.ledger import Delta, Escrow, JobView
from shared.domain.planning import IngestReport, Operation, Plan, chunk_changes, guard, plan_chunk
from shared.domain.quotas import Limits, QuotaDefaults
from shared.domain.rows import ROW_STATE, Change, Entity, Usage
from shared.store.errors import (
    ConflictError,
    IndexStoreError,
    InvalidEntityError,
    StorageAccessError,
    StorageBusyError,
    StorageUnavailableError,
)
from shared.store.layouts import LayoutBook
from shared.store.row_locks import RowLocks
from shared.store.table import TableStore

from .compactor import Compactor
from .crossings import CrossingAnnouncer
from .escrow import EscrowKeeper, Need
from .registry import JobRegistry
from .telemetry import IngestTelemetry

log = logging.getLogger(__name__)

#: Conflicts and dropped connections are retried this often (re-read, re-plan) per chunk.
MAX_ATTEMPTS = 12
#: A job's limits are re-read this often: a limit set on a job with none applies to chunks
#: planned from this long after it was set (limits already in force are exact: escrow).
LIMITS_TTL = 2.0


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
        writer: str | None = None,
        fold_delay: float | None = None,
        flush_delay: float | None = None,
    ) -> None:
        self.store = store
        self.quota_defaults = quota_defaults
        #: This instance's name in the ledger (its escrow row, its fold rounds).
        self.writer = writer or uuid.uuid4().hex
        self.registry = JobRegistry(store)
        #: Each job's partitions (a hot job's outputs are spread over several by task).
        self.layouts = LayoutBook(store)
        self.crossings = CrossingAnnouncer(store)
        self.escrows = EscrowKeeper(store, self.writer, quota_defaults)
        self.compactor = Compactor(store, self.writer) if fold_delay is None else Compactor(store, self.writer, delay=fold_delay)
        self.telemetry = (IngestTelemetry(store, self.registry, self.compactor) if flush_delay is None
                          else IngestTelemetry(store, self.registry, self.compactor, delay=flush_delay))
        self._limits: dict[str, tuple[float, Limits]] = {}
        self._limited_locks: dict[str, asyncio.Lock] = {}
        # Chunks of this process never race each other for a task row they guard.
        self._task_locks = RowLocks()
        #: Called with a job's partition (its container, for a job of one) after each transaction
        #: that committed changes to its outputs (the change feed wakes its waiters).
        self.change_listeners: list[Callable[[str, Delta], None]] = []

    # -- entry point ---------------------------------------------------------------------

    async def ingest(self, events: Sequence[BlobEvent], *, timed: bool = True) -> IngestReport:
        """Index a delivery. Raises ``StorageBusyError`` when it must be handed back
        (``StorageAccessError`` when index storage is misconfigured).

        Chunks that committed before the error stay committed; redelivery finds them
        already applied, so handing the whole delivery back never double-counts. ``timed``:
        measure the events' lag (not for a reindex's synthetic events).
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
                self.telemetry.skipped_in_job(event.container, SkipReason.NOT_A_CONVENTION_PATH.value)
                continue
            change = Change.from_event(event, output, timed=timed)
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
        containers = list(by_container)
        try:
            created = await self.registry.register_all(containers)
            # A job whose registry row this delivery created has no limits of its own yet (a
            # quota is set on a registered job only): the defaults, without a read per job.
            for container in created:
                self._limits[container] = (time.monotonic(), Limits.effective(None, self.quota_defaults))
                # ... and one partition: a layout is chosen when the row is created (by an admin).
                self.layouts.remember(Layout(container))
            layouts = await asyncio.gather(*(self.layouts.get(c) for c in containers))
            limits = await asyncio.gather(*(self.limits(c) for c in containers))
        except IndexStoreError:
            for container, changes in by_container.items():
                self.telemetry.handed_back(container, len(changes))
            raise
        chunks = [
            (container, partition, chunk)
            for container, layout, job_limits in zip(containers, layouts, limits, strict=True)
            for partition, changes in _by_partition(layout, by_container[container]).items()
            for chunk in chunk_changes(changes, guard_tasks=bool(job_limits.max_outputs_per_task))
        ]
        outcomes = await asyncio.gather(*(self._apply_chunk(c, p, chunk) for c, p, chunk in chunks), return_exceptions=True)
        failure: BaseException | None = None
        for (container, _, chunk), outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, IngestReport):
                report.add(outcome)
                continue
            if isinstance(outcome, IndexStoreError):
                self.telemetry.handed_back(container, len(chunk))
            if _severity(outcome) > _severity(failure):
                failure = outcome
        if failure is not None:
            raise failure

    # -- jobs ------------------------------------------------------------------------------

    def forget_limits(self, container: str) -> None:
        """Drop what this process knows of ``container``'s limits (they changed)."""
        self._limits.pop(container, None)
        self.escrows.forget(container)

    async def limits(self, container: str, *, fresh: bool = False) -> Limits:
        cached = self._limits.get(container)
        if cached is not None and not fresh and time.monotonic() - cached[0] < LIMITS_TTL:
            return cached[1]
        limits = Limits.effective(await self.store.get(container, keys.counter_key()), self.quota_defaults)
        self._limits[container] = (time.monotonic(), limits)
        return limits

    # -- one chunk -------------------------------------------------------------------------

    async def _apply_chunk(self, container: str, partition: str, changes: list[Change]) -> IngestReport:
        limits = await self.limits(container)
        if not (limits.limits_job or limits.max_outputs_per_task):
            return await self._commit(container, partition, changes)
        # A limited job's chunks in this process take turns in each partition: they share this
        # writer's escrow there.
        lock = self._limited_locks.setdefault(partition, asyncio.Lock())
        task_rows = {(partition, c.task_row) for c in changes if c.task_row}
        async with self._task_locks.hold(task_rows), lock:
            return await self._commit(container, partition, changes)

    async def _task_view(self, partition: str, ids: Mapping[str, str]) -> tuple[dict[str, Usage], list[Operation]]:
        """Each task's exact usage (its row plus unfolded deltas) and guards on those rows
        (``ids``: task row -> task ID, for a task row created as a guard)."""
        task_keys = set(ids)
        low, high = keys.prefix_range(keys.shard_prefix())
        # The task rows first, the ledger after: a fold landing in between can then only make
        # the rows look older than the ledger (a delta they hold neither in them nor listed),
        # and it rewrote those rows, so their guards fail this chunk, which is planned again.
        # The other way round (or both at once) the rows could hold a delta the ledger still
        # lists as unfolded, with no round to say so: counted twice, an output refused wrongly.
        rows = await self.store.get_rows(partition, task_keys)
        view = JobView.of(await _collect(self.store, partition, low, high))
        usage = {t: view.task_usage(t, rows.get(t)) for t in task_keys}
        return usage, [guard(t, rows.get(t), {"TaskId": ids[t]}) for t in sorted(ids)]

    async def _commit(self, container: str, partition: str, changes: list[Change]) -> IngestReport:
        """Commit one chunk of ``container``'s changes, all of ``partition`` (its tasks' own)."""
        task_ids = {c.task_row: c.output.task_id or "" for c in changes if c.task_row}
        # Creates assume their rows are new (one round trip when they are); deletes and
        # re-admissions expect rows to exist, so those chunks read them first.
        rows: dict[str, Entity] | None = None if any(c.readmit or c.action is BlobAction.DELETED for c in changes) else {}
        fresh = False
        for attempt in range(MAX_ATTEMPTS):
            limits = await self.limits(container, fresh=fresh)
            allowance: Escrow | None = None
            tasks: dict[str, Usage] | None = None
            guards: list[Operation] = []
            if limits.limits_job:
                allowance, limits = await self.escrows.allowance(
                    container, _need(changes), layout=self.layouts.known(container), partition=partition, desired=limits)
            if limits.max_outputs_per_task:
                tasks, guards = await self._task_view(partition, task_ids)
            if rows is None:
                rows = await self.store.get_rows(partition, [c.row_key for c in changes], select=ROW_STATE)
            plan = plan_chunk(
                changes, rows=rows, limits=limits, now=utcnow(), delta_key=keys.delta_key(uuid.uuid4().hex),
                allowance=allowance if limits.limits_job else None, tasks=tasks, guards=guards,
            )
            if not plan.operations:
                return plan.report
            try:
                etags = await self.store.submit(partition, plan.operations)
            except InvalidEntityError as exc:
                return await self._without_invalid(container, partition, changes, plan, exc)
            except ConflictError as exc:
                # Somebody moved first: this writer's escrow was reclaimed, a guarded task row
                # moved (both re-read next time), or an output row did (re-read the rows).
                failed = plan.failed_row(exc.index)
                if failed is not None and failed.startswith(keys.escrow_prefix()):
                    self.escrows.forget(container)
                    fresh = True
                elif failed is None or not failed.startswith(keys.task_usage_prefix()):
                    rows = None
                log.debug("chunk of %s re-planned after a conflict on %s (attempt %d)", partition, failed, attempt + 1)
            except StorageUnavailableError:
                # We cannot know whether the batch landed: re-read everything. The create and
                # ETag conditions make an already-landed batch a no-op now.
                rows, fresh = None, True
                self.escrows.forget(container)
                log.info("chunk of %s re-planned after a dropped connection (attempt %d)", container, attempt + 1)
            else:
                self._committed(container, partition, plan, etags, allowance, limits)
                if plan.crossings:
                    await self.crossings.announce(container, plan.crossings, limits)
                return plan.report
            if attempt >= 1:
                await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise ContentionError(f"chunk of {container} lost {MAX_ATTEMPTS} optimistic races")

    def _committed(self, container: str, partition: str, plan: Plan, etags: Sequence[str | None], allowance: Escrow | None,
                   limits: Limits) -> None:
        if plan.delta is not None:
            self.telemetry.lag(plan.delta.lag)
        if allowance is not None and limits.limits_job:
            for op, etag in zip(plan.operations, etags, strict=True):
                if op.entity["RowKey"] == allowance.key:
                    self.escrows.remember(partition, Escrow.of({**op.entity, "__etag": etag}), limits)
        self.compactor.schedule(partition)
        if plan.delta is not None and plan.delta.changes:
            for listener in self.change_listeners:
                try:
                    listener(partition, plan.delta)
                except Exception:  # a listener never fails a committed chunk
                    log.exception("change listener failed for %s", container)

    async def _without_invalid(self, container: str, partition: str, changes: list[Change], plan: Plan,
                               exc: InvalidEntityError) -> IngestReport:
        """Storage refused a row: skip and count the change it came from, commit the rest.

        Nothing of the batch was written (a transaction is atomic). When the refused row is
        not named, each change is committed alone, so one bad row holds back nothing else.
        """
        failed = plan.failed_row(exc.index)
        bad = [c for c in changes if c.row_key == failed]
        if not bad and len(changes) > 1:
            report = IngestReport()
            for change in changes:
                report.add(await self._commit(container, partition, [change]))
            return report
        bad = bad or changes
        for change in bad:
            log.warning("skipped %s in %s: storage refused its row (%s)", change.output.blob_name, container, exc)
        report = IngestReport()
        report.skipped[SkipReason.UNINDEXABLE.value] += len(bad)
        self.telemetry.skipped_in_job(container, SkipReason.UNINDEXABLE.value, len(bad))
        rest = [c for c in changes if c not in bad]
        if rest:
            report.add(await self._commit(container, partition, rest))
        return report


def _severity(failure: BaseException | None) -> int:
    """Which failure a delivery answers with: a misconfiguration over storage being busy (a
    chunk that landed is a no-op on redelivery either way) over anything else."""
    if failure is None:
        return -1
    return 2 if isinstance(failure, StorageAccessError) else 1 if isinstance(failure, StorageBusyError) else 0


def _by_partition(layout: Layout, changes: list[Change]) -> dict[str, list[Change]]:
    """A job's changes by the partition of their task (all in one for a one-partition job)."""
    if not layout.spread:
        return {layout.container: changes}
    parts: dict[str, list[Change]] = {}
    for change in changes:
        parts.setdefault(layout.for_task(change.output.task_id), []).append(change)
    return parts


def _need(changes: Iterable[Change]) -> Need:
    """The most a chunk can consume of a job-wide limit (every create admitted as new)."""
    creates = [c for c in changes if c.action is not BlobAction.DELETED]
    return Need(len(creates), sum(c.size for c in creates))


async def _collect(store: TableStore, container: str, low: str, high: str) -> list[Entity]:
    return [row async for row in store.query_range(container, low, high)]
