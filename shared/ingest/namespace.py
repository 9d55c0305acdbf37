"""Data Lake Gen2 renames and directory deletes, applied from what storage holds (SPEC §10).

A hierarchical-namespace account announces a renamed file with one ``BlobRenamed``, a renamed
folder with one ``DirectoryRenamed`` and a deleted folder with one ``DirectoryDeleted`` (see
"Azure Blob Storage as an Event Grid source"): never a BlobDeleted or BlobCreated per blob.

Such an event's sequencer orders it only against other events of *its own* name (the folder's
or the new file's): Azure documents sequencer order per blob name, so it says nothing about
the sequencers of the blobs under a folder. Microsoft's own samples show it: a ``CreateFile``
and then a recursive ``DirectoryDeleted`` of its folder carry the same sequencer
(``00000000000004420000000000028963``). So an event only says *where* to look: the index rows
under the old and new paths are made equal to what the container holds there now, as a
reindex of those paths does (``Reindexer.sync``, storage's state, ordered against real events
the way any repair is).
"""

from __future__ import annotations

from shared.domain.conventions import is_convention_container
from shared.domain.events import NamespaceAction, NamespaceEvent, SkipReason
from shared.domain.planning import IngestReport

from .reindex import Reindexer, Scope


def scopes(event: NamespaceEvent) -> list[Scope]:
    """The paths whose rows an event may change: the deleted folder, or a rename's old and new path."""
    directory = event.action is not NamespaceAction.BLOB_RENAMED
    if event.action is NamespaceAction.DIRECTORY_DELETED:
        return [Scope(event.name, directory=True)]
    return [Scope(event.source or "", directory=directory), Scope(event.name, directory=directory)]


class NamespaceIndexer:
    def __init__(self, reindexer: Reindexer) -> None:
        self.reindexer = reindexer

    async def apply(self, events: tuple[NamespaceEvent, ...] | list[NamespaceEvent]) -> IngestReport:
        """Apply each event; each counts once, as indexed (it changed rows) or unchanged."""
        report = IngestReport(received=len(events))
        for event in events:
            if not is_convention_container(event.container):
                report.skipped[SkipReason.NOT_A_JOB_CONTAINER.value] += 1
                continue
            result = await self.reindexer.sync(event.container, scopes(event))
            if result.added or result.fixed or result.removed:
                report.indexed += 1
            else:
                report.unchanged += 1
        return report
