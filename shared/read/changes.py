"""``GET /api/jobs/{jobId}/changes``: pages of a job's changes, and long-polls.

The reading and the guarantees are in ``feed.py``, cursors in ``cursors.py``, waiting in
``waiting.py``; this module composes them for the route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.domain.feed import ChangeSet, FeedChange, FeedCursor, change_item
from shared.store.table import TableStore

from .cursors import CursorCodec
from .feed import MAX_WAIT_SECONDS, CursorExpiredError, FeedPage, FeedReader, Filter
from .paging import Scope
from .spread_feed import SpreadFeed
from .waiting import JobWatch

#: Times a request without a cursor begins again from the start when a purge overtook its read.
MAX_RESTARTS = 3


class ChangeFeed:
    """``GET /api/jobs/{jobId}/changes``: pages of changes, and long-polls."""

    def __init__(self, store: TableStore, signing_key: str, *, retention_hours: int, poll_seconds: float,
                 blob_url: Callable[[str, str], str]) -> None:
        self.reader = FeedReader(store)
        self.codec = CursorCodec(signing_key)
        self.retention_seconds = retention_hours * 3600
        self.poll_seconds = poll_seconds
        self.blob_url = blob_url
        self._watches: dict[str, JobWatch] = {}
        #: A job spread over several partitions: their feeds merged (``spread_feed.py``).
        self.spread = SpreadFeed(self, signing_key)

    def notify(self, container: str, delta: ChangeSet | None = None) -> None:
        """This process committed a change of ``container`` (``delta``'s changes): wake its
        waiters whose filter keeps one of them now (every waiter when ``delta`` is not given)."""
        watch = self._watches.get(container)
        if watch is not None:
            watch.notify(delta)

    def _watch(self, container: str) -> JobWatch:
        watch = self._watches.get(container)
        if watch is None:
            watch = self._watches[container] = JobWatch(self.reader, container, self.poll_seconds, self._idle)
        return watch

    def _idle(self, watch: JobWatch) -> None:
        if self._watches.get(watch.container) is watch:
            del self._watches[watch.container]

    @staticmethod
    def scope(container: str, where: Filter) -> Scope:
        return ("changes", container, where.kind, where.task_id.lower() if where.task_id else None)

    async def changes(self, container: str, job_id: str, *, cursor: str | None, start: bool, where: Filter,
                      size: int, wait: float = 0, partition: str | None = None) -> dict[str, Any]:
        """A page of changes: ``{"value", "cursor", "more"}`` (``more``: a next page is ready).
        ``partition``: the feed read (one task's partition of a job spread over several)."""
        source = partition or container
        scope = self.scope(source, where)
        # To the minute: clients that start following a job together hold equal cursors.
        now = int(time.time()) // 60 * 60
        position = self.codec.decode(scope, cursor) if cursor else None
        if position is not None and now - position.issued > self.retention_seconds:
            raise CursorExpiredError("cursor is older than the change feed's retention")
        watch = self._watch(source) if wait > 0 else None
        if watch is None:
            return await self._answer(container, source, job_id, scope, position, start, where, size, now, None, 0.0, cursor)
        with watch.waiting():
            deadline = asyncio.get_running_loop().time() + min(wait, MAX_WAIT_SECONDS)
            return await self._answer(container, source, job_id, scope, position, start, where, size, now, watch, deadline,
                                      cursor)

    async def _answer(self, container: str, source: str, job_id: str, scope: Scope, position: FeedCursor | None, start: bool,
                      where: Filter, size: int, now: int, watch: JobWatch | None, deadline: float,
                      token: str | None) -> dict[str, Any]:
        restarts = 0
        while True:
            version = watch.version() if watch is not None else (0, 0)
            seq = position.seq if position is not None else 0
            tail = await (watch.shared_tail(seq) if watch is not None else self.reader.read_tail(source, seq))
            if not tail.complete and tail.rows and (tail.rows[-1].seq or 0) < seq:
                # A shared read from a walk far behind stopped short of this cursor: read from it.
                tail = await self.reader.read_tail(source, seq)
            if position is None:
                if not start:
                    position = self.reader.now_cursor(tail, where, now)
                    token = self.codec.encode(scope, position)
                    # From now: nothing yet. A waiting request waits for what comes next.
                    if watch is None or not await watch.changed_since(version, tail, deadline, where.key):
                        return self._wire(container, job_id, FeedPage([], position, False), scope, token)
                    continue
                position = FeedCursor(tail.oldest, 0, [], now)
                if tail.start != position.seq:
                    tail = await self.reader.read_tail(source, position.seq)
            if watch is not None:
                # Waiters of a job woken together mostly hold the same cursor: one page each.
                key = (token, where, size, job_id)
                known = watch.answered(tail).get(key)
                if known is not None:
                    return known
                if token is not None and tail.nothing_for(position, where):
                    # Nothing for this waiter in the shared read (a fold woke every waiter of
                    # the job): wait again without building its page (an empty one, the cursor
                    # it sent unchanged).
                    if not await watch.changed_since(version, tail, deadline, where.key):
                        return self._wire(container, job_id, FeedPage([], position, False), scope, token)
                    continue
            try:
                page = self.reader.page(tail, position, where, size)
            except CursorExpiredError:
                # From the start without a cursor, a purge moved the oldest kept on between this
                # read's two queries: no cursor of the caller's expired, so begin again (bounded).
                if token is not None or not start or restarts >= MAX_RESTARTS:
                    raise
                position, restarts = None, restarts + 1
                continue
            # A cursor's age is its own, not its walk's: a walk may go on past the retention.
            page.cursor.issued = now
            if page.changes or page.more or watch is None:
                answer = self._wire(container, job_id, page, scope, None)
                if watch is not None:
                    watch.answered(tail)[key] = answer
                return answer
            if not await watch.changed_since(version, tail, deadline, where.key):
                # Nothing arrived: the cursor the caller sent (unchanged), or the new one.
                return self._wire(container, job_id, page, scope, token)

    def _wire(self, container: str, job_id: str, page: FeedPage, scope: Scope, token: str | None) -> dict[str, Any]:
        return {
            "value": [self.item(container, job_id, change, at) for change, at in page.changes],
            "cursor": token or self.codec.encode(scope, page.cursor),
            "more": page.more,
        }

    def item(self, container: str, job_id: str, change: FeedChange, at: datetime | None) -> dict[str, Any]:
        """A change as the API answers it (``shared.domain.feed.change_item``)."""
        return change_item(container, job_id, change, at, self.blob_url(container, change.blob_name))
