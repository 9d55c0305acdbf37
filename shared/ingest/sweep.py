"""One job compared with its container a bounded slice at a time (the reconciler and long reindexes).

A whole-container comparison holds the job in memory and takes time in proportion to it, so it
cannot serve a job of a million outputs under the Functions timeout. Instead a *pass* over a job
is cut into slices, each bounded whatever the job's size, and a position between slices is a
plain name or key that can be saved and resumed anywhere:

* **the listing's side** (``blob_slice``): up to N blobs after a blob name, in name order (one
  List Blobs call per 5,000; List Blobs ``startFrom``), looked up in the index by their row
  keys. It finds blobs no event announced, and blobs whose size or ETag the index lacks;
* **the index's side** (``row_slice``): up to N output rows after a row key, in key order,
  checked against storage by listing the blob names they span (List Blobs ``startFrom``), or,
  for a few rows, by reading each blob's properties. It finds rows whose blob is gone (or
  changed), and purges delete tombstones past their time (``TOMBSTONE_TTL``) on the way;
* **grown blobs** (``grown_blobs``): Azure sends no event for Append Block or Put Page, so every
  append and page blob the index holds (the rows say which, by ``BlobType``) has its properties
  read every run, a bounded number at once.

Every repair goes through the indexer as a synthetic event, sequencer-ordered like real ones
(``reindex.py``), so it is idempotent and safe while real events arrive. What storage says is
always read *after* the row it is compared with: a row read first and found stale is repaired
with a sequencer just after its own, so a real event that moved the row meanwhile wins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TypeVar

from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction, BlobEvent
from shared.domain.planning import MAX_BATCH_OPERATIONS, Op, Operation
from shared.domain.rows import DELETED, LIVE, REJECTED, Entity, as_int
from shared.store.blobs import (
    BLOBS_PER_PAGE,
    ListedBlob,
    OutputsAccount,
    bare_etag,
    blob_properties,
    list_container,
    list_slice,
)
from shared.store.errors import ConflictError
from shared.store.table import TableStore

from .quota_admin import QuotaAdministration
from .reindex import LOWEST_SEQUENCER, Reindexer

T = TypeVar("T")

#: Event Grid retries a delivery for at most 24 hours; a tombstone must outlive that.
TOMBSTONE_TTL = timedelta(hours=24) + timedelta(hours=1)
#: What a slice reads of an output row.
ROW_FIELDS = ("RowKey", "State", "Seq", "Size", "BlobETag", "BlobName", "Path", "BlobType", "IndexedAt")
#: Rows at least this many are checked by listing the names they span (one call per 5,000
#: blobs); fewer are read blob by blob (one request each).
LIST_MIN_ROWS = 8
#: Blob types Azure sends no event for when they grow.
GROWING_TYPES = ("AppendBlob", "PageBlob")
#: A kind's rows read for a listing slice, at most this many times the slice's own.
_SPAN_SLACK = 4
#: Grown-blob rows handled at once (their properties read, their repairs committed).
GROWN_CHUNK = 1000


@dataclass(slots=True)
class SweepReport:
    """What slices of a job found and did (added, fixed, removed: as a reindex reports them)."""

    added: int = 0
    fixed: int = 0
    removed: int = 0
    unchanged: int = 0
    tombstones_purged: int = 0
    blobs_listed: int = 0
    list_calls: int = 0
    rows_checked: int = 0
    blobs_read: int = 0

    def add(self, other: SweepReport) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


def _after(sequencer: str) -> str:
    """A sequencer just after ``sequencer`` and before any longer-running real one."""
    return sequencer + "0"


def _differs(row: Entity, blob: ListedBlob) -> bool:
    return as_int(row.get("Size")) != blob.size or bool(
        blob.etag and bare_etag(row.get("BlobETag")) not in (None, blob.etag)) or row.get("BlobName") != blob.name


@dataclass(slots=True)
class _Repairs:
    added: list[BlobEvent]
    fixed: list[BlobEvent]
    removed: list[BlobEvent]


class JobSweep:
    """Slices of the comparison of one job with its container (see the module's docstring)."""

    def __init__(self, reindexer: Reindexer, quotas: QuotaAdministration, blobs: OutputsAccount,
                 blob_slots: asyncio.Semaphore) -> None:
        self.reindexer = reindexer
        self.store: TableStore = reindexer.store
        self.quotas = quotas
        self.blobs = blobs
        self._slots = blob_slots
        #: Each job's partitions: a hot job's rows are compared partition by partition.
        self.layouts = reindexer.indexer.layouts

    async def _bounded(self, work: Awaitable[T]) -> T:
        async with self._slots:
            return await work

    async def _properties(self, container: str, names: Iterable[str], report: SweepReport) -> dict[str, ListedBlob | None]:
        """Each blob's properties now (``None``: gone), a bounded number of reads at once."""
        wanted = sorted(set(names))
        report.blobs_read += len(wanted)
        found = await asyncio.gather(*(self._bounded(blob_properties(self.blobs, container, n)) for n in wanted))
        return dict(zip(wanted, found, strict=True))

    # -- the listing's side ------------------------------------------------------------

    async def blob_slice(self, container: str, after: str | None, limit: int) -> tuple[SweepReport, str | None]:
        """Compare up to ``limit`` blobs named after ``after`` with their rows; the name to
        resume after (``None``: the listing's end was reached)."""
        report = SweepReport()
        listed, more = await self._bounded(list_slice(self.blobs, container, after=after, limit=limit))
        report.blobs_listed += len(listed)
        report.list_calls += 1 + max(0, len(listed) - 1) // BLOBS_PER_PAGE
        by_key: dict[str, ListedBlob] = {}
        by_partition: dict[str, list[str]] = {}
        layout = await self.layouts.get(container)
        for blob in listed:
            output = parse_blob_path(blob.name)
            if output is not None:
                key = keys.output_key(output.kind, output.path, output.task_id)
                by_key[key] = blob
                by_partition.setdefault(layout.for_task(output.task_id), []).append(key)
        rows: dict[str, Entity] = {}
        for found in await asyncio.gather(*(self._rows(p, wanted) for p, wanted in by_partition.items())):
            rows.update(found)
        suspects = {key: blob for key, blob in by_key.items()
                    if (row := rows.get(key)) is None or row.get("State") == DELETED or _differs(row, blob)}
        report.unchanged += len(by_key) - len(suspects)
        # Storage's word is read after the rows: the listing may be older than a row.
        now = await self._properties(container, (blob.name for blob in suspects.values()), report)
        repairs = _Repairs([], [], [])
        for key, listed_blob in suspects.items():
            current, row = now[listed_blob.name], rows.get(key)
            if current is None:
                continue  # gone since the listing: its delete event, or the index's side, removes it
            if row is None:
                repairs.added.append(self.reindexer._event(container, BlobAction.CREATED, current.name, LOWEST_SEQUENCER, current))
            elif row.get("State") == DELETED:
                repairs.added.append(self.reindexer._event(container, BlobAction.CREATED, current.name, LOWEST_SEQUENCER, current, row["Seq"]))
            elif _differs(row, current):
                repairs.fixed.append(self.reindexer._event(container, BlobAction.CREATED, current.name, LOWEST_SEQUENCER, current, row["Seq"]))
            else:
                report.unchanged += 1
        report.add(await self._repair(container, repairs))
        return report, (listed[-1].name if more and listed else None)

    async def _rows(self, container: str, wanted: Iterable[str]) -> dict[str, Entity]:
        """The rows of ``wanted`` keys: a listing slice in name order is, for each kind, a run
        of tasks in key order too, so one range query per kind reads them (at most
        ``_SPAN_SLACK`` times as many rows as wanted: past that, point reads instead)."""
        by_kind: dict[str, list[str]] = {}
        for key in sorted(wanted):
            by_kind.setdefault(key[: key.index(keys.SEPARATOR, 2) + 1], []).append(key)
        found: dict[str, Entity] = {}

        async def read(group: list[str]) -> None:
            # No key lies between k and k + " ": keys hold no control characters.
            rows, more = await self.store.read_page(container, group[0], group[-1] + " ", limit=_SPAN_SLACK * len(group),
                                                    select=ROW_FIELDS)
            members = set(group)
            found.update((row["RowKey"], row) for row in rows if row["RowKey"] in members)
            if more:  # the kind's keys are spread wider than the slice: read the rest one by one
                found.update(await self.store.get_rows(container, [k for k in group if k > rows[-1]["RowKey"]],
                                                       select=ROW_FIELDS))

        await asyncio.gather(*(read(group) for group in by_kind.values()))
        return found

    # -- the index's side --------------------------------------------------------------

    async def row_slice(
        self, container: str, after: str | None, limit: int, purge_before: datetime | None, *, check: bool = True
    ) -> tuple[SweepReport, str | None]:
        """Check up to ``limit`` output rows keyed after ``after`` against storage (``check``)
        and purge tombstones indexed before ``purge_before``; the key to resume after (``None``:
        the index's end was reached). Without ``check`` only tombstones are read (the service
        filters ``State``), so a slice reads no live row."""
        report = SweepReport()
        where = None if check else {"State": DELETED}
        layout = await self.layouts.get(container)
        # A hot job's partitions are compared in one key order (the checkpoint is one key): each
        # gives its next ``limit`` rows, and the first ``limit`` of them all are this slice.
        read = await asyncio.gather(*(self._row_page(p, after, limit, where) for p in layout.all()))
        merged = sorted(((row["RowKey"], p, row) for p, (rows_of, _) in zip(layout.all(), read, strict=True)
                         for row in rows_of), key=lambda entry: entry[0])
        more = any(more_of for _, more_of in read) or len(merged) > limit
        if len(merged) > limit:
            merged = merged[:limit]
        # Past the least key a partition with more rows was read to, another may be missing rows.
        bound = min((rows_of[-1]["RowKey"] for rows_of, more_of in read if more_of and rows_of), default=None)
        if bound is not None:
            merged = [entry for entry in merged if entry[0] <= bound]
        rows = [row for _, _, row in merged]
        report.rows_checked += len(rows)
        for partition in layout.all():
            old = [row for _, p, row in merged if p == partition and row.get("State") == DELETED and purge_before is not None
                   and isinstance(row.get("IndexedAt"), datetime) and row["IndexedAt"] < purge_before]
            report.tombstones_purged += await delete_rows(self.store, partition, old)
        if check:
            await self._check_rows(container, [row for row in rows if row.get("State") in (LIVE, REJECTED)], report)
        return report, (rows[-1]["RowKey"] if more and rows else None)

    async def _row_page(self, partition: str, after: str | None, limit: int,
                        where: dict[str, str] | None) -> tuple[list[Entity], bool]:
        """Up to ``limit`` output rows of one partition keyed after ``after``, and whether it holds more."""
        rows: list[Entity] = []
        more = False
        for low, high in keys.output_ranges():
            if after is not None and after >= high:
                continue
            if len(rows) >= limit:
                more = True
                break
            read, more = await self.store.read_page(partition, low, high, limit=limit - len(rows), after=after,
                                                    where=where, select=ROW_FIELDS)
            rows.extend(read)
        return rows, more

    async def _check_rows(self, container: str, rows: Sequence[Entity], report: SweepReport,
                          *, by_listing: bool = True) -> None:
        """Compare rows (read before this) with what storage holds now, and repair them."""
        names = sorted({str(row["BlobName"]) for row in rows})
        if by_listing and len(names) >= LIST_MIN_ROWS:
            truth = await self._bounded(self._listed(container, names, report))
        else:
            truth = await self._properties(container, names, report)
        repairs = _Repairs([], [], [])
        for row in rows:
            blob = truth.get(str(row["BlobName"]))
            if blob is None:
                repairs.removed.append(
                    self.reindexer._event(container, BlobAction.DELETED, row["BlobName"], _after(row["Seq"]), None))
            elif _differs(row, blob):
                repairs.fixed.append(self.reindexer._event(container, BlobAction.CREATED, blob.name, LOWEST_SEQUENCER, blob, row["Seq"]))
        report.add(await self._repair(container, repairs))

    async def _listed(self, container: str, names: Sequence[str], report: SweepReport) -> dict[str, ListedBlob | None]:
        """What storage holds under each of ``names`` (sorted), by listing the name range they
        span from the first (List Blobs ``startFrom``): rows in key order are blobs of several
        folders, and a listing reads 5,000 of them a call where a property read reads one.
        Where the names are far apart (more than a call's worth of other blobs between them),
        the listing jumps to the next name instead of reading the gap."""
        truth: dict[str, ListedBlob | None] = {}
        at = 0
        while at < len(names):
            listed = 0
            async for blob in list_container(self.blobs, container, start_from=names[at]):
                listed += 1
                while at < len(names) and names[at] < blob.name:
                    truth[names[at]] = None  # passed without being listed: gone
                    at += 1
                if at < len(names) and names[at] == blob.name:
                    truth[names[at]] = blob
                    at += 1
                if at >= len(names) or listed >= BLOBS_PER_PAGE:
                    break
            else:
                truth.update(dict.fromkeys(names[at:]))  # the listing ended: the rest are gone
                at = len(names)
            report.blobs_listed += listed
            report.list_calls += 1 + (listed - 1) // BLOBS_PER_PAGE if listed else 1
        return truth

    # -- blobs that grow without events ------------------------------------------------

    async def grown_blobs(self, container: str) -> SweepReport:
        """Read the properties of every append and page blob the index holds live, and repair
        the rows of those that grew (or shrank, or went). Memory: one chunk at a time."""
        report = SweepReport()
        layout = await self.layouts.get(container)
        for partition, (low, high) in ((p, r) for p in layout.all() for r in keys.output_ranges()):
            for blob_type in GROWING_TYPES:
                after: str | None = None
                while True:
                    rows, more = await self.store.read_page(
                        partition, low, high, limit=GROWN_CHUNK, after=after,
                        where={"State": LIVE, "BlobType": blob_type}, select=ROW_FIELDS)
                    report.rows_checked += len(rows)
                    await self._check_rows(container, rows, report, by_listing=False)
                    if not more or not rows:
                        break
                    after = rows[-1]["RowKey"]
        return report

    # -- repairs -----------------------------------------------------------------------

    async def _repair(self, container: str, repairs: _Repairs) -> SweepReport:
        report = SweepReport()
        # One category at a time: each count is what that category really changed (a real
        # event that got there first turns a planned repair into "unchanged").
        for events, name in ((repairs.added, "added"), (repairs.fixed, "fixed"), (repairs.removed, "removed")):
            if not events:
                continue
            result = await self.reindexer.indexer.ingest(events, timed=False)
            setattr(report, name, result.indexed + result.rejected)
            report.unchanged += result.unchanged
        if repairs.removed:
            # Freed room: rejected outputs may fit now, as after a raised limit.
            await self.quotas.readmit_rejected(container)
        return report


async def delete_rows(store: TableStore, partition: str, rows: Sequence[Entity]) -> int:
    """Delete rows as read (ETag-conditional, 100 a batch); rows changed meanwhile are kept."""
    deleted = 0
    for start in range(0, len(rows), MAX_BATCH_OPERATIONS):
        chunk = rows[start : start + MAX_BATCH_OPERATIONS]
        ops = [Operation(Op.DELETE, {"RowKey": row["RowKey"]}, row.get("__etag")) for row in chunk]
        try:
            await store.submit(partition, ops)
            deleted += len(ops)
        except ConflictError:
            for op in ops:  # one changed meanwhile: the others still go, one at a time
                try:
                    await store.submit(partition, [op])
                    deleted += 1
                except ConflictError:
                    pass
    return deleted
