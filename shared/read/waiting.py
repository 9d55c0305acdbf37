"""Waiting for a job's next change without polling storage per client.

Commits of this process wake the job's waiters at once (``JobWatch.notify``); other
instances' commits are found by one shared poll per job per process, every
``CHANGE_FEED_POLL_SECONDS``, which reads the ledger's keys and the feed's next seq in one
query; woken waiters re-read through one shared read (``JobWatch.shared_tail``). So an idle
long-poll costs its one read, and a job's polls cost one query per interval however many
clients wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared.domain import keys
from shared.domain.feed import counter_feed

from .feed import FeedReader, Tail

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Group:
    seq: int
    future: asyncio.Future[Tail]


class JobWatch:
    """The waiters of one job in this process: woken by local commits at once and by one
    shared poll for other instances' commits; they re-read through one shared read."""

    def __init__(self, reader: FeedReader, container: str, poll_seconds: float, on_idle: Callable[[JobWatch], None]) -> None:
        self.reader = reader
        self.container = container
        self.poll_seconds = poll_seconds
        self._on_idle = on_idle
        self.waiters = 0
        self.local_version = 0
        self.polled: tuple[int, frozenset[str]] | None = None
        self.poll_generation = 0
        self._changed = asyncio.Event()
        self._poll: asyncio.Task[None] | None = None
        self._next: _Group | None = None
        self._reading = asyncio.Lock()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def notify(self) -> None:
        """A change of this job was committed by this process."""
        self.local_version += 1
        self._wake()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self.waiters += 1
        if self._poll is None or self._poll.done():
            self._poll = asyncio.get_running_loop().create_task(self._polling())
        try:
            yield
        finally:
            self.waiters -= 1
            if self.waiters == 0:
                if self._poll is not None:
                    self._poll.cancel()
                self._on_idle(self)

    async def _polling(self) -> None:
        """One query per poll interval for every waiter of the job: the ledger's keys and the
        feed's next seq. A change anywhere shows as a new delta or a moved next seq."""
        low, high = keys.prefix_range(keys.shard_prefix())
        while self.waiters > 0:
            await asyncio.sleep(self.poll_seconds)
            try:
                rows, _ = await self.reader.store.query_response(self.container, low, high, select=("RowKey", "FeedNext"))
            except Exception as exc:  # the next poll tries again; waiters still time out
                log.warning("change feed poll of %s failed: %s", self.container, exc)
                continue
            counter = next((r for r in rows if r["RowKey"] == keys.counter_key()), None)
            state = (counter_feed(counter)[0],
                     frozenset(str(r["RowKey"]) for r in rows if str(r["RowKey"]).startswith(keys.delta_prefix())))
            if state != self.polled:
                self.polled = state
                self.poll_generation += 1
                self._wake()

    def version(self) -> tuple[int, int]:
        """What a waiter has seen: taken before it reads."""
        return self.local_version, self.poll_generation

    async def changed_since(self, version: tuple[int, int], tail: Tail, deadline: float) -> bool:
        """Wait until something may have changed after ``tail`` was read (``version`` taken before
        reading it): a local commit, or a poll that shows a delta or a feed end ``tail`` does not
        have. False at ``deadline``."""
        loop = asyncio.get_running_loop()
        local_version, generation = version
        while True:
            if self.local_version != local_version:
                return True
            polled = self.polled
            if self.poll_generation != generation and polled is not None:
                if polled[0] > tail.next_seq or (polled[1] - tail.pending_ids if tail.pending is not None else polled[1]):
                    return True
                generation = self.poll_generation  # nothing this waiter lacks: wait for the next
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False

    async def shared_tail(self, seq: int) -> Tail:
        """A read that starts after this call, shared by every waiter that asks meanwhile (from
        the lowest seq they need)."""
        group = self._next
        if group is None:
            group = self._next = _Group(seq, asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().create_task(self._read(group))
        else:
            group.seq = min(group.seq, seq)
        return await asyncio.shield(group.future)

    async def _read(self, group: _Group) -> None:
        async with self._reading:
            if self._next is group:
                self._next = None  # later askers join the next read
            try:
                tail = await self.reader.read_tail(self.container, group.seq)
            except BaseException as exc:
                group.future.set_exception(exc)
                group.future.exception()  # retrieved: no warning when every asker left
                if not isinstance(exc, Exception):
                    raise
                return
            group.future.set_result(tail)
