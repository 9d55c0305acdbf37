"""Rebuild one job's index from a listing of its container (``POST /api/jobs/{jobId}/reindex``).

Events can be lost (a subscription created late, a dead-lettered batch, a deleted table), so
the container itself is the truth. A reindex compares the index rows with the convention blobs
and repairs every difference *through the indexer*, as synthetic events: the same optimistic,
sequencer-ordered path real events take, so it is idempotent, keeps the counters exact and is
safe while real events keep arriving.

A listing carries no sequencer, and storage is the truth: a row storage contradicts does not
keep its sequencer (it may be forged: a ``BlobDeleted`` of sequencer ``f`` x 64 from an events
key would otherwise hide the blob, and every genuine event after it, for good):

* a blob the index lacks, or holds as deleted, or holds with another size or ETag, is written
  as storage has it with sequencer ``"0"``, below every real sequencer, so the blob's next
  genuine event applies whatever the row held before. The repair *supersedes* the row it read
  (``BlobEvent.supersedes``): it applies while the row still carries that sequencer, whatever
  the order, and is a no-op if a real event moved the row meanwhile;
* a row whose blob is gone (a phantom) is deleted with ``row.Seq + "0"``: it sorts just after
  the row it repairs (a redelivery of the event that created it changes nothing) and before
  the blob's next real, fixed-length sequencer.

The price of ``"0"``: an event older than the repaired state that arrives after the repair (a
late redelivery) applies, until the next reconcile repairs the row again. See
docs/reliability.md ("Forged events").

The rows are read *before* the container is listed: a blob that changes in between is seen
newer by the listing than by the rows, so a repair never replaces newer data with older.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class Scope:
    """Blob names a repair covers: ``path`` itself, or everything under it when ``directory``."""

    path: str
    directory: bool

    @property
    def prefix(self) -> str:
        return self.path + "/" if self.directory else self.path

    def holds(self, name: str) -> bool:
        return name.startswith(self.path + "/") if self.directory else name == self.path


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

    async def _index_rows(self, container: str, scopes: Sequence[Scope] | None = None) -> dict[str, Entity]:
        rows: dict[str, Entity] = {}
        layout = await self.indexer.layouts.get(container)
        for partition, (low, high) in ((p, r) for p in layout.all() for r in keys.output_ranges()):
            async for row in self.store.query_range(partition, low, high, select=_ROW_FIELDS):
                if scopes is None or any(scope.holds(str(row.get("BlobName", ""))) for scope in scopes):
                    rows[row["RowKey"]] = row
        return rows

    async def _convention_blobs(self, container: str, scopes: Sequence[Scope] | None = None) -> dict[str, ListedBlob] | None:
        """The container's convention blobs (within ``scopes``) by row key; ``None`` when the
        container is absent."""
        listed: dict[str, ListedBlob] = {}
        try:
            for prefix in [None] if scopes is None else [scope.prefix for scope in scopes]:
                async for blob in list_container(self.blobs, container, prefix):
                    if scopes is not None and not any(scope.holds(blob.name) for scope in scopes):
                        continue
                    output = parse_blob_path(blob.name)
                    if output is not None:
                        listed[keys.output_key(output.kind, output.path, output.task_id)] = blob
        except ContainerNotFoundError:
            return None
        return listed

    def _event(self, container: str, action: BlobAction, name: str, sequencer: str, blob: ListedBlob | None,
               supersedes: str | None = None) -> BlobEvent:
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
            supersedes=supersedes,
        )

    async def reindex(self, container: str) -> ReindexReport:
        """Make the job's index equal the container's convention blobs; report what changed."""
        return await self.sync(container)

    async def sync(self, container: str, scopes: Sequence[Scope] | None = None) -> ReindexReport:
        """Make the index rows within ``scopes`` (all of the job's when None) equal what the
        container holds there; report what changed. A Data Lake rename or directory delete is
        applied this way (``namespace.py``): from what storage holds under the paths it names."""
        rows = await self._index_rows(container, scopes)
        listed = await self._convention_blobs(container, scopes)
        if listed is None and not rows and scopes is None:
            raise JobNotFoundError(container)
        listed = listed or {}
        added, fixed, removed = [], [], []
        unchanged = 0
        for row_key, blob in listed.items():
            row = rows.get(row_key)
            if row is None:
                added.append(self._event(container, BlobAction.CREATED, blob.name, LOWEST_SEQUENCER, blob))
            elif row.get("State") == DELETED:
                added.append(self._event(container, BlobAction.CREATED, blob.name, LOWEST_SEQUENCER, blob, row["Seq"]))
            elif as_int(row.get("Size")) != blob.size or (
                blob.etag and bare_etag(row.get("BlobETag")) not in (None, blob.etag)
            ) or row.get("BlobName") != blob.name:
                fixed.append(self._event(container, BlobAction.CREATED, blob.name, LOWEST_SEQUENCER, blob, row["Seq"]))
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
        log.info("reindexed %s%s: %s", container, "" if scopes is None else f" under {[s.prefix for s in scopes]}",
                 report.as_dict())
        return report
