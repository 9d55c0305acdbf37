"""The usage ledger (pure): deltas written with their outputs, folded into counters later.

Writers never update a shared counter on the hot path. Each batch transaction that changes
outputs also *creates* one delta row (``S|d|{id}``) holding what those outputs change: the
job's usage and, per task, the task's usage. A create never conflicts, so any number of
instances can ingest one job without racing for rows; the transaction is atomic, so a delta
exists exactly when its outputs changed (a duplicate or stale event changes no output and
writes no delta).

A fold round later moves deltas into the counters (``S|00`` for the job, ``U|{task}`` per
task) in several transactions, each idempotent:

1. the round row ``S|f`` names the deltas it folds;
2. each task-row transaction adds the deltas' parts to up to 98 task rows, stamps them
   ``LastFold = round`` and adds their tasks-with-outputs transitions to the round row;
3. one transaction adds the job parts to ``S|00`` and stamps it ``LastFold = round``;
4. the deltas are deleted, and the round row last.

A reader adds what is not folded yet: a delta of the round counts for the job unless
``S|00`` carries the round, and for a task unless that task's row carries it. So every
summary is exact at every step, and a crashed round is resumed by whoever comes next.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import keys
from .feed import ChangeSet, FeedChange, changes_of, changes_properties
from .lag import LagHistogram, LagWindows
from .rows import TEXT_PART_CHARS, Entity, Int64, Usage, as_int

#: A fold round folds at most this many deltas (the round row lists them in one property).
MAX_ROUND_DELTAS = 400
#: What a delta and ``S|00`` say besides usage: the lag of the delta's events (``S|00``: by
#: window, the last hour), and events that wrote no output, per reason skipped and handed back.
LAG, LAG_WINDOWS, SKIPPED, HANDED_BACK = "Lag", "LagWindows", "Skipped", "HandedBack"


def _counts(text: str | None) -> Counter[str]:
    return Counter({k: int(v) for k, v in json.loads(text).items()}) if text else Counter()


def counts_text(counts: Mapping[str, int]) -> str:
    return json.dumps(dict(sorted((k, v) for k, v in counts.items() if v)), separators=(",", ":"))


def _usage_list(usage: Usage) -> list[Any]:
    return [usage.outputs, usage.bytes, usage.rejected_outputs, usage.rejected_bytes, usage.kinds]


def _usage_from(values: list[Any]) -> Usage:
    outputs, size, rejected_outputs, rejected_bytes, kinds = values
    return Usage(outputs, size, rejected_outputs, rejected_bytes, 0, {k: list(v) for k, v in kinds.items()})


@dataclass(slots=True)
class TaskPart:
    task_id: str
    usage: Usage = field(default_factory=Usage)


@dataclass(slots=True)
class Delta:
    """What one transaction changed: the job's usage and each task's, and the lag of its events.

    A delta may also carry counts of events that wrote no output (``skipped`` by reason,
    ``handed_back``): a process flushes those as a delta of their own (``at`` None: it indexed
    nothing), so they too are folded without a shared row being rewritten on the hot path.
    """

    key: str
    job: Usage = field(default_factory=Usage)
    tasks: dict[str, TaskPart] = field(default_factory=dict)
    at: datetime | None = None
    etag: str | None = None
    lag: LagHistogram = field(default_factory=LagHistogram)
    skipped: Counter[str] = field(default_factory=Counter)
    handed_back: int = 0
    #: The changes of its outputs, for the change feed (``shared.domain.feed``).
    changes: list[FeedChange] = field(default_factory=list)

    def change_set(self) -> ChangeSet:
        return ChangeSet(self.key, self.at, tuple(self.changes))

    def task(self, task_row: str, task_id: str) -> Usage:
        return self.tasks.setdefault(task_row, TaskPart(task_id)).usage

    def entity(self) -> Entity:
        parts = json.dumps(
            {row: [part.task_id, *_usage_list(part.usage)] for row, part in self.tasks.items()},
            separators=(",", ":"), sort_keys=True,
        )
        entity: Entity = {"RowKey": self.key, **self.job.properties()}
        if self.at is not None:
            entity["LastIndexedAt"] = self.at
        if self.lag.counts:
            entity[LAG] = self.lag.text()
        if +self.skipped:
            entity[SKIPPED] = counts_text(self.skipped)
        if self.handed_back:
            entity[HANDED_BACK] = Int64(self.handed_back)
        for index, start in enumerate(range(0, len(parts), TEXT_PART_CHARS)):
            entity[f"Parts{index}"] = parts[start : start + TEXT_PART_CHARS]
        entity.update(changes_properties(self.changes))
        return entity

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Delta:
        text = "".join(row[f"Parts{i}"] for i in range(64) if f"Parts{i}" in row)
        tasks = {
            task_row: TaskPart(values[0], _usage_from(values[1:]))
            for task_row, values in (json.loads(text) if text else {}).items()
        }
        return cls(row["RowKey"], Usage.of(row), tasks, row.get("LastIndexedAt"), row.get("__etag"),
                   LagHistogram.parse(row.get(LAG)), _counts(row.get(SKIPPED)), as_int(row.get(HANDED_BACK)),
                   changes_of(row))


@dataclass(slots=True)
class FoldRound:
    round_id: str
    deltas: list[str]
    tasks_delta: int = 0
    holder: str = ""
    expires: datetime | None = None
    row: Entity | None = None
    #: The first feed seq of the round's changes (allocated with the job fold), and whether
    #: its feed rows are all written (then only the deletes remain).
    feed_base: int | None = None
    feed_written: bool = False
    _named: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._named = frozenset(self.deltas)

    def names(self, delta: Delta) -> bool:
        """Whether ``delta`` is one this round folds."""
        return delta.key in self._named

    def entity(self) -> Entity:
        return {
            "RowKey": keys.fold_round_key(), "Round": self.round_id,
            "Deltas": json.dumps(self.deltas, separators=(",", ":")),
            "TasksDelta": self.tasks_delta, "Holder": self.holder, "Expires": self.expires,
            **({"FeedBase": Int64(self.feed_base)} if self.feed_base is not None else {}),
            **({"FeedWritten": True} if self.feed_written else {}),
        }

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> FoldRound:
        return cls(
            row["Round"], json.loads(row.get("Deltas") or "[]"), as_int(row.get("TasksDelta")),
            row.get("Holder") or "", row.get("Expires"), dict(row),
            as_int(row["FeedBase"]) if row.get("FeedBase") is not None else None, bool(row.get("FeedWritten")),
        )


@dataclass(slots=True)
class Escrow:
    """Quota headroom one writer holds: it may admit this much without asking anyone."""

    writer: str
    outputs: int = 0
    bytes: int = 0
    row: Entity | None = None

    @property
    def key(self) -> str:
        return keys.escrow_key(self.writer)

    def entity(self, outputs: int, size: int, at: datetime) -> Entity:
        return {"RowKey": self.key, "LeftOutputs": Int64(outputs), "LeftBytes": Int64(size), "At": at}

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Escrow:
        writer = str(row["RowKey"])[len(keys.escrow_prefix()):]
        return cls(writer, as_int(row.get("LeftOutputs")), as_int(row.get("LeftBytes")), dict(row))


def _is_counter(row_key: str) -> bool:
    tail = row_key[len(keys.shard_prefix()):]
    return len(tail) == 2 and tail.isdigit()


@dataclass(slots=True)
class JobView:
    """A job's ledger as one range query over ``S|`` returned it."""

    counters: list[Entity] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    escrows: dict[str, Escrow] = field(default_factory=dict)
    fold: FoldRound | None = None

    @classmethod
    def of(cls, rows: Iterable[Entity]) -> JobView:
        view = cls()
        for row in rows:
            key = str(row["RowKey"])
            if key.startswith(keys.delta_prefix()):
                view.deltas.append(Delta.of(row))
            elif key.startswith(keys.escrow_prefix()):
                escrow = Escrow.of(row)
                view.escrows[escrow.writer] = escrow
            elif key == keys.fold_round_key():
                view.fold = FoldRound.of(row)
            elif _is_counter(key):
                view.counters.append(row)
        return view

    @property
    def counter(self) -> Entity | None:
        """``S|00``: the row writers guard job-wide decisions on, and the limits' carrier."""
        return next((r for r in self.counters if r["RowKey"] == keys.counter_key()), None)

    @property
    def carrier(self) -> Entity | None:
        return self.counter or (self.counters[0] if self.counters else None)

    def _in_round(self, delta: Delta) -> bool:
        return self.fold is not None and self.fold.names(delta)

    def _job_folded(self, delta: Delta) -> bool:
        counter = self.counter
        return self._in_round(delta) and counter is not None and counter.get("LastFold") == self.fold.round_id  # type: ignore[union-attr]

    def _task_folded(self, delta: Delta, task_row: Entity | None) -> bool:
        return self._in_round(delta) and task_row is not None and task_row.get("LastFold") == self.fold.round_id  # type: ignore[union-attr]

    def job_usage(self) -> Usage:
        """The job's usage and rejections (task count aside: see ``tasks_with_outputs``)."""
        total = Usage()
        for row in self.counters:
            total = total.plus(Usage.of(row))
        for delta in self.deltas:
            if not self._job_folded(delta):
                total = total.plus(delta.job)
        if self.fold is not None and (self.counter or {}).get("LastFold") != self.fold.round_id:
            total.tasks += self.fold.tasks_delta
        return total

    def pending_tasks(self) -> set[str]:
        """Task rows some delta has parts for: their readers must read those task rows too."""
        return {task_row for delta in self.deltas for task_row in delta.tasks}

    def task_pending(self, task_rows: Mapping[str, Entity]) -> dict[str, TaskPart]:
        """Per task, what its deltas add to its task row as read (``task_rows``)."""
        pending: dict[str, TaskPart] = {}
        for delta in self.deltas:
            for task_row, part in delta.tasks.items():
                if self._task_folded(delta, task_rows.get(task_row)):
                    continue
                sum_ = pending.setdefault(task_row, TaskPart(part.task_id))
                sum_.usage = sum_.usage.plus(part.usage)
        return pending

    def rowless_tasks(self, task_rows: Mapping[str, Entity]) -> dict[str, Entity]:
        """Tasks whose outputs are all in unfolded deltas (no task row yet, ``task_rows`` being
        the rows of ``pending_tasks``), each as the row a fold would start it with."""
        return {
            task_row: {"RowKey": task_row, "TaskId": part.task_id}
            for delta in self.deltas for task_row, part in delta.tasks.items() if task_row not in task_rows
        }

    def task_last_indexed(self, task_row: str, row: Entity | None) -> datetime | None:
        """When one of the task's outputs was last indexed: its row's time or a later delta's."""
        times = [(row or {}).get("LastIndexedAt")] + [
            d.at for d in self.deltas if task_row in d.tasks and not self._task_folded(d, row)]
        return max((t for t in times if t is not None), default=None)

    def usage(self, task_rows: Mapping[str, Entity]) -> Usage:
        """The job's exact usage, given the task rows of ``pending_tasks()`` as read."""
        total = self.job_usage()
        for task_row, part in self.task_pending(task_rows).items():
            before = as_int((task_rows.get(task_row) or {}).get("Outputs"))
            total.tasks += (before + part.usage.outputs > 0) - (before > 0)
        return total

    def task_usage(self, task_row: str, row: Entity | None) -> Usage:
        """One task's exact usage: its row plus what its deltas add."""
        part = self.task_pending({task_row: row} if row is not None else {}).get(task_row)
        return Usage.of(row).plus(part.usage) if part else Usage.of(row)

    def _unfolded(self) -> list[Delta]:
        return [d for d in self.deltas if not self._job_folded(d)]

    def lag(self) -> LagWindows:
        """The job's lag by window: folded (``S|00``) plus every delta not folded into it yet."""
        windows = LagWindows.parse((self.counter or {}).get(LAG_WINDOWS))
        for delta in self._unfolded():
            if delta.at is not None:
                windows.add(delta.at, delta.lag)
        return windows

    def skipped(self) -> Counter[str]:
        """Events of the job skipped since it was first indexed, by reason."""
        total = _counts((self.counter or {}).get(SKIPPED))
        for delta in self._unfolded():
            total.update(delta.skipped)
        return +total

    def handed_back(self) -> int:
        """Events of the job handed back to be redelivered (storage busy or misconfigured)."""
        return as_int((self.counter or {}).get(HANDED_BACK)) + sum(d.handed_back for d in self._unfolded())

    def last_indexed(self) -> datetime | None:
        times = [r.get("LastIndexedAt") for r in self.counters] + [d.at for d in self.deltas]
        return max((t for t in times if t is not None), default=None)

    def escrowed(self, *, except_writer: str | None = None) -> tuple[int, int]:
        held = [e for w, e in self.escrows.items() if w != except_writer]
        return sum(e.outputs for e in held), sum(e.bytes for e in held)
