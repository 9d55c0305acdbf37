"""Data Lake Gen2 renames and directory deletes, applied as per-blob changes (SPEC §10).

A hierarchical-namespace account announces a renamed file with one ``BlobRenamed``, a renamed
folder with one ``DirectoryRenamed`` and a deleted folder with one ``DirectoryDeleted`` (see
"Azure Blob Storage as an Event Grid source"): never a BlobDeleted or BlobCreated per blob.
Each becomes, under the event's own sequencer, a delete of every index entry under the old
path and a create of every blob now under the new path (read from a listing: a rename event
carries no size). The changes then go through the indexer like any event, so ordering by
sequencer, idempotence and quotas hold as for BlobCreated and BlobDeleted.
"""

from __future__ import annotations

from shared.domain import keys
from shared.domain.conventions import is_convention_container
from shared.domain.events import BlobAction, BlobEvent, NamespaceAction, NamespaceEvent, SkipReason
from shared.domain.planning import IngestReport
from shared.domain.rows import DELETED
from shared.store.blobs import ContainerNotFoundError, OutputsAccount, list_container

from .indexer import Indexer


def _under(name: str, path: str, *, directory: bool) -> bool:
    return name.startswith(path + "/") if directory else name == path


class NamespaceIndexer:
    def __init__(self, indexer: Indexer, blobs: OutputsAccount) -> None:
        self.indexer = indexer
        self.store = indexer.store
        self.blobs = blobs

    async def apply(self, events: tuple[NamespaceEvent, ...] | list[NamespaceEvent]) -> IngestReport:
        """Apply each event in sequencer order; each counts once, as indexed or unchanged."""
        report = IngestReport(received=len(events))
        for event in sorted(events, key=lambda e: e.sequencer):
            if not is_convention_container(event.container):
                report.skipped[SkipReason.NOT_A_JOB_CONTAINER.value] += 1
                continue
            changes = await self._changes(event)
            result = await self.indexer.ingest(changes) if changes else IngestReport()
            if result.indexed or result.rejected:
                report.indexed += 1
            else:
                report.unchanged += 1
        return report

    async def _changes(self, event: NamespaceEvent) -> list[BlobEvent]:
        directory = event.action is not NamespaceAction.BLOB_RENAMED
        gone = event.name if event.action is NamespaceAction.DIRECTORY_DELETED else (event.source or "")
        changes = [self._event(event, BlobAction.DELETED, name) for name in await self._indexed_under(event.container, gone, directory)]
        if event.action is not NamespaceAction.DIRECTORY_DELETED:
            changes += await self._listed_under(event, directory)
        return changes

    async def _indexed_under(self, container: str, path: str, directory: bool) -> list[str]:
        """Blob names of the live or rejected index entries at or under ``path``."""
        names: list[str] = []
        for low, high in keys.output_ranges():
            async for row in self.store.query_range(container, low, high, select=("RowKey", "BlobName", "State")):
                if row.get("State") != DELETED and _under(str(row.get("BlobName", "")), path, directory=directory):
                    names.append(str(row["BlobName"]))
        return names

    async def _listed_under(self, event: NamespaceEvent, directory: bool) -> list[BlobEvent]:
        prefix = event.name + "/" if directory else event.name
        found: list[BlobEvent] = []
        try:
            async for blob in list_container(self.blobs, event.container, prefix):
                if _under(blob.name, event.name, directory=directory):
                    found.append(self._event(event, BlobAction.CREATED, blob.name, blob.size, blob.content_type,
                                             blob.etag, blob.blob_type))
        except ContainerNotFoundError:
            return []
        return found

    @staticmethod
    def _event(event: NamespaceEvent, action: BlobAction, name: str, size: int | None = None,
               content_type: str | None = None, etag: str | None = None, blob_type: str | None = None) -> BlobEvent:
        return BlobEvent(action=action, container=event.container, blob_name=name, sequencer=event.sequencer,
                         event_id=event.event_id, event_time=event.event_time, size=size, content_type=content_type,
                         etag=etag, blob_type=blob_type, api=event.action.value)
