"""In-process mutual exclusion per index row.

Optimistic concurrency (ETag conditions) keeps writers of different processes correct, but
two chunks of the *same* process that plan from the same cached row would always make one of
them fail, re-read and re-plan: concurrent deliveries of one job touch the same task usage
rows (Event Grid interleaves a job's running tasks). Holding a lock per row for the duration
of a commit turns those certain conflicts into a short wait; other processes still meet the
ETag conditions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class RowLocks:
    """Locks keyed by row, created on demand and dropped when nobody holds or awaits them."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, keys: Iterable[Any]) -> AsyncIterator[None]:
        """Hold every key's lock; taken in sorted order, so two holders never deadlock."""
        taken: list[tuple[Hashable, _Entry]] = []
        try:
            for key in sorted(set(keys)):
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = _Entry()
                entry.users += 1
                try:
                    await entry.lock.acquire()
                except BaseException:
                    self._drop(key, entry)
                    raise
                taken.append((key, entry))
            yield
        finally:
            for key, entry in reversed(taken):
                entry.lock.release()
                self._drop(key, entry)

    def _drop(self, key: Hashable, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._entries[key]
