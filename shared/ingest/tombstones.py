"""Delete tombstones found by when they were written: the change feed, not a filter of every output.

A delete leaves a tombstone row (``State`` deleted) so that a create Event Grid delivers late,
with an older sequencer, cannot bring the output back; past Event Grid's 24-hour retry window
(``TOMBSTONE_TTL``) no such event can arrive and the row can go. Finding those rows by reading
a job's output rows costs reads in proportion to the job, every pass. But every delete of an
indexed output is already recorded where it was written, in write order: the change feed's
``F|{seq}`` rows (kept ``CHANGE_FEED_RETENTION_HOURS``), each a folded delta's changes with its
time (``At``). So each run reads a job's feed from its saved *position* (the next seq not yet
looked at) up to the first row written after the cutoff, collects its ``deleted`` changes, reads
just those rows, and deletes the ones still tombstones older than the cutoff, each on the ETag
it was read with (a row a newer event moved is never deleted). It costs no extra write at
ingest; a steady job (no delete older than the cutoff left) costs one query of one row.

What makes that complete and safe:

* **Feed order is write order of seqs, not of times**: a round's rows are written in seq order
  before its deltas are deleted; a scan stops at a missing seq (a fold still writing) and at the
  first row written after the cutoff, and resumes there. A delta not folded yet is not in the
  feed: its seq, once folded, is past the position.
* **A tombstone moved by a newer delete** (a second delete of an output already deleted records
  no change) is still a tombstone but younger: the position stops at its feed row until it is
  old enough, so it is not lost.
* **Repairs** (the reconciler's and a reindex's removals, sequencer ``row.Seq + "0"``) go
  through the indexer like events: their deletes are in the feed like any other.
* **The feed is never purged past the position** (``Compactor.purge_feed``'s ``keep_from``):
  whatever ``CHANGE_FEED_RETENTION_HOURS`` says, even below 25 h, a feed row stays until its
  tombstones are dealt with.
* **A removed job** takes its feed, its tombstones and its position (``~reconcile``) with it.

Left to the sweep: a delete that arrives before the create it follows writes a tombstone for an
output the index never listed, and records no change; the index's side of an active job's sweep
(``sweep.row_slice``) still purges the old tombstones it passes, at no extra read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.domain import keys
from shared.domain.feed import AT, FEED_OLDEST, ChangeType, changes_of
from shared.domain.rows import DELETED, as_int
from shared.store.table import TableStore

from .sweep import delete_rows

#: Feed rows read at most per request; the first read asks for one (a steady job's whole cost).
FEED_PAGE = 100
#: What is read of a tombstone candidate.
TOMBSTONE_FIELDS = ("RowKey", "State", "IndexedAt")


@dataclass(slots=True)
class TombstoneReport:
    """What one purge of one job read and deleted, and the feed position to resume at."""

    position: int
    purged: int = 0
    feed_rows_read: int = 0
    rows_read: int = 0
    #: A tombstone still too young held the position back (see the module's docstring).
    held: bool = False


class TombstonePurge:
    """Purges a job's delete tombstones older than a cutoff, found through its change feed."""

    def __init__(self, store: TableStore, limit: int) -> None:
        self.store = store
        #: Deleted changes looked at per run and job, at most (about; a page may pass it).
        self.limit = limit

    async def purge(self, container: str, position: int, cutoff: datetime) -> TombstoneReport:
        """Purge the tombstones the feed recorded from ``position`` on, up to its first row
        written at or after ``cutoff``; the new position is in the report."""
        report = TombstoneReport(position)
        # Row key -> the seq of the feed row that recorded its (last) delete.
        wanted: dict[str, int] = {}
        expected = position
        _, high = keys.prefix_range(keys.feed_prefix())
        after: str | None = None
        limit = 1
        while len(wanted) < self.limit:
            rows, more = await self.store.read_page(container, keys.feed_key(expected) if after is None else None, high,
                                                    limit=limit, after=after)
            report.feed_rows_read += len(rows)
            if rows and after is None and keys.feed_seq(str(rows[0]["RowKey"])) != expected:
                # The feed starts later: purged up to its oldest kept seq (by retention, or
                # before positions were kept), or a fold is writing the rows at the position.
                expected = max(expected, await self._oldest(container))
            stop = False
            for row in rows:
                seq = keys.feed_seq(str(row["RowKey"]))
                at = row.get(AT)
                if seq != expected or (isinstance(at, datetime) and at >= cutoff):
                    stop = True  # a fold still writing, or written after the cutoff: next run
                    break
                for change in changes_of(row):
                    if change.change == ChangeType.DELETED.value:
                        wanted[change.row_key] = seq
                expected = seq + 1
            if stop or not more or not rows:
                break
            after, limit = str(rows[-1]["RowKey"]), FEED_PAGE
        report.position = expected
        if not wanted:
            return report
        found = await self.store.get_rows(container, list(wanted), select=TOMBSTONE_FIELDS)
        report.rows_read += len(found)
        old: list[str] = []
        young: list[str] = []
        for key, row in found.items():
            if row.get("State") != DELETED:
                continue  # written again since: no tombstone any more
            indexed = row.get("IndexedAt")
            (old if isinstance(indexed, datetime) and indexed < cutoff else young).append(key)
        report.purged = await delete_rows(self.store, container, [found[key] for key in old])
        if young:
            # Deleted again since, without a change to record: wait at its row until it is old.
            report.position = min(report.position, *(wanted[key] for key in young))
            report.held = True
        return report

    async def _oldest(self, container: str) -> int:
        counter = await self.store.get(container, keys.counter_key())
        return as_int((counter or {}).get(FEED_OLDEST))
