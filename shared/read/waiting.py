"""Waiting for a job's next change without polling storage per client.

Commits of this process wake the job's waiters at once (``JobWatch.notify``): only those whose
filter keeps one of the commit's changes (a waiter for task ``t7``'s ``TaskOutput`` sleeps through
the commits of other tasks and kinds). Other instances' commits are found by one shared poll per
job per process, every ``CHANGE_FEED_POLL_SECONDS``, which reads the ledger's keys and the
feed's next seq in one query: a new delta not committed here, or a fold, wakes every waiter.
Woken waiters re-read through one shared read (``JobWatch.shared_tail``). So an idle long-poll
costs its one read, and a job's polls cost one query per interval however many clients wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shared.domain import keys
from shared.domain.feed import ChangeSet, FeedChange, counter_feed

from .feed import FeedReader, Tail

#: A waiter's filter as ``Filter.key`` gives it: (kind or None, lower-cased task ID or None).
Key = tuple[str | None, str | None]

log = logging.getLogger(__name__)

#: Shared reads of a job are spaced by this much per waiting client, up to ``MAX_READ_SPACING``
#: seconds: a client alone is answered at once; a thousand clients following a busy job are
#: answered about once a second each (what they cost the instance stays bounded, and ingest
#: keeps its CPU), which is still within a second of a change.
READ_SPACING_PER_WAITER = 0.001
MAX_READ_SPACING = 1.0


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
        #: The ``local_version`` of the last local commit with a change each filter keeps.
        self._touched: dict[Key, int] = {}
        self._touched_all = 0  # of the last local commit whose changes are not known
        #: The deltas this process committed (their waiters were woken by the commit itself).
        self._local_deltas: set[str] = set()
        self.polled: tuple[int, frozenset[str]] | None = None
        self.poll_generation = 0
        self._events: dict[Key, asyncio.Event] = {}
        self._poll: asyncio.Task[None] | None = None
        self._next: _Group | None = None
        self._reading = asyncio.Lock()
        self._answers: tuple[Tail | None, dict[Any, Any]] = (None, {})
        self._last_read = float("-inf")

    def answered(self, tail: Tail) -> dict[Any, Any]:
        """Pages already answered from ``tail`` (the latest shared read), by cursor and filter."""
        if self._answers[0] is not tail:
            self._answers = (tail, {})
        return self._answers[1]

    def _wake(self, touched: set[Key] | None = None) -> None:
        """Wake the waiters of the filters ``touched`` (all: ``None``)."""
        if touched is None:
            events = list(self._events.values())
            self._events.clear()
        else:
            events = [event for key in touched if (event := self._events.pop(key, None)) is not None]
        for event in events:
            event.set()

    def notify(self, delta: ChangeSet | None = None) -> None:
        """A change of this job was committed by this process (``delta``'s changes; ``None``:
        not known, every waiter is woken)."""
        self.local_version += 1
        if delta is None:
            self._touched_all = self.local_version
            self._wake()
            return
        self._local_deltas.add(delta.delta_id)
        touched = {key for change in delta.changes for key in _keys(change)}
        for key in touched:
            self._touched[key] = self.local_version
        self._wake(touched)

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
            self.polled_state(counter_feed(counter)[0],
                              frozenset(str(r["RowKey"]) for r in rows if str(r["RowKey"]).startswith(keys.delta_prefix())))

    def polled_state(self, next_seq: int, deltas: frozenset[str]) -> None:
        """What a poll found: the feed's next seq and the job's deltas. Deltas committed here
        woke their waiters when they were committed; deltas gone (folded) with the next seq
        unchanged give no waiter anything new. A fold (the next seq moved) or another
        instance's delta may: every waiter looks (``changed_since``)."""
        before, self.polled = self.polled, (next_seq, deltas)
        fresh = deltas - self._local_deltas if before is None else deltas - before[1] - self._local_deltas
        self._local_deltas &= deltas
        if before is None or next_seq != before[0] or fresh:
            self.poll_generation += 1
            self._wake()

    def version(self) -> tuple[int, int]:
        """What a waiter has seen: taken before it reads."""
        return self.local_version, self.poll_generation

    def _touched_since(self, key: Key, local_version: int) -> bool:
        return self._touched.get(key, 0) > local_version or self._touched_all > local_version

    async def changed_since(self, version: tuple[int, int], tail: Tail, deadline: float, key: Key = (None, None)) -> bool:
        """Wait until something may have changed for filter ``key`` after ``tail`` was read
        (``version`` taken before reading it): a local commit with a change the filter keeps, or
        a poll that shows a delta (not committed here) or a feed end ``tail`` does not have.
        False at ``deadline``."""
        loop = asyncio.get_running_loop()
        local_version, generation = version
        while True:
            # No await from these checks to the event being registered: a commit in between
            # would be missed (the version check sees every commit since the read).
            if self._touched_since(key, local_version):
                return True
            polled = self.polled
            if self.poll_generation != generation and polled is not None:
                if polled[0] > tail.next_seq or (polled[1] - tail.pending_ids - self._local_deltas if tail.pending is not None
                                                 else polled[1]):
                    return True
                generation = self.poll_generation  # nothing this waiter lacks: wait for the next
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            event = self._events.get(key)
            if event is None:
                event = self._events[key] = asyncio.Event()
            try:
                await asyncio.wait_for(event.wait(), remaining)
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
            loop = asyncio.get_running_loop()
            spacing = min(MAX_READ_SPACING, self.waiters * READ_SPACING_PER_WAITER)
            delay = self._last_read + spacing - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the group keeps gathering askers meanwhile
            self._last_read = loop.time()
            if self._next is group:
                self._next = None  # later askers join the next read
            try:
                tail = await self.reader.read_tail(self.container, group.seq, shared=True)
            except BaseException as exc:
                group.future.set_exception(exc)
                group.future.exception()  # retrieved: no warning when every asker left
                if not isinstance(exc, Exception):
                    raise
                return
            group.future.set_result(tail)


def _keys(change: FeedChange) -> tuple[Key, Key, Key, Key]:
    """The filters that keep ``change``: its kind and task, its kind, its task, none."""
    task = (change.task_id or "").lower()
    return (change.kind, task), (change.kind, None), (None, task), (None, None)
