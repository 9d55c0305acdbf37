"""Planning one batch transaction (pure; no I/O): which rows a chunk of changes writes.

Given the rows as last read, ``plan_chunk`` decides each change's effect (newer sequencer
only, quota admission) and returns the operations of one atomic batch: the outputs, each
*created* when believed absent or *replaced* on the ETag it was read with, and one delta row
(created) with what they change in the job's and tasks' usage (``shared.domain.ledger``).
A job with limits adds the writer's escrow row (job-wide limits) or guards on the task rows
(per-task limits). The ingest loop submits the plan and, if any condition fails, re-reads
and plans again: planning never needs to be right about races.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from .events import BlobAction
from .feed import ChangeType, FeedChange, iso_time
from .lag import lag_seconds
from .ledger import Delta, Escrow
from .quotas import Limits, RejectReason, admission
from .rows import DELETED, LIVE, REJECTED, Change, Entity, Usage, as_int, output_entity

#: Table storage: a batch transaction holds at most 100 operations, all of one partition.
MAX_BATCH_OPERATIONS = 100
#: Rows a chunk's transaction writes besides its outputs: its delta and the writer's escrow.
_RESERVED_ROWS = 2


class Op(str, Enum):
    CREATE = "create"
    REPLACE = "replace"  # with the ETag the row was read with
    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Operation:
    op: Op
    entity: Entity
    etag: str | None = None


def write(entity: Entity, existing: Mapping[str, Any] | None) -> Operation:
    """Create ``entity`` if its row was absent, else replace it on the ETag it was read with."""
    if existing is None:
        return Operation(Op.CREATE, entity)
    return Operation(Op.REPLACE, entity, existing.get("__etag"))


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
class Plan:
    operations: list[Operation]
    report: IngestReport
    crossings: dict[RejectReason, str]  # limit crossed -> first blob it rejected
    delta: Delta | None = None

    def failed_row(self, index: int | None) -> str | None:
        """The row key of the operation a failed transaction names, if it names one."""
        if index is None or not 0 <= index < len(self.operations):
            return None
        return str(self.operations[index].entity["RowKey"])


def is_stale(change: Change, old: Mapping[str, Any] | None) -> bool:
    """Whether ``change`` is no newer than the stored row (so it changes nothing).

    A re-admission carries the sequencer of the rejected row it re-evaluates; it applies
    only while that row is still the rejected one.
    """
    if old is None:
        return change.readmit  # the rejected row is gone (deleted or reindexed) meanwhile
    if old["Seq"] > change.sequencer:
        return True
    return old["Seq"] == change.sequencer and not (change.readmit and old.get("State") == REJECTED)


@dataclass(slots=True)
class _Counters:
    """What one chunk changes (its delta) and the usage it admits against."""

    delta: Delta
    limits: Limits
    job: Usage  # the job's usage as admission sees it (all but the allowance when limited)
    tasks: dict[str, Usage] | None  # each task's exact usage, when tasks are limited

    def decide(self, change: Change, old: Mapping[str, Any] | None) -> tuple[str, RejectReason | None]:
        """Take the old version out of the counts, then admit (or reject) the new one."""
        task_row = change.task_row
        part = self.delta.task(task_row, change.output.task_id or "") if task_row else None
        task = self._task(task_row)
        if old is not None:
            for counter in (self.delta.job, self.job, part, task):
                if counter is not None:
                    counter.count(old.get("State"), old["Kind"], as_int(old.get("Size")), -1)
        if change.action is BlobAction.DELETED:
            return DELETED, None
        reason = admission(
            self.limits,
            job_outputs=self.job.outputs,
            job_bytes=self.job.bytes,
            task_outputs=task.outputs if task is not None else None,
            size=change.size,
        )
        state = REJECTED if reason else LIVE
        for counter in (self.delta.job, self.job, part, task):
            if counter is not None:
                counter.count(state, change.output.kind, change.size, +1)
        return state, reason

    def _task(self, task_row: str | None) -> Usage | None:
        if task_row is None or self.tasks is None:
            return None
        return self.tasks.setdefault(task_row, Usage())


def change_type(change: Change, old: Mapping[str, Any] | None, state: str) -> ChangeType | None:
    """What the feed says of a change that moved an output row to ``state`` (``None``: nothing a
    listing shows changed, e.g. a tombstone for a blob never indexed)."""
    before = (old or {}).get("State")
    if state == DELETED:
        return ChangeType.DELETED if before in (LIVE, REJECTED) else None
    if state == REJECTED:
        return ChangeType.REJECTED
    if before == LIVE:
        return ChangeType.UPDATED
    return ChangeType.ADMITTED if change.readmit else ChangeType.CREATED


def feed_change(kind: ChangeType, change: Change, old: Mapping[str, Any] | None, reason: RejectReason | None) -> FeedChange:
    """The stored change; a delete keeps what identified the output (and its last size)."""
    out = change.output
    if kind is ChangeType.DELETED:
        return FeedChange(kind.value, change.sequencer, out.task_id, out.kind, out.path, out.blob_name,
                          as_int((old or {}).get("Size")))
    created = iso_time(change.event_time)
    return FeedChange(kind.value, change.sequencer, out.task_id, out.kind, out.path, out.blob_name, change.size,
                      change.content_type, change.etag, created, reason.value if reason else None)


def admission_base(limits: Limits, allowance: Escrow | None) -> Usage:
    """The job usage admission compares with: what is left is exactly ``allowance``."""
    if allowance is None:
        return Usage()
    return Usage(outputs=limits.max_outputs - allowance.outputs, bytes=limits.max_bytes - allowance.bytes)


def plan_chunk(
    changes: Sequence[Change],
    *,
    rows: Mapping[str, Entity],
    limits: Limits,
    now: datetime,
    delta_key: str,
    allowance: Escrow | None = None,
    tasks: Mapping[str, Usage] | None = None,
    guards: Sequence[Operation] = (),
) -> Plan:
    """Decide what one chunk does, given the rows as last read.

    ``allowance`` is the writer's escrow when the job has job-wide limits: the chunk admits
    within it and writes what is left. ``tasks`` is each touched task's exact usage when tasks
    are limited; ``guards`` are rows rewritten unchanged on their ETag so that a concurrent
    decision on the same rows fails the transaction (see ``guard``).
    """
    report = IngestReport()
    crossings: dict[RejectReason, str] = {}
    delta = Delta(delta_key, at=now)
    own_tasks = {k: Usage().plus(v) for k, v in tasks.items()} if tasks is not None else None
    counters = _Counters(delta, limits, admission_base(limits, allowance), own_tasks)
    ops: list[Operation] = []

    for change in sorted(changes, key=lambda c: (c.event_time, c.sequencer)):
        old = rows.get(change.row_key)
        if is_stale(change, old):
            report.unchanged += 1
            continue
        state, reason = counters.decide(change, old)
        if change.timed:
            delta.lag.add(lag_seconds(change.event_time, now))
        if reason is not None:
            crossings.setdefault(reason, change.output.blob_name)
            report.rejected += 1
        else:
            report.indexed += 1
        ops.append(write(output_entity(change, state, reason, now), old))
        kind = change_type(change, old, state)
        if kind is not None:
            delta.changes.append(feed_change(kind, change, old, reason))

    if not ops:
        return Plan([], report, crossings)
    ops += guards
    if allowance is not None:
        # What is left of the allowance, in the limited dimensions (the others hold nothing).
        left = allowance.entity(
            allowance.outputs - delta.job.outputs if limits.max_outputs else 0,
            allowance.bytes - delta.job.bytes if limits.max_bytes else 0,
            now,
        )
        ops.append(write(left, allowance.row))
    ops.append(Operation(Op.CREATE, delta.entity()))
    return Plan(ops, report, crossings, delta)


def guard(row_key: str, row: Mapping[str, Any] | None, absent: Entity | None = None) -> Operation:
    """Rewrite a row unchanged on its ETag (or create ``absent`` in its place): any concurrent
    writer of that row makes this transaction fail, without this one changing anything."""
    if row is None:
        return Operation(Op.CREATE, {"RowKey": row_key, **(absent or {})})
    return Operation(Op.REPLACE, {k: v for k, v in row.items() if k not in ("__etag", "PartitionKey")}, row.get("__etag"))


def chunk_changes(changes: Sequence[Change], *, guard_tasks: bool = False) -> list[list[Change]]:
    """Cut one job's changes into chunks that fit a batch with their delta and escrow rows
    (and, when ``guard_tasks``, the task rows they guard). A task's changes stay together."""
    by_task: dict[str | None, list[Change]] = {}
    for change in changes:
        by_task.setdefault(change.task_row, []).append(change)
    chunks: list[list[Change]] = []
    current: list[Change] = []
    current_rows = _RESERVED_ROWS
    for task_row, group in by_task.items():
        extra = 1 if task_row and guard_tasks else 0
        while group:
            room = MAX_BATCH_OPERATIONS - current_rows - extra
            if room <= 0:
                chunks.append(current)
                current, current_rows = [], _RESERVED_ROWS
                continue
            piece, group = group[:room], group[room:]
            current.extend(piece)
            current_rows += len(piece) + extra
    if current:
        chunks.append(current)
    return chunks
