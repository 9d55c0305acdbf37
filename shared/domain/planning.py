"""Planning one batch transaction (pure; no I/O): which rows a chunk of changes writes.

Given the rows as last read, ``plan_chunk`` decides each change's effect (newer sequencer
only, quota admission) and returns the operations of one atomic batch: the outputs, the
task usage rows they touch and one counter shard, each *created* when believed absent or
*replaced* on the ETag it was read with. The ingest loop submits the plan and, if any
condition fails, re-reads and plans again: planning never needs to be right about races.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from .events import BlobAction
from .quotas import OVERRIDE_PROPERTIES, Limits, RejectReason, admission
from .rows import DELETED, LIVE, REJECTED, Change, Entity, Usage, as_int, output_entity

#: Table storage: a batch transaction holds at most 100 operations, all of one partition.
MAX_BATCH_OPERATIONS = 100


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
    """The counters one chunk moves: its counter shard and the task rows it touches."""

    shard: Usage
    others: Usage
    tasks: dict[str, Usage]
    limits: Limits

    def decide(self, change: Change, old: Mapping[str, Any] | None, task: Usage | None) -> tuple[str, RejectReason | None]:
        """Take the old version out of the counts, then admit (or reject) the new one."""
        if old is not None:
            for counter in (self.shard, task):
                if counter is not None:
                    counter.count(old.get("State"), old["Kind"], as_int(old.get("Size")), -1)
        if change.action is BlobAction.DELETED:
            return DELETED, None
        reason = admission(
            self.limits,
            job_outputs=self.shard.outputs + self.others.outputs,
            job_bytes=self.shard.bytes + self.others.bytes,
            task_outputs=task.outputs if task is not None else None,
            size=change.size,
        )
        state = REJECTED if reason else LIVE
        for counter in (self.shard, task):
            if counter is not None:
                counter.count(state, change.output.kind, change.size, +1)
        return state, reason


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
) -> Plan:
    """Decide what one chunk does, given the rows as last read.

    ``others`` is the usage held by the job's other counter shards; it matters only for
    job-wide limits, where the caller guarantees those shards cannot move meanwhile.
    """
    report = IngestReport()
    crossings: dict[RejectReason, str] = {}
    counters = _Counters(Usage.of(shard_row), others, {k: Usage.of(row) for k, row in tasks.items()}, limits)
    ops: list[Operation] = []
    touched_tasks: dict[str, str] = {}

    for change in sorted(changes, key=lambda c: (c.event_time, c.sequencer)):
        old = rows.get(change.row_key)
        if is_stale(change, old):
            report.unchanged += 1
            continue
        task_row = change.task_row
        task = counters.tasks.setdefault(task_row, Usage()) if task_row else None
        state, reason = counters.decide(change, old, task)
        if reason is not None:
            crossings.setdefault(reason, change.output.blob_name)
            report.rejected += 1
        else:
            report.indexed += 1
        if task_row:
            touched_tasks[task_row] = change.output.task_id or ""
        ops.append(write(output_entity(change, state, reason, now), old))

    if not ops:
        return Plan([], report, crossings)
    ops += _task_writes(touched_tasks, tasks, counters, now)
    ops.append(_shard_write(shard_key, shard_row, counters.shard, now))
    return Plan(ops, report, crossings)


def _task_writes(touched: Mapping[str, str], tasks: Mapping[str, Entity], counters: _Counters, now: datetime) -> list[Operation]:
    """The task usage rows a chunk changed; a task gaining or losing its last output moves the task count."""
    ops: list[Operation] = []
    for task_row, task_id in touched.items():
        before = Usage.of(tasks.get(task_row))
        after = counters.tasks[task_row]
        if before.outputs == 0 and after.outputs > 0:
            counters.shard.tasks += 1
        elif before.outputs > 0 and after.outputs == 0:
            counters.shard.tasks -= 1
        entity = {"RowKey": task_row, "TaskId": task_id, **after.properties(), "LastIndexedAt": now}
        ops.append(write(entity, tasks.get(task_row)))
    return ops


def _shard_write(shard_key: str, shard_row: Entity | None, shard: Usage, now: datetime) -> Operation:
    """The counter shard's new counts; the job's limit overrides it carries are kept."""
    entity = {"RowKey": shard_key, **shard.properties(), "LastIndexedAt": now}
    for prop in OVERRIDE_PROPERTIES.values():
        if shard_row and shard_row.get(prop) is not None:
            entity[prop] = shard_row[prop]
    return write(entity, shard_row)


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
