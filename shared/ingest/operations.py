"""Reindexes of any size: a reindex is a long-running operation, persisted in Table storage.

``POST /api/jobs/{jobId}/reindex`` starts one and waits for it up to ``REINDEX_REQUEST_SECONDS``
(an HTTP-triggered function may take at most 230 s; a million-output job takes longer). Past
that, the request answers ``202 Accepted`` with ``Operation-Location: /api/operations/{id}``
(the Azure REST API guidelines' long-running operation) and the operation goes on in the
background of the instance that took the request.

The operation is a sweep pass over the whole job (``sweep.py``): every blob of the listing
compared with its row (phase ``blobs``), then every row of the index checked against storage
(phase ``rows``), a bounded slice at a time. After each slice its position and counts are
saved in its row of the ``~operations`` partition, with the row's ETag: so any instance can
answer ``GET /api/operations/{id}``, and when the instance running it stops (scaled in,
recycled), the reconciler's timer takes over an operation not advanced for ``STALE_AFTER`` and
finishes it where it stood. Two instances never run one operation at once: the one whose save
loses the ETag race stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from shared.domain import keys
from shared.domain.ledger import JobView
from shared.domain.planning import Op, Operation
from shared.domain.rows import Entity
from shared.store.blobs import ContainerNotFoundError, list_slice
from shared.store.errors import ConflictError, IndexStoreError
from shared.store.table import TableStore

from .reindex import JobNotFoundError
from .sweep import JobSweep, SweepReport

log = logging.getLogger(__name__)

#: An operation not advanced for this long has lost its instance: the reconciler takes it over.
STALE_AFTER = timedelta(minutes=5)
#: Finished operations stay readable this long, then the reconciler deletes them.
KEEP_FINISHED = timedelta(days=7)


class OperationStatus(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: The phases of a reindex pass, in order.
BLOBS, ROWS, DONE = "blobs", "rows", "done"


def is_operation_id(text: str) -> bool:
    """Operation IDs are 32 lower-case hex digits (a UUID)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


