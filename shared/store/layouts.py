"""Where each job's layout is read from (its ``~jobs`` row), remembered per process.

A job's number of partitions is fixed when its registry row is created and never changes while
the row exists (``shared.ingest.layouts``), so a layout read from an existing row is remembered
for the life of the process: one point read per job and process, none after. A job without a
row has nothing indexed and is read again next time.
"""

from __future__ import annotations

from collections import OrderedDict

from shared.domain import keys
from shared.domain.layout import Layout

from .table import TableStore

#: Layouts remembered per process (least recently used dropped first).
REMEMBERED = 100_000


class LayoutBook:
    def __init__(self, store: TableStore) -> None:
        self.store = store
        self._known: OrderedDict[str, Layout] = OrderedDict()

    def remember(self, layout: Layout) -> None:
        self._known[layout.container] = layout
        self._known.move_to_end(layout.container)
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)

    def forget(self, container: str) -> None:
        """A job's rows were removed (its container is gone): its next layout is read afresh."""
        self._known.pop(container, None)

    def known(self, container: str) -> Layout | None:
        return self._known.get(container)

    async def get(self, container: str) -> Layout:
        """The job's layout (one partition for a job with no registry row)."""
        layout = self._known.get(container)
        if layout is not None:
            return layout
        row = await self.store.get(keys.JOBS_PARTITION, container)
        layout = Layout.of(container, row)
        if row is not None:
            self.remember(layout)
        return layout
