"""Where each job's layout is read from (its ``~jobs`` row), remembered per process.

A job's number of partitions is fixed when its registry row is created and never changes while
the row exists (``shared.ingest.layouts``), so a layout read from an existing row is remembered
for the life of the process: one point read per job and process, none after. A job without a
row has nothing indexed and is read again next time; lookups of it that come together share
one read that starts after each of them asked (a thousand clients long-polling a job that has
not started yet ask at once, and each would have cost a point read).
"""

from __future__ import annotations

import asyncio
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
        #: Reads asked for and not started yet, by container: callers meanwhile share them.
        self._asked: dict[str, asyncio.Future[Layout]] = {}
        self._reading: set[asyncio.Task[None]] = set()

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
        loop = asyncio.get_running_loop()
        asked = self._asked.get(container)
        if asked is None or asked.get_loop() is not loop:
            asked = self._asked[container] = loop.create_future()
            reading = loop.create_task(self._read(container, asked))
            self._reading.add(reading)  # held until done (the loop keeps only a weak reference)
            reading.add_done_callback(self._reading.discard)
        return await asyncio.shield(asked)

    async def _read(self, container: str, asked: asyncio.Future[Layout]) -> None:
        # Started: whoever asks from now on needs a read that starts after they asked.
        if self._asked.get(container) is asked:
            del self._asked[container]
        try:
            row = await self.store.get(keys.JOBS_PARTITION, container)
        except BaseException as exc:
            asked.set_exception(exc)
            asked.exception()  # retrieved: no warning when every asker left
            if not isinstance(exc, Exception):
                raise
            return
        layout = Layout.of(container, row)
        if row is not None:
            self.remember(layout)
        asked.set_result(layout)