@dataclass(slots=True)
class ReindexOperation:
    """One reindex in progress or finished, as its row holds it."""

    id: str
    job_id: str
    container: str
    status: OperationStatus = OperationStatus.RUNNING
    phase: str = BLOBS
    after: str | None = None
    found: SweepReport = field(default_factory=SweepReport)
    #: Outputs the index held when it started: what progress is measured against.
    expected: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    error: str | None = None
    owner: str = ""
    etag: str | None = None

    def entity(self) -> Entity:
        return {
            "RowKey": self.id, "JobId": self.job_id, "Container": self.container, "Status": self.status.value,
            "Phase": self.phase, "After": self.after or "", "Expected": self.expected, "CreatedAt": self.created_at,
            "UpdatedAt": self.updated_at, "Error": self.error or "", "Owner": self.owner,
            **{f"N{name}": value for name, value in self.found.as_dict().items()},
        }

    @classmethod
    def of(cls, row: Entity) -> ReindexOperation:
        found = SweepReport(**{name: int(row.get(f"N{name}") or 0) for name in SweepReport().as_dict()})
        return cls(
            id=row["RowKey"], job_id=row.get("JobId", ""), container=row.get("Container", ""),
            status=OperationStatus(row.get("Status", "running")), phase=row.get("Phase", BLOBS),
            after=row.get("After") or None, found=found, expected=int(row.get("Expected") or 0),
            created_at=row.get("CreatedAt") or datetime.now(timezone.utc),
            updated_at=row.get("UpdatedAt") or datetime.now(timezone.utc), error=row.get("Error") or None,
            owner=row.get("Owner", ""), etag=row.get("__etag"),
        )

    def result(self) -> dict[str, Any]:
        """What the reindex changed, as ``POST /reindex`` answers it when it finishes in time."""
        return {"jobId": self.job_id, "container": self.container, "added": self.found.added,
                "fixed": self.found.fixed, "removed": self.found.removed, "unchanged": self.found.unchanged}

    def as_wire(self) -> dict[str, Any]:
        """The status monitor ``GET /api/operations/{id}`` answers."""
        done = self.found.blobs_listed + self.found.rows_checked
        # A pass reads about every output twice: once listed, once as a row.
        percent = 100 if self.status is OperationStatus.SUCCEEDED else min(99, done * 100 // max(1, 2 * self.expected))
        body: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "progress": {"percentComplete": percent, "phase": self.phase, "blobsListed": self.found.blobs_listed,
                         "rowsChecked": self.found.rows_checked, "outputsIndexedAtStart": self.expected},
            "createdDateTime": _iso(self.created_at),
            "lastActionDateTime": _iso(self.updated_at),
        }
        if self.status is OperationStatus.SUCCEEDED:
            body["result"] = self.result()
        if self.status is OperationStatus.FAILED:
            body["error"] = {"code": "ReindexFailed", "message": self.error or "the reindex failed"}
        return body


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class ReindexOperations:
    """Starts, advances, answers and resumes long-running reindexes."""

    def __init__(self, store: TableStore, sweep: Callable[[], JobSweep], slice_rows: int, slice_blobs: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._sweep = sweep
        self.slice_rows = slice_rows
        self.slice_blobs = slice_blobs
        self.clock = clock
        #: This instance, as an operation's ``Owner``.
        self.instance = uuid.uuid4().hex
        self._background: set[asyncio.Task[ReindexOperation]] = set()

    async def start(self, job_id: str, container: str) -> ReindexOperation:
        """A new operation for the job (``JobNotFoundError`` when it has no container and no rows)."""
        partitions = (await self._sweep().layouts.get(container)).all()
        expected = 0
        for partition in partitions:  # for progress only: each partition's usage as read
            usage = JobView.of([row async for row in self.store.query_range(partition, *keys.prefix_range(keys.shard_prefix()))]).job_usage()
            expected += usage.outputs + usage.rejected_outputs
        if not await self._has_container(container) and not any([await self._has_rows(p) for p in partitions]):
            raise JobNotFoundError(container)
        operation = ReindexOperation(uuid.uuid4().hex, job_id, container, expected=expected,
                                     owner=self.instance)
        operation.etag = (await self.store.submit(keys.OPERATIONS_PARTITION, [Operation(Op.CREATE, operation.entity())]))[0]
        return operation

    async def _has_container(self, container: str) -> bool:
        try:
            await list_slice(self._sweep().blobs, container, after=None, limit=1)
        except ContainerNotFoundError:
            return False
        return True

    async def _has_rows(self, container: str) -> bool:
        for low, high in keys.output_ranges():
            rows, _ = await self.store.read_page(container, low, high, limit=1, select=("RowKey",))
            if rows:
                return True
        return False

    async def get(self, operation_id: str) -> ReindexOperation | None:
        row = await self.store.get(keys.OPERATIONS_PARTITION, operation_id)
        return ReindexOperation.of(row) if row is not None else None

    async def run(self, operation: ReindexOperation, deadline: float | None = None) -> ReindexOperation:
        """Advance ``operation`` slice by slice until it finishes, ``deadline`` (``clock``) passes
        or another instance takes it over; its state is saved after every slice."""
        sweep = self._sweep()
        try:
            while operation.status is OperationStatus.RUNNING and (deadline is None or self.clock() < deadline):
                found, after, phase = await self._slice(sweep, operation)
                operation.found.add(found)
                operation.after, operation.phase = after, phase
                if phase == DONE:
                    operation.status = OperationStatus.SUCCEEDED
                    if operation.found.removed:
                        await sweep.quotas.readmit_rejected(operation.container)
                if not await self._save(operation):
                    break
        except IndexStoreError:
            raise  # storage failing: the operation stays running, and is resumed once stale
        except Exception as exc:
            log.exception("reindex operation %s of %s failed", operation.id, operation.container)
            operation.status, operation.error = OperationStatus.FAILED, f"{type(exc).__name__}: {exc}"[:1000]
            await self._save(operation)
            raise
        if operation.status is OperationStatus.SUCCEEDED:
            log.info("reindexed %s (operation %s): %s", operation.container, operation.id, operation.found.as_dict())
        return operation

    async def _slice(self, sweep: JobSweep, operation: ReindexOperation) -> tuple[SweepReport, str | None, str]:
        if operation.phase == BLOBS:
            try:
                found, after = await sweep.blob_slice(operation.container, operation.after, self.slice_blobs)
            except ContainerNotFoundError:
                return SweepReport(), None, ROWS  # no container: every row's blob is gone
            return found, after, BLOBS if after is not None else ROWS
        found, after = await sweep.row_slice(operation.container, operation.after, self.slice_rows, None)
        return found, after, ROWS if after is not None else DONE

    async def _save(self, operation: ReindexOperation) -> bool:
        """Save on the ETag last read or written; False when another instance took it over."""
        operation.updated_at = datetime.now(timezone.utc)
        try:
            [operation.etag] = await self.store.submit(
                keys.OPERATIONS_PARTITION, [Operation(Op.REPLACE, operation.entity(), operation.etag)])
        except ConflictError:
            log.info("reindex operation %s was taken over by another instance", operation.id)
            return False
        return True

    async def run_within(self, operation: ReindexOperation, seconds: float) -> ReindexOperation:
        """Run ``operation`` for up to ``seconds``; past that it goes on in the background and a
        snapshot of where it stands is returned (``status`` running)."""
        task = asyncio.create_task(self.run(operation))
        self._background.add(task)
        task.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=seconds)
        except TimeoutError:
            return replace(operation, found=replace(operation.found))

    def _finished(self, task: asyncio.Task[ReindexOperation]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background reindex stopped: %s", task.exception())

    async def resume_stale(self, deadline: float, now: datetime | None = None) -> int:
        """Take over the operations whose instance stopped advancing them, and run them until
        ``deadline``; delete finished ones past ``KEEP_FINISHED``. The number taken over."""
        now = now or datetime.now(timezone.utc)
        resumed = 0
        async for row in self.store.query_partition(keys.OPERATIONS_PARTITION):
            operation = ReindexOperation.of(row)
            if operation.status is not OperationStatus.RUNNING:
                if operation.updated_at < now - KEEP_FINISHED:
                    with contextlib.suppress(ConflictError):
                        await self.store.submit(keys.OPERATIONS_PARTITION,
                                                [Operation(Op.DELETE, {"RowKey": operation.id}, operation.etag)])
                continue
            if operation.updated_at >= now - STALE_AFTER or self.clock() >= deadline:
                continue
            operation.owner = self.instance
            if await self._save(operation):  # taken over on its ETag: one instance runs it
                resumed += 1
                log.info("resuming reindex operation %s of %s at %s", operation.id, operation.container, operation.phase)
                await self.run(operation, deadline)
        return resumed

    async def drain(self) -> None:
        """Let background operations save where they stand (on shutdown)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
