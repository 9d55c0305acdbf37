"""Group commit: concurrent single-event invocations share batch transactions.

The Event Grid trigger gets one event an invocation; the Event Grid extension runs the events of
one delivered batch as concurrent invocations in the same worker (and answers the delivery with
a failure if any invocation fails, so Event Grid redelivers the batch). Committing each event
alone costs a batch transaction (and three entity writes) per event. Here, events that arrive
while a commit is in flight wait and go together into the next one, so a delivered batch of a
hundred events becomes a few transactions. Each caller returns only once its own event is
durable, and raises (so its event is redelivered) if the commit that carried it failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from shared.domain.events import BlobEvent, EventBatch, NamespaceEvent
from shared.domain.planning import MAX_BATCH_OPERATIONS, IngestReport

log = logging.getLogger(__name__)

#: Events one commit takes at most (a webhook delivery's worth).
MAX_GROUP = 500
#: Commits in flight at once, as the webhook has several deliveries in flight. Another commit
#: starts only while a transaction's worth of events waits (``MAX_BATCH_OPERATIONS``: a Table
#: transaction holds 100 operations, so a larger group saves no transaction), so a busy
#: instance commits in parallel and a quiet one sends one commit at a time, as large as what waits.
MAX_COMMITS = 4
#: Turns of the event loop a commit waits at most for invocations still arriving.
MAX_GATHER_TURNS = 1000

Ingest = Callable[[EventBatch], Awaitable[IngestReport]]


class GroupCommit:
    def __init__(self, ingest: Ingest, max_group: int = MAX_GROUP, max_commits: int = MAX_COMMITS) -> None:
        self._ingest = ingest
        self._max_group = max_group
        self._max_commits = max_commits
        self._parallel_group = min(max_group, MAX_BATCH_OPERATIONS)
        self._waiting: list[tuple[BlobEvent | NamespaceEvent, asyncio.Future[IngestReport]]] = []
        # Flushers that will still look at the queue. A flusher leaves this set itself, in the same
        # step as its last look at an empty queue (no await in between): were it left to the
        # task's done callback, which runs one loop turn later, a submit in that turn would see a
        # flusher that will never look again, start none, and strand its event.
        self._flushers: set[asyncio.Task[None]] = set()
        self.commits = 0  # how many commits carried the events so far (for tests and metrics)

    async def submit(self, event: BlobEvent | NamespaceEvent) -> IngestReport:
        """Index ``event`` with whatever else is waiting; the report of the commit that carried it."""
        future: asyncio.Future[IngestReport] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if not self._flushers or (len(self._waiting) >= self._parallel_group and len(self._flushers) < self._max_commits):
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
        return await future

    async def _gathered(self) -> None:
        """Let invocations started together join the first commit.

        They do not all arrive in one turn of the loop: the first ones create the service
        while the others wait on its lock, and a lock wakes its waiters one turn at a time.
        So wait while the queue still grows from one turn to the next (a bounded number of
        turns, never a timer: a lone event is committed at once).
        """
        for _ in range(MAX_GATHER_TURNS):
            waiting = len(self._waiting)
            await asyncio.sleep(0)
            if len(self._waiting) == waiting or len(self._waiting) >= self._max_group:
                return

    async def _flush(self) -> None:
        try:
            await self._gathered()
            await self._commit_while_waiting()
        finally:
            # Synchronous with the loop's last look at ``_waiting`` (nothing awaited between), so
            # a submit from now on sees this flusher gone and starts another.
            self._flushers.discard(asyncio.current_task())

    async def _commit_while_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group :]
            batch = EventBatch(
                blob_events=tuple(e for e, _ in group if isinstance(e, BlobEvent)),
                namespace_events=tuple(e for e, _ in group if isinstance(e, NamespaceEvent)),
            )
            self.commits += 1
            try:
                report = await self._ingest(batch)
            except asyncio.CancelledError:
                # The instance is shutting down: its callers raise, and Event Grid redelivers.
                for _, future in group:
                    future.cancel()
                raise
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                log.info("group commit of %d events: %s", len(group), json.dumps(report.as_dict()))
                for _, future in group:
                    if not future.done():
                        future.set_result(report)
