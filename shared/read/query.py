"""The read side: listings and summaries, each answered by indexed key-range queries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote

from shared.domain import keys
from shared.domain.conventions import container_name
from shared.domain.lag import summary as lag_summary
from shared.domain.layout import Layout
from shared.domain.ledger import FOLDS, JobView, unmoved
from shared.domain.quotas import Limits, QuotaDefaults
from shared.domain.rows import LIVE, OUTPUT_FIELDS, REJECTED, Entity, Usage, as_int
from shared.store.errors import StorageBusyError
from shared.store.layouts import LayoutBook
from shared.store.table import TableStore

from . import task_listing
from .listings import Listing as _Listing
from .listings import Page, iso
from .listings import key_range as _key_range
from .merged import merged_page
from .paging import Position, TokenCodec, default_page_size

#: Key ranges of one listing read at once (a task has one range per kind it wrote).
PARALLEL_PARTS = 8
#: Rows asked for at least per request when each row is checked (a filter keys cannot say).
_MIN_CHECKED_READ = 100

#: Reads of a job's ledger a reader makes at most to find one no fold step moved under it. A
#: fold step is one request, a round a few, and an instance folds a job every 2 s at most, so
#: a retry is rare and a second one rarer still; this bound only stops a livelock.
MAX_LEDGER_READS = 16

T = TypeVar("T")

__all__ = ["Page", "QueryService", "iso"]


class QueryService:
    def __init__(self, store: TableStore, quota_defaults: QuotaDefaults, codec: TokenCodec, blob_base_url: str) -> None:
        self.store = store
        self.quota_defaults = quota_defaults
        self.codec = codec
        self.blob_base_url = blob_base_url.rstrip("/")
        #: Each job's partitions (read once per job and process: a layout never changes).
        self.layouts = LayoutBook(store)

    # -- items -----------------------------------------------------------------------------

    def blob_url(self, container: str, blob_name: str) -> str:
        return f"{self.blob_base_url}/{container}/{quote(blob_name, safe='/')}"

    def output_item(self, container: str, job_id: str | None, row: Mapping[str, Any]) -> dict[str, Any]:
        item = {
            "jobId": job_id,
            "taskId": row.get("TaskId") or None,
            "kind": row["Kind"],
            "path": row["Path"],
            "blobName": row["BlobName"],
            "container": container,
            "url": self.blob_url(container, row["BlobName"]),
            "size": as_int(row.get("Size")),
            "contentType": row.get("ContentType"),
            "etag": row.get("BlobETag"),
            "createdAt": iso(row.get("EventTime")),
            "indexedAt": iso(row.get("IndexedAt")),
        }
        if row.get("State") == REJECTED:
            item["reason"] = row.get("Reason")
        return item

    # -- paging ----------------------------------------------------------------------------

    async def _read_part(
        self, container: str, listing: _Listing, part: int, after: str | None, need: int
    ) -> tuple[list[Entity], str | None]:
        """Up to ``need`` rows of one key range and, when it holds more, the key to resume after.

        Without a row check, the rows read are the rows returned. With one (a clipped prefix, a
        filter keys cannot say), each request asks for what is still wanted, at least
        ``_MIN_CHECKED_READ`` rows so that a sparse match does not cost a request a row.
        """
        low, high = listing.parts[part]
        if listing.keep is None:
            rows, more = await self.store.read_page(
                container, low, high, limit=need, after=after, where=listing.where, select=listing.select)
            return rows, (rows[-1]["RowKey"] if more and rows else None)
        kept: list[Entity] = []
        cursor = after
        while True:
            read, more = await self.store.read_page(
                container, low, high, limit=max(need - len(kept), min(need, _MIN_CHECKED_READ)), after=cursor,
                where=listing.where, select=listing.select)
            for index, row in enumerate(read):
                if not listing.keep(row):
                    continue
                kept.append(row)
                if len(kept) == need:
                    rest = any(listing.keep(later) for later in read[index + 1 :])
                    return kept, (row["RowKey"] if rest or more else None)
            if not more or not read:
                return kept, None
            cursor = read[-1]["RowKey"]

    async def page(self, container: str, listing: _Listing, page_size: int, token: str | None) -> tuple[list[Entity], str | None]:
        """One page of a listing: every row it returns read once, and nothing read ahead.

        Whether a next page exists comes from the service's continuation (``TableStore.read_page``),
        not from reading a row past the page: a page of one key range costs one query per 1,000
        rows it returns (the service's page limit).
        """
        position = self.codec.decode(listing.scope, token) if token else Position()
        part, after = position.part, position.after
        if after is not None:
            # A task's kinds (hence its parts) may change between pages: resume by the key.
            part = next((i for i, (low, high) in enumerate(listing.parts) if low <= after < high), part)
        resumed = part
        rows: list[Entity] = []
        following: Position | None = None
        while part < len(listing.parts) and len(rows) < page_size and following is None:
            # A listing of several key ranges (one task's kinds) reads them concurrently: one
            # round trip instead of one per kind. Rows stay in part order, then key order.
            window = range(part, min(len(listing.parts), part + PARALLEL_PARTS))
            need = page_size - len(rows)
            found = await asyncio.gather(*(
                self._read_part(container, listing, p, after if p == resumed else None, need) for p in window
            ))
            for index, (p, (part_rows, resume)) in enumerate(zip(window, found, strict=True)):
                room = page_size - len(rows)
                if len(part_rows) > room:  # a range read alongside an earlier one: what fits
                    rows.extend(part_rows[:room])
                    following = Position(p, rows[-1]["RowKey"])
                    break
                rows.extend(part_rows)
                if resume is not None:
                    following = Position(p, resume)
                    break
                if len(rows) >= page_size:
                    # Full at a range's end: the next range that has rows, if one was read.
                    later = next((q for q, (r, _) in zip(window[index + 1 :], found[index + 1 :], strict=True) if r), None)
                    if later is not None:
                        following = Position(later, None)
                    elif window.stop < len(listing.parts):
                        following = Position(window.stop, None)
                    break
            part = window.stop
        next_token = self.codec.encode(listing.scope, following) if following is not None else None
        return rows, next_token

    # -- jobs ------------------------------------------------------------------------------

    async def job_view(self, container: str) -> JobView:
        """The job's ledger: counters, unfolded deltas, escrows (one range query)."""
        return (await self._read_ledger(container))[0]

    async def _read_ledger(self, container: str) -> tuple[JobView, bool]:
        """The job's ledger, and whether it was read in one request (one query page)."""
        low, high = keys.prefix_range(keys.shard_prefix())
        rows = await _collect(self.store.query_range(container, low, high))
        return JobView.of(rows), len(rows) < self.store.query_page

    async def tied(self, container: str, read: Callable[[JobView], Awaitable[T]]) -> tuple[JobView, T]:
        """The job's ledger and what ``read`` reads beside it (task rows), as of one moment.

        A fold landing between the ledger's read and the task rows' would make them disagree
        (a delta counted twice, or a task count off: the round that folded it unseen). So the
        ledger is read again after ``read`` and the whole tried again until no fold step
        moved in between (``ledger.unmoved``). Even with nothing left to fold when the ledger
        was read: a delta committed just after can be folded while ``read`` reads its rows
        over several responses (a page of the task listing before that round, the next after).
        """
        view, whole = await self._read_ledger(container)
        for _ in range(MAX_LEDGER_READS):
            found = await read(view)
            again, whole_again = await self._read_ledger(container)
            if unmoved(view, again, whole=whole):
                return view, found
            view, whole = again, whole_again
        raise StorageBusyError(f"the ledger of {container} kept moving under {MAX_LEDGER_READS} reads")

    async def ledger(self, container: str) -> tuple[JobView, dict[str, Entity]]:
        """The job's ledger and the task rows its unfolded deltas touch (for exact task counts)."""

        async def task_rows(view: JobView) -> dict[str, Entity]:
            pending = view.pending_tasks()
            return await self.store.get_rows(container, pending) if pending else {}

        return await self.tied(container, task_rows)

    async def ledgers(self, layout: Layout) -> list[tuple[JobView, dict[str, Entity]]]:
        """Each partition's ledger and task rows (``ledger``), the container's first, read at once.

        Each partition is exact as of one moment during the read; a job of several partitions
        is their sum, so it counts every transaction committed before the read began and none
        begun after it ended, and those committing meanwhile each wholly or not at all (a
        transaction is one partition's): see docs/architecture.md.
        """
        if not layout.spread:
            return [await self.ledger(layout.container)]
        return list(await asyncio.gather(*(self.ledger(p) for p in layout.all())))

    async def usage(self, container: str) -> tuple[Usage, Entity | None, datetime | None]:
        """The job's exact usage (counters plus unfolded deltas), its limits' carrier, last index time."""
        layout = await self.layouts.get(container)
        read = await self.ledgers(layout)
        usage = read[0][0].usage(read[0][1])
        for view, task_rows in read[1:]:
            usage = usage.plus(view.usage(task_rows))
        last = max((t for t in (v.last_indexed() for v, _ in read) if t is not None), default=None)
        return usage, read[0][0].carrier, last

    async def limits(self, job_id: str) -> Limits:
        """The job's limits: its overrides, else the settings' defaults."""
        container = container_name(job_id)
        _, carrier, _ = await self.usage(container)
        return Limits.effective(carrier, self.quota_defaults)

    async def job_row(self, container: str) -> Entity | None:
        return await self.store.get(keys.JOBS_PARTITION, container)

    def _summary(self, layout: Layout, job_row: Entity | None, usage: Usage, carrier: Entity | None,
                 last: datetime | None) -> dict[str, Any]:
        container = layout.container
        limits = Limits.effective(carrier, self.quota_defaults)
        return {
            "jobId": (job_row or {}).get("JobId"),
            "container": container,
            "tasks": usage.tasks,
            "kinds": usage.kinds_wire(),
            "usage": {"outputs": usage.outputs, "bytes": usage.bytes},
            "quota": limits.as_wire(),
            "rejections": {"outputs": usage.rejected_outputs, "bytes": usage.rejected_bytes},
            "lastIndexedAt": iso(last),
            "lastReconciledAt": iso((job_row or {}).get("LastReconciledAt")),
        }

    async def job_summary(self, job_id: str) -> dict[str, Any] | None:
        container = container_name(job_id)
        layout = self.layouts.known(container)
        if layout is None:
            job_row, (view, task_rows) = await asyncio.gather(self.job_row(container), self.ledger(container))
            layout = Layout.of(container, job_row)
            if job_row is not None:
                self.layouts.remember(layout)
            read = [(view, task_rows)]
            if layout.spread:
                read += await asyncio.gather(*(self.ledger(p) for p in layout.all()[1:]))
        else:
            job_row, read = await asyncio.gather(self.job_row(container), self.ledgers(layout))
        view, task_rows = read[0]
        carrier = view.carrier
        if job_row is None and carrier is None:
            return None
        usage, lag, skipped, handed_back = view.usage(task_rows), view.lag(), view.skipped(), view.handed_back()
        for other, other_rows in read[1:]:
            usage = usage.plus(other.usage(other_rows))
            lag.merge(other.lag())
            skipped.update(other.skipped())
            handed_back += other.handed_back()
        last = max((t for t in (v.last_indexed() for v, _ in read) if t is not None), default=None)
        summary = self._summary(layout, job_row, usage, carrier, last)
        # Operations: how far behind the index is, and what wrote no output (folded + unfolded).
        summary["lag"] = lag_summary(lag.recent(datetime.now(timezone.utc)))
        summary["skippedByReason"] = dict(sorted(skipped.items()))
        summary["handedBack"] = handed_back
        if not (job_row or {}).get("Registered"):
            summary["jobId"] = job_id  # the caller's spelling: Batch IDs preserve case
        return summary

    async def list_jobs(self, page_size: int, token: str | None) -> Page:
        """A page of jobs: one query of the ``~jobs`` partition, whatever the page size.

        Each job row carries its figures as of the job's last fold (``Compactor.publish``):
        deltas written since, normally folded within ``FOLD_DELAY``, are not in them yet (the
        job summary adds them, and is exact). A job never folded yet (new, or indexed before
        rows carried figures) is read from its ledger, exactly.
        """
        listing = _Listing(scope="jobs", parts=[("0", "{")])
        rows, next_token = await self.page(keys.JOBS_PARTITION, listing, page_size, token)

        async def item(row: Entity) -> dict[str, Any]:
            container = row["RowKey"]
            if FOLDS in row:
                usage, last = Usage.of(row), row.get("LastIndexedAt")
            else:
                usage, _, last = await self.usage(container)
            return {
                "jobId": row.get("JobId"),
                "container": container,
                "tasks": usage.tasks,
                "outputs": usage.outputs,
                "bytes": usage.bytes,
                "rejections": usage.rejected_outputs,
                "lastIndexedAt": iso(last),
            }

        return Page(list(await asyncio.gather(*(item(r) for r in rows))), next_token)

    # -- outputs ---------------------------------------------------------------------------

    async def _outputs(self, job_id: str, listing: _Listing, page_size: int | None, token: str | None,
                       partition: str | None = None, *, across: bool = False) -> Page:
        """A page of outputs: of one partition (``partition``, else the container's), or, with
        ``across``, of every partition of the job merged in key order (``page_size`` ``None``:
        the default for the job's layout)."""
        container = container_name(job_id)
        layout = await self.layouts.get(container) if across else None
        if page_size is None:
            page_size = default_page_size(len(layout.all()) if layout is not None else 1)
        if layout is not None and layout.spread:
            rows, next_token = await merged_page(self.store, self.codec, layout.all(), listing, page_size, token)
        else:
            rows, next_token = await self.page(partition or container, listing, page_size, token)
        return Page([self.output_item(container, job_id, row) for row in rows], next_token)

    async def output(self, job_id: str, task_id: str | None, kind: str, path: str) -> dict[str, Any] | None:
        """One live output by its ID (a point read of its row); ``None`` if absent, deleted or rejected."""
        container = container_name(job_id)
        partition = (await self.layouts.get(container)).for_task(task_id)
        row = await self.store.get(partition, keys.output_key(kind, path, task_id))
        if (row is None or row.get("State") != LIVE) and task_id:
            # Task IDs are case-insensitive, blob names are not: the blob may spell the task
            # otherwise. Its row shares the lower-cased key's start (``keys.task_output_key``).
            row = await self._any_spelling(partition, task_id, kind, path)
        if row is None or row.get("State") != LIVE:
            return None
        return self.output_item(container, job_id, row)

    async def _any_spelling(self, container: str, task_id: str, kind: str, path: str) -> Entity | None:
        (low, high), _ = _key_range(keys.task_outputs_prefix(kind, task_id.lower(), path), kind, path, task_id=task_id)
        async for row in self.store.query_range(container, low, high, where={"State": LIVE}):
            if row.get("Path") == path and str(row.get("TaskId", "")).lower() == task_id.lower():
                return row
        return None

    async def job_outputs(self, job_id: str, kind: str | None, prefix: str, page_size: int, token: str | None) -> Page:
        container = container_name(job_id)
        if kind is None and prefix:
            # A path prefix is a key prefix once the kind is known: one key range per kind the
            # job has (its ledger says which), so a prefix that matches nothing reads nothing.
            view = await self.job_view(container)
            kinds = sorted(k for k, (n, _) in view.job_usage().kinds.items() if n > 0)
            ranges = [_key_range(keys.job_outputs_prefix(k, prefix), k, prefix) for k in kinds]
        else:
            ranges = [_key_range(keys.job_outputs_prefix(kind, prefix), kind, prefix, exact=kind is not None or not prefix)]
        checks = [keep for _, keep in ranges if keep is not None]
        listing = _Listing(
            scope=("job-outputs", container, kind, prefix),
            parts=[part for part, _ in ranges],
            keep=(lambda row: any(check(row) for check in checks)) if checks else None,
            where={"State": LIVE},
            select=OUTPUT_FIELDS,
        )
        return await self._outputs(job_id, listing, page_size, token)

    async def task_outputs(
        self, job_id: str, task_id: str, kind: str | None, prefix: str, page_size: int, token: str | None
    ) -> Page:
        container = container_name(job_id)
        partition = (await self.layouts.get(container)).for_task(task_id)
        kinds = [kind] if kind is not None else await self.task_kinds(partition, task_id)
        ranges = [_key_range(keys.task_outputs_prefix(k, task_id, prefix), k, prefix, task_id=task_id) for k in kinds]
        checks = [keep for _, keep in ranges if keep is not None]
        listing = _Listing(
            scope=("task-outputs", container, task_id.lower(), kind, prefix),
            parts=[part for part, _ in ranges],
            where={"State": LIVE},
            keep=(lambda row: any(check(row) for check in checks)) if checks else None,
            select=OUTPUT_FIELDS,
        )
        return await self._outputs(job_id, listing, page_size, token, partition)

    async def task_kinds(self, container: str, task_id: str) -> list[str]:
        """The kinds a task has live outputs of: its row's and its unfolded deltas'."""
        task_row = keys.task_usage_key(task_id)
        view, row = await self.tied(container, lambda _: self.store.get(container, task_row))
        usage = view.task_usage(task_row, row)
        return sorted(k for k, (n, _) in usage.kinds.items() if n > 0)

    async def all_task_outputs(self, job_id: str, kind: str | None, prefix: str, page_size: int | None,
                               token: str | None) -> Page:
        """Every task's outputs (``page_size`` ``None``: the layout's default, ``default_page_size``)."""
        part, keep = _key_range(keys.task_outputs_prefix(kind), kind, prefix, exact=not prefix)
        listing = _Listing(
            scope=("all-task-outputs", container_name(job_id), kind, prefix),
            parts=[part],
            where={"State": LIVE},
            keep=keep,
            select=OUTPUT_FIELDS,
        )
        return await self._outputs(job_id, listing, page_size, token, across=True)

    async def rejections(self, job_id: str, page_size: int | None, token: str | None) -> Page:
        container = container_name(job_id)
        listing = _Listing(
            scope=("rejections", container),
            parts=[keys.outputs_span()],
            where={"State": REJECTED},
            select=OUTPUT_FIELDS,
        )
        return await self._outputs(job_id, listing, page_size, token, across=True)

    async def tasks(self, job_id: str, page_size: int, token: str | None) -> Page:
        """Tasks with live outputs, each with its exact usage (``task_listing.tasks``)."""
        return await task_listing.tasks(self, job_id, page_size, token)


async def _collect(rows: AsyncIterator[Entity]) -> list[Entity]:
    return [row async for row in rows]


async def _nothing() -> dict[str, Entity]:
    return {}
