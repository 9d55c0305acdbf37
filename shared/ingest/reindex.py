"""Rebuild one job's index from a listing of its container (``POST /api/jobs/{jobId}/reindex``).

Events can be lost (a subscription created late, a dead-lettered batch, a deleted table), so
the container itself is the truth. A reindex compares the index rows with the convention blobs
and repairs every difference *through the indexer*, as synthetic events: the same optimistic,
sequencer-ordered path real events take, so it is idempotent, keeps the counters exact and is
safe while real events keep arriving.

A listing carries no sequencer, so the synthetic events are ordered below any real news:

* a blob the index lacks is created with sequencer ``"0"`` (below every real sequencer), or
  with ``row.Seq + "0"`` when a tombstone exists, so that any later real event still wins;
* a row whose blob is gone (a phantom) is deleted, and a row with the wrong size or ETag is
  rewritten, with ``row.Seq + "0"``: it sorts just after the row it repairs and before any newer
  real, fixed-length sequencer.

The rows are read *before* the container is listed: a blob that changes in between is seen
newer by the listing than by the rows, so a repair never replaces newer data with older.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction, BlobEvent
from shared.domain.rows import DELETED, Entity, as_int
from shared.store.blobs import ContainerNotFoundError, ListedBlob, OutputsAccount, bare_etag, list_container

from .indexer import Indexer
from .quota_admin import QuotaAdministration

log = logging.getLogger(__name__)

#: Below every real sequencer (they are long, zero-padded hex strings).
LOWEST_SEQUENCER = "0"
_ROW_FIELDS = ("RowKey", "State", "Seq", "Size", "BlobETag", "BlobName")


class JobNotFoundError(LookupError):
    """Neither a container nor index rows exist for the job."""


@dataclass(slots=True)
class ReindexReport:
    added: int = 0
    fixed: int = 0
    removed: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "fixed": self.fixed, "removed": self.removed, "unchanged": self.unchanged}


def _after(sequencer: str) -> str:
    """A sequencer just after ``sequencer`` and before any longer-running real one."""
    return sequencer + "0"


class Reindexer:
    def __init__(self, indexer: Indexer, quotas: QuotaAdministration, blobs: OutputsAccount) -> None:
        self.store = indexer.store
        self.indexer = indexer
        self.quotas = quotas
        self.blobs = blobs

    async def _index_rows(self, container: str) -> dict[str, Entity]:
        rows: dict[str, Entity] = {}
        for low, high in keys.output_ranges():
            async for row in self.store.query_range(container, low, high, select=_ROW_FIELDS):
                rows[row["RowKey"]] = row
        return rows

    async def _convention_blobs(self, container: str) -> dict[str, ListedBlob] | None:
        """The container's convention blobs by row key; ``None`` when the container is absent."""
        listed: dict[str, ListedBlob] = {}
        try:
            async for blob in list_container(self.blobs, container):
                output = parse_blob_path(blob.name)
                if output is not None:
                    listed[keys.output_key(output.kind, output.path, output.task_id)] = blob
        except ContainerNotFoundError:
            return None
        return listed

    def _event(self, container: str, action: BlobAction, name: str, sequencer: str, blob: ListedBlob | None) -> BlobEvent:
        now = datetime.now(timezone.utc)
        return BlobEvent(
            action=action,
            container=container,
            blob_name=name,
            sequencer=sequencer,
            event_id=f"reindex-{uuid.uuid4()}",
            event_time=(blob.last_modified if blob and blob.last_modified else now),
            url=None,
            size=blob.size if blob else None,
            content_type=blob.content_type if blob else None,
            etag=blob.etag if blob else None,
            blob_type=blob.blob_type if blob else None,
            api="Reindex",
        )

    async def reindex(self, container: str) -> ReindexReport:
        """Make the job's index equal the container's convention blobs; report what changed."""
        rows = await self._index_rows(container)
        listed = await self._convention_blobs(container)
        if listed is None and not rows:
            raise JobNotFoundError(container)
        listed = listed or {}
        added, fixed, removed = [], [], []
        unchanged = 0
        for row_key, blob in listed.items():
            row = rows.get(row_key)
            if row is None:
                added.append(self._event(container, BlobAction.CREATED, blob.name, LOWEST_SEQUENCER, blob))
            elif row.get("State") == DELETED:
                added.append(self._event(container, BlobAction.CREATED, blob.name, _after(row["Seq"]), blob))
            elif as_int(row.get("Size")) != blob.size or (
                blob.etag and bare_etag(row.get("BlobETag")) not in (None, blob.etag)
            ) or row.get("BlobName") != blob.name:
                fixed.append(self._event(container, BlobAction.CREATED, blob.name, _after(row["Seq"]), blob))
            else:
                unchanged += 1
        for row_key, row in rows.items():
            if row_key not in listed and row.get("State") != DELETED:
                removed.append(self._event(container, BlobAction.DELETED, row["BlobName"], _after(row["Seq"]), None))

        report = ReindexReport(unchanged=unchanged)
        # One category at a time: each report then counts what that category really changed
        # (a real event that got there first turns a planned repair into "unchanged").
        for events, field_name in ((added, "added"), (fixed, "fixed"), (removed, "removed")):
            if not events:
                continue
            result = await self.indexer.ingest(events, timed=False)
            setattr(report, field_name, result.indexed + result.rejected)
            report.unchanged += result.unchanged
        if removed:
            # Freed room: rejected outputs may fit now, as after a raised limit.
            await self.quotas.readmit_rejected(container)
        log.info("reindexed %s: %s", container, report.as_dict())
        return report
