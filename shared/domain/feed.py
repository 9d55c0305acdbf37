"""The change feed (pure): what a change is, how a fold orders and sequences them, cursors.

A chunk's transaction records its changes in the delta row it creates anyway (``Changes``,
compact JSON): a change is committed exactly when its output row is, and a duplicate or stale
event, which writes no delta, writes no change. A fold round, serialised per job by its lease,
gives the deltas it folds their order: before it deletes them it writes one feed row
``F|{seq}`` per delta that carries changes, ``seq`` allocated from ``S|00``'s ``FeedNext`` in the
same transaction that folds the round into ``S|00`` (so a resumed or taken-over round writes the
same rows). Within a round the deltas are ordered so that every blob's changes keep their
sequencer order (``order_deltas``).

A reader's cursor is the next feed seq to read plus the ids of the deltas it already received
while they were not sequenced yet (``FeedCursor``): a delta committed late is delivered either
pending or sequenced, exactly once.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from . import keys
from .rows import Entity, as_int, joined_text, split_text

#: Properties: the changes of a delta or feed row (``split_text`` parts), a feed row's delta,
#: and on ``S|00`` the next seq to allocate and the oldest seq kept.
CHANGES, DELTA_ID, AT, FEED_NEXT, FEED_OLDEST = "Changes", "Delta", "At", "FeedNext", "FeedOldest"


class ChangeType(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    REJECTED = "rejected"
    ADMITTED = "admitted"


#: Sort rank of a change among a blob's changes of one sequencer: a re-admission keeps the
#: sequencer of the rejection it follows.
_RANK = {ChangeType.ADMITTED.value: 1}


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One change of one output, as stored: everything its wire item needs but the job's
    container, ID and URL, and the indexed time (its delta's)."""

    change: str
    seq: str  # the blob's sequencer after the change
    task_id: str | None
    kind: str
    path: str
    blob_name: str
    size: int = 0
    content_type: str | None = None
    etag: str | None = None
    created_at: str | None = None  # the event time, ISO 8601
    reason: str | None = None

    @property
    def row_key(self) -> str:
        return _row_key(self.kind, self.path, self.task_id)

    def order(self) -> tuple[str, int]:
        return self.seq, _RANK.get(self.change, 0)

    def packed(self) -> list[Any]:
        return [self.change, self.seq, self.task_id or "", self.kind, self.path, self.blob_name, self.size,
                self.content_type, self.etag, self.created_at, self.reason]

    @classmethod
    def unpacked(cls, values: Sequence[Any]) -> FeedChange:
        change, seq, task_id, kind, path, blob_name, size, content_type, etag, created_at, reason = values
        return cls(change, seq, task_id or None, kind, path, blob_name, int(size), content_type, etag, created_at, reason)


@functools.lru_cache(maxsize=1 << 14)
def _row_key(kind: str, path: str, task_id: str | None) -> str:
    """``keys.output_key``, remembered: a change feed read orders every pending delta's changes
    by blob each time (every second while clients wait on a busy job), the same blobs again."""
    return keys.output_key(kind, path, task_id)


def changes_properties(changes: Sequence[FeedChange]) -> Entity:
    """The ``Changes`` properties of a row (none when there are no changes)."""
    if not changes:
        return {}
    return split_text(CHANGES, json.dumps([c.packed() for c in changes], separators=(",", ":"), ensure_ascii=False))


def changes_of(row: Mapping[str, Any]) -> list[FeedChange]:
    text = joined_text(row, CHANGES)
    return [FeedChange.unpacked(values) for values in json.loads(text)] if text else []


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """The changes one transaction committed: a delta not sequenced yet, or a feed row."""

    delta_id: str  # the delta's row key
    at: datetime | None
    changes: tuple[FeedChange, ...]
    seq: int | None = None  # the feed seq, once sequenced

    def feed_entity(self, seq: int) -> Entity:
        return {"RowKey": keys.feed_key(seq), DELTA_ID: self.delta_id, AT: self.at, **changes_properties(self.changes)}

    @classmethod
    def of_feed_row(cls, row: Mapping[str, Any]) -> ChangeSet:
        return cls(str(row[DELTA_ID]), row.get(AT), tuple(changes_of(row)), keys.feed_seq(str(row["RowKey"])))


