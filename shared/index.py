"""The index: turns blob events into rows, exactly once in effect, in sequencer order.

Design (see ``shared.keys`` for the layout):

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
import json
import logging
import random
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from . import keys
from .conventions import OutputPath, OutputScope, is_convention_container, job_id_from_container, parse_blob_path
from .events import BlobAction, BlobEvent, SkipReason
from .quotas import OVERRIDE_PROPERTIES, Limits, QuotaCrossing, RejectReason, admission
from .row_locks import RowLocks
from .settings import QuotaDefaults
from .table_store import (
    MAX_BATCH_OPERATIONS,
    ConflictError,
    Entity,
    Op,
    Operation,
    StorageBusyError,
    StorageUnavailableError,
    TableStore,
)

log = logging.getLogger(__name__)

LIVE, DELETED, REJECTED = "live", "deleted", "rejected"
#: Conflicts and dropped connections are retried this often (re-read, re-plan) per chunk.
MAX_ATTEMPTS = 12
_TASK_CACHE_SIZE = 20_000

#: Called once per job and crossing; raising means "not published", retried on the next crossing.
#: What planning needs of an existing output row (its ETag comes with it).
_ROW_STATE = ("RowKey", "State", "Seq", "Size", "Kind")


def _failed_row(plan: _Plan, index: int | None) -> str | None:
    if index is None or not 0 <= index < len(plan.operations):
        return None
    return plan.operations[index].entity["RowKey"]


CrossingListener = Callable[[QuotaCrossing], Awaitable[None]]
#: An unpublished crossing claimed by an instance that then died is retried after this long.
CROSSING_CLAIM_SECONDS = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ContentionError(StorageBusyError):
    """A chunk kept losing optimistic races; the events are handed back to be redelivered."""


def as_int(value: Any) -> int:
    value = getattr(value, "value", value)
    return int(value) if value is not None else 0


def int64(value: int) -> EntityProperty:
    return EntityProperty(int(value), EdmType.INT64)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class Change:
    """The newest known event of one blob (or a re-admission of a rejected output)."""

    container: str
    row_key: str
    output: OutputPath
    action: BlobAction
    sequencer: str
    event_time: datetime
    size: int = 0
    url: str | None = None
    content_type: str | None = None
    etag: str | None = None
    blob_type: str | None = None
    readmit: bool = False

    @property
    def task_row(self) -> str | None:
        return keys.task_usage_key(self.output.task_id) if self.output.task_id else None

    @classmethod
    def from_event(cls, event: BlobEvent, output: OutputPath) -> Change:
        row_key = (
            keys.task_output_key(output.kind, output.task_id, output.path)
            if output.task_id
            else keys.job_output_key(output.kind, output.path)
        )
        return cls(
            container=event.container,
            row_key=row_key,
            output=output,
            action=event.action,
            sequencer=event.sequencer,
            event_time=event.event_time,
            size=event.size or 0,
            url=event.url,
            content_type=event.content_type,
            etag=event.etag,
            blob_type=event.blob_type,
        )


@dataclass(slots=True)
class IngestReport:
    """What a delivery did: every received event is in exactly one of these counts."""

    received: int = 0
    indexed: int = 0
    unchanged: int = 0
    rejected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, other: IngestReport) -> None:
        self.indexed += other.indexed
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.skipped.update(other.skipped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "skipped": sum(self.skipped.values()),
            "skippedByReason": dict(self.skipped),
        }


@dataclass(slots=True)
class Usage:
    """Counts held by a counter shard or a task row (or their sum)."""

    outputs: int = 0
    bytes: int = 0
    rejected_outputs: int = 0
    rejected_bytes: int = 0
    tasks: int = 0
    kinds: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Usage:
        if not row:
            return cls()
        return cls(
            outputs=as_int(row.get("Outputs")),
            bytes=as_int(row.get("Bytes")),
            rejected_outputs=as_int(row.get("RejOutputs")),
            rejected_bytes=as_int(row.get("RejBytes")),
            tasks=as_int(row.get("Tasks")),
            kinds={k: list(v) for k, v in json.loads(row.get("Kinds") or "{}").items()},
        )

    def add_live(self, kind: str, size: int, sign: int) -> None:
        self.outputs += sign
        self.bytes += sign * size
        counts = self.kinds.setdefault(kind, [0, 0])
        counts[0] += sign
        counts[1] += sign * size
        if counts == [0, 0]:
            del self.kinds[kind]

    def add_rejected(self, size: int, sign: int) -> None:
        self.rejected_outputs += sign
        self.rejected_bytes += sign * size

    def plus(self, other: Usage) -> Usage:
        total = Usage(
            self.outputs + other.outputs,
            self.bytes + other.bytes,
            self.rejected_outputs + other.rejected_outputs,
            self.rejected_bytes + other.rejected_bytes,
            self.tasks + other.tasks,
            {k: list(v) for k, v in self.kinds.items()},
        )
        for kind, (n, b) in other.kinds.items():
            counts = total.kinds.setdefault(kind, [0, 0])
            counts[0] += n
            counts[1] += b
            if counts == [0, 0]:
                del total.kinds[kind]
        return total

    def properties(self) -> dict[str, Any]:
        return {
            "Outputs": self.outputs,
            "Bytes": int64(self.bytes),
            "RejOutputs": self.rejected_outputs,
            "RejBytes": int64(self.rejected_bytes),
            "Tasks": self.tasks,
            "Kinds": json.dumps(self.kinds, separators=(",", ":"), sort_keys=True),
        }


def output_entity(change: Change, state: str, reason: RejectReason | None, now: datetime) -> Entity:
    out = change.output
    entity: Entity = {
        "RowKey": change.row_key,
        "State": state,
        "Seq": change.sequencer,
        "Scope": out.scope.value,
        "TaskId": out.task_id or "",
        "Kind": out.kind,
        "Path": out.path,
        "BlobName": out.blob_name,
        "Size": int64(change.size),
        "EventTime": change.event_time,
        "IndexedAt": now,
    }
    for name, value in (
        ("Url", change.url),
        ("ContentType", change.content_type),
        ("BlobETag", change.etag),
        ("BlobType", change.blob_type),
        ("Reason", reason.value if reason else None),
    ):
        if value is not None:
            entity[name] = value
    return entity


def change_from_row(container: str, row: Mapping[str, Any], *, readmit: bool = False) -> Change:
    """Rebuild the change a stored output row came from (for re-admission)."""
    task_id = row.get("TaskId") or None
    output = OutputPath(
        OutputScope.TASK if task_id else OutputScope.JOB, row["Kind"], row["Path"], task_id=task_id
    )
    return Change(
        container=container,
        row_key=row["RowKey"],
        output=output,
        action=BlobAction.CREATED,
        sequencer=row["Seq"],
        event_time=row.get("EventTime") or utcnow(),
        size=as_int(row.get("Size")),
        url=row.get("Url"),
        content_type=row.get("ContentType"),
        etag=row.get("BlobETag"),
        blob_type=row.get("BlobType"),
        readmit=readmit,
    )


@dataclass(slots=True)
class _Plan:
    operations: list[Operation]
    report: IngestReport
    crossings: dict[RejectReason, str]  # limit crossed -> first blob it rejected
    row_keys: list[str]


def plan_chunk(
    changes: Sequence[Change],
    *,
    rows: Mapping[str, Entity],
    tasks: Mapping[str, Entity],
    shard_key: str,
    shard_row: Entity | None,
    others: Usage,
    limits: Limits,
    now: datetime,
) -> _Plan:
    """Decide what one chunk does, given the rows as last read (pure; no I/O).

    ``others`` is the usage held by the job's other counter shards; it matters only for
    job-wide limits, where the caller guarantees those shards cannot move meanwhile.
    """
    report = IngestReport()
    crossings: dict[RejectReason, str] = {}
    shard = Usage.of(shard_row)
    task_usage = {key: Usage.of(row) for key, row in tasks.items()}
    ops: list[Operation] = []
    touched_tasks: dict[str, str] = {}

    for change in sorted(changes, key=lambda c: (c.event_time, c.sequencer)):
        old = rows.get(change.row_key)
        if old is not None:
            stale = old["Seq"] > change.sequencer or (
                old["Seq"] == change.sequencer and not (change.readmit and old.get("State") == REJECTED)
            )
            if stale:
                report.unchanged += 1
                continue
        elif change.readmit:
            report.unchanged += 1  # the rejected row is gone (deleted or reindexed) meanwhile
            continue
        task_row = change.task_row
        task = task_usage.setdefault(task_row, Usage()) if task_row else None
        old_state = old.get("State") if old else None
        old_size = as_int(old.get("Size")) if old else 0
        if old_state == LIVE:
            shard.add_live(old["Kind"], old_size, -1)
            if task is not None:
                task.add_live(old["Kind"], old_size, -1)
        elif old_state == REJECTED:
            shard.add_rejected(old_size, -1)
            if task is not None:
                task.add_rejected(old_size, -1)

        reason: RejectReason | None = None
        if change.action is BlobAction.DELETED:
            state = DELETED
        else:
            reason = admission(
                limits,
                job_outputs=shard.outputs + others.outputs,
                job_bytes=shard.bytes + others.bytes,
                task_outputs=task.outputs if task is not None else None,
                size=change.size,
            )
            state = REJECTED if reason else LIVE
        if state == LIVE:
            shard.add_live(change.output.kind, change.size, +1)
            if task is not None:
                task.add_live(change.output.kind, change.size, +1)
        elif state == REJECTED:
            shard.add_rejected(change.size, +1)
            if task is not None:
                task.add_rejected(change.size, +1)
            crossings.setdefault(reason, change.output.blob_name)  # type: ignore[arg-type]
            report.rejected += 1
        if state != REJECTED:
            report.indexed += 1
        if task_row and task is not None:
            touched_tasks[task_row] = change.output.task_id or ""

        entity = output_entity(change, state, reason, now)
        if old is None:
            ops.append(Operation(Op.CREATE, entity))
        else:
            ops.append(Operation(Op.REPLACE, entity, old.get("__etag")))

    if not ops:
        return _Plan([], report, crossings, [])

    for task_row, task_id in touched_tasks.items():
        before = Usage.of(tasks.get(task_row))
        after = task_usage[task_row]
        if before.outputs == 0 and after.outputs > 0:
            shard.tasks += 1
        elif before.outputs > 0 and after.outputs == 0:
            shard.tasks -= 1
        entity = {"RowKey": task_row, "TaskId": task_id, **after.properties(), "LastIndexedAt": now}
        existing = tasks.get(task_row)
        if existing is None:
            ops.append(Operation(Op.CREATE, entity))
        else:
            ops.append(Operation(Op.REPLACE, entity, existing.get("__etag")))

    shard_entity = {"RowKey": shard_key, **shard.properties(), "LastIndexedAt": now}
    for prop in OVERRIDE_PROPERTIES.values():
        if shard_row and shard_row.get(prop) is not None:
            shard_entity[prop] = shard_row[prop]
    if shard_row is None:
        ops.append(Operation(Op.CREATE, shard_entity))
    else:
        ops.append(Operation(Op.REPLACE, shard_entity, shard_row.get("__etag")))
    return _Plan(ops, report, crossings, [op.entity["RowKey"] for op in ops])


def chunk_changes(changes: Sequence[Change]) -> list[list[Change]]:
    """Cut one job's changes into chunks that fit a batch with their task rows and a shard."""
    by_task: dict[str | None, list[Change]] = {}
    for change in changes:
        by_task.setdefault(change.task_row, []).append(change)
    chunks: list[list[Change]] = []
    current: list[Change] = []
    current_rows = 1  # the counter shard
    for task_row, group in by_task.items():
        extra = 1 if task_row else 0
        while group:
            room = MAX_BATCH_OPERATIONS - current_rows - extra
            if room <= 0:
                chunks.append(current)
                current, current_rows = [], 1
                continue
            piece, group = group[:room], group[room:]
            current.extend(piece)
            current_rows += len(piece) + extra
    if current:
        chunks.append(current)
    return chunks


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
        self.crossing_listeners: list[CrossingListener] = []
        self._shards: dict[tuple[str, str], Entity] = {}
        self._tasks: OrderedDict[tuple[str, str], Entity] = OrderedDict()
        self._known_jobs: set[str] = set()
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
        changes = [change_from_row(container, row, readmit=True) for row in rows]
        report = IngestReport(received=len(changes))
        await self._apply({container: changes} if changes else {}, report)
        return report

    async def _apply(self, by_container: Mapping[str, list[Change]], report: IngestReport) -> None:
        await asyncio.gather(*(self.register_container(c) for c in by_container))
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

    async def register_container(self, container: str, job_id: str | None = None) -> None:
        """Record that a job container exists (and, when a client tells us, its job ID)."""
        if job_id is None and container in self._known_jobs:
            return
        entity = {
            "PartitionKey": keys.JOBS_PARTITION,
            "RowKey": container,
            "FirstSeenAt": utcnow(),
        }
        derived = job_id or job_id_from_container(container)
        if derived:
            entity["JobId"] = derived
        if job_id:
            entity["Registered"] = True
            existing = await self.store.get(keys.JOBS_PARTITION, container)
            if existing is not None:
                entity["FirstSeenAt"] = existing.get("FirstSeenAt") or entity["FirstSeenAt"]
            await self.store.merge(entity)
        else:
            await self.store.insert_if_absent(entity)
        self._known_jobs.add(container)

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
                rows = await self.store.get_rows(container, [c.row_key for c in changes], select=_ROW_STATE)
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
            except ConflictError as exc:
                # Somebody moved first. Re-read what lost the race: a counter shard or the task
                # rows alone when one of those failed its ETag, everything when an output did.
                failed = _failed_row(plan, exc.index)
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
                    await self._announce(container, plan.crossings, limits)
                return plan.report
            if attempt >= 1:
                await asyncio.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
        raise ContentionError(f"chunk of {container} lost {MAX_ATTEMPTS} optimistic races")

    def _remember(self, container: str, plan: _Plan, etags: Sequence[str | None]) -> None:
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

    async def _announce(self, container: str, crossings: Mapping[RejectReason, str], limits: Limits) -> None:
        """Tell listeners about limits crossed for the first time: once per job and crossing.

        The ``Q|limit`` marker is written *before* publishing, with ``Published`` false, and
        set true after; a crossing whose publication failed (or whose publisher died, after
        ``CROSSING_CLAIM_SECONDS``) is retried by the next rejection of that job, with the
        same CloudEvent ID. The outputs are indexed already: a failure here is logged, never
        handed back (a redelivery would find nothing new to reject and announce nothing).
        """
        for reason, blob_name in crossings.items():
            try:
                await self._announce_one(container, reason, blob_name, limits)
            except StorageBusyError as exc:
                log.warning("quota crossing %s of %s not recorded (retried on the next): %s", reason.value, container, exc)

    async def _announce_one(self, container: str, reason: RejectReason, blob_name: str, limits: Limits) -> None:
        row_key = keys.quota_crossing_key(reason.value)
        now = utcnow()
        marker: Entity = {"PartitionKey": container, "RowKey": row_key, "At": now,
                          "EventId": str(uuid.uuid4()), "Published": not self.crossing_listeners}
        if not await self.store.insert_if_absent(marker):
            row = await self.store.get(container, row_key)
            if row is None or row.get("Published", True) or not self.crossing_listeners:
                return
            claimed_at = row.get("At") or _EPOCH
            if (now - claimed_at).total_seconds() < CROSSING_CLAIM_SECONDS:
                return  # another instance is publishing it right now
            marker = {k: v for k, v in row.items() if k != "__etag"} | {"At": now}
            try:
                await self.store.submit(container, [Operation(Op.REPLACE, marker, row["__etag"])])
            except ConflictError:
                return  # another instance claimed it first
        elif not self.crossing_listeners:
            return
        crossing = QuotaCrossing(container, reason, limits, marker["EventId"], now, blob_name)
        published = True
        for listener in self.crossing_listeners:
            try:
                await listener(crossing)
            except Exception:  # a notification must never fail indexing
                published = False
                log.exception("quota crossing listener failed for %s", container)
        row = await self.store.get(container, row_key)
        if row is None or row.get("EventId") != marker["EventId"]:
            return
        update = {k: v for k, v in row.items() if k != "__etag"}
        # Published, or released at once (At = epoch) so the next crossing attempt retries.
        update.update({"Published": True} if published else {"At": _EPOCH})
        try:
            await self.store.submit(container, [Operation(Op.REPLACE, update, row["__etag"])])
        except ConflictError:
            pass

    # -- quotas ----------------------------------------------------------------------------

    async def usage(self, container: str) -> tuple[Usage, Entity | None, datetime | None]:
        """The job's usage summed over its shards, the shard carrying overrides, last index time."""
        low, high = keys.prefix_range(keys.shard_prefix())
        total = Usage()
        carrier: Entity | None = None
        last: datetime | None = None
        async for row in self.store.query_range(container, low, high):
            total = total.plus(Usage.of(row))
            carrier = carrier or row
            at = row.get("LastIndexedAt")
            if at is not None and (last is None or at > last):
                last = at
        return total, carrier, last

    async def set_limits(self, container: str, limits: Mapping[str, int]) -> None:
        """Store a job's limit overrides on every counter shard, atomically.

        Touching every shard makes any writer that decided on the old limits fail its ETag
        condition and decide again. Rejected outputs are then re-admitted up to the limits.
        """
        await self.register_container(container)
        for attempt in range(MAX_ATTEMPTS):
            low, high = keys.prefix_range(keys.shard_prefix())
            existing = {row["RowKey"]: row async for row in self.store.query_range(container, low, high)}
            ops: list[Operation] = []
            for shard in range(self.shard_count):
                row_key = keys.shard_key(shard)
                row = existing.get(row_key)
                entity = {k: v for k, v in (row or {"RowKey": row_key}).items() if k != "__etag"}
                entity.pop("PartitionKey", None)
                for field_name, prop in OVERRIDE_PROPERTIES.items():
                    if field_name in limits:
                        entity[prop] = int64(limits[field_name])
                ops.append(Operation(Op.REPLACE, entity, row.get("__etag")) if row else Operation(Op.CREATE, entity))
            try:
                await self.store.submit(container, ops)
            except (ConflictError, StorageUnavailableError):
                await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))
                continue
            for shard in range(self.shard_count):
                self._shards.pop((container, keys.shard_key(shard)), None)
            break
        else:
            raise ContentionError(f"could not update the limits of {container}")
        await self.readmit_rejected(container)

    async def rejected_rows(self, container: str) -> list[Entity]:
        low, high = keys.JOB_OUTPUT + keys.SEPARATOR, keys.prefix_range(keys.TASK_OUTPUT + keys.SEPARATOR)[1]
        return [row async for row in self.store.query_range(container, low, high, where={"State": REJECTED})]

    async def readmit_rejected(self, container: str) -> IngestReport:
        rows = await self.rejected_rows(container)
        rows.sort(key=lambda r: (r.get("EventTime") or utcnow(), r["Seq"]))
        report = await self.readmit(container, rows)
        still = await self.rejected_rows(container)
        if not still:
            # Back under every limit: the next crossing is a new one and is announced again.
            for reason in RejectReason:
                row = await self.store.get(container, keys.quota_crossing_key(reason.value))
                if row is not None:
                    try:
                        await self.store.submit(container, [Operation(Op.DELETE, row, row["__etag"])])
                    except ConflictError:
                        pass
        return report