def order_deltas(sets: Iterable[ChangeSet]) -> list[ChangeSet]:
    """``sets`` ordered so that every blob's changes keep their sequencer order.

    A blob's later change was always committed after its earlier one (it replaced the row the
    earlier one wrote, on its ETag), so these constraints have no cycle; otherwise sets keep
    the order of their indexed time, then their id.
    """
    items = sorted(sets, key=lambda s: (s.at.timestamp() if s.at else 0.0, s.delta_id))
    by_blob: dict[str, list[tuple[tuple[str, int], int]]] = {}
    for index, item in enumerate(items):
        for change in item.changes:
            by_blob.setdefault(change.row_key, []).append((change.order(), index))
    after: dict[int, list[int]] = {}
    blockers = [0] * len(items)
    for versions in by_blob.values():
        if len(versions) < 2:
            continue
        versions.sort()
        for (_, earlier), (_, later) in itertools.pairwise(versions):
            if earlier != later:
                after.setdefault(earlier, []).append(later)
                blockers[later] += 1
    ready = [i for i, n in enumerate(blockers) if n == 0]
    heapq.heapify(ready)
    out: list[ChangeSet] = []
    while ready:
        index = heapq.heappop(ready)
        out.append(items[index])
        for later in after.get(index, ()):
            blockers[later] -= 1
            if blockers[later] == 0:
                heapq.heappush(ready, later)
    if len(out) < len(items):  # a cycle cannot happen (see above); never drop a set over it
        seen = {id(s) for s in out}
        out += [s for s in items if id(s) not in seen]
    return out


@dataclass(slots=True)
class FeedCursor:
    """Where a walk of the feed stands.

    ``seq``: the next feed row to read; ``offset``: changes of that row already returned (a page
    ended inside it); ``delivered``: ids of deltas returned before they were sequenced (their
    feed rows are skipped when reached); ``issued``: when the cursor was answered (seconds since the epoch,
    for retention); ``partial``: a delta whose first ``partial_offset`` changes were returned
    before it was sequenced (a page ended inside it): it continues there, pending or sequenced.
    """

    seq: int
    offset: int = 0
    delivered: list[str] = field(default_factory=list)
    issued: int = 0
    partial: str | None = None
    partial_offset: int = 0


def iso_time(value: Any) -> str | None:
    """A stored time as the API writes it (ISO 8601, UTC, ``Z``)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def counter_feed(counter: Mapping[str, Any] | None) -> tuple[int, int]:
    """``S|00``'s next seq and oldest kept seq."""
    row = counter or {}
    return as_int(row.get(FEED_NEXT)), as_int(row.get(FEED_OLDEST))


def change_item(container: str, job_id: str | None, change: FeedChange, at: datetime | None, url: str) -> dict[str, Any]:
    """A change as the API answers it: the output as listings show it (no ``downloadUrl``); a
    deleted output keeps what identified it (and its last size)."""
    indexed = iso_time(at)
    output: dict[str, Any] = {
        "jobId": job_id,
        "taskId": change.task_id,
        "kind": change.kind,
        "path": change.path,
        "blobName": change.blob_name,
        "container": container,
        "url": url,
        "size": change.size,
        "contentType": change.content_type,
        "etag": change.etag,
        "createdAt": change.created_at,
        "indexedAt": indexed,
    }
    if change.reason is not None:
        output["reason"] = change.reason
    return {"change": change.change, "at": indexed, "output": output}


def output_subject(job_id: str | None, container: str, change: FeedChange) -> str:
    """An output event's subject, for ``subjectBeginsWith`` filters by job, task and kind:
    ``/jobs/{jobId}/tasks/{taskId}/kinds/{kind}/outputs/{path}`` (job outputs without the task).
    A container whose job ID is not known (a hashed name, never registered) says
    ``/containers/{container}`` in place of ``/jobs/{jobId}``."""
    owner = f"/jobs/{job_id}" if job_id else f"/containers/{container}"
    task = f"/tasks/{change.task_id}" if change.task_id else ""
    return f"{owner}{task}/kinds/{change.kind}/outputs/{change.path}"
