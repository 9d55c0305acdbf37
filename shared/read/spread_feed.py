"""The change feed of a job spread over several partitions: each partition's feed, merged.

Each partition of a spread job is a whole ledger with its own feed (``F|{seq}``), folded by its
own rounds, and a blob lives in one partition, so each partition's feed alone keeps every one of
its blobs' changes in order, with no gap and nothing twice (``feed.py``). A spread job's cursor
holds one cursor per partition (each signed and bound as any, the whole signed again and bound
to the job, the layout and the filter); a page takes each partition's changes after its own
cursor, the partitions in turn (the next page begins with the partition after the last one
read, so a busy partition cannot hold the others back), and a long-poll waits on every
partition at once and answers with the first that has something.

What holds: every change of the job comes exactly once to a walk of cursors, each blob's in
order. What does not: an order between changes of blobs in different partitions (they have none
to keep: the one-partition feed orders them by fold only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from .cursors import InvalidCursorError
from .feed import Filter
from .paging import InvalidTokenError, Position, TokenCodec


class ChangeFeed(Protocol):
    """What a spread feed uses of ``changes.ChangeFeed``: one partition's pages."""

    async def changes(self, container: str, job_id: str, *, cursor: str | None, start: bool, where: Filter,
                      size: int, wait: float = 0, partition: str | None = None) -> dict[str, Any]: ...

#: A partition's cursor (``["c", cursor]``), or ``["s", null]``: its feed from the start.
CURSOR, FROM_START = "c", "s"


class SpreadFeed:
    def __init__(self, feed: ChangeFeed, signing_key: str) -> None:
        self.feed = feed
        self.codec = TokenCodec(signing_key)

    @staticmethod
    def scope(container: str, partitions: int, where: Filter) -> tuple[str | None, ...]:
        return ("changes-spread", container, str(partitions), where.kind, where.task_id.lower() if where.task_id else None)

    async def changes(self, container: str, job_id: str, partitions: Sequence[str], *, cursor: str | None, start: bool,
                      where: Filter, size: int, wait: float = 0) -> dict[str, Any]:
        """A page of the job's changes over ``partitions``: ``{"value", "cursor", "more"}``."""
        scope = self.scope(container, len(partitions), where)
        first = 0
        if cursor:
            try:
                position = self.codec.decode(scope, cursor)
            except InvalidTokenError as exc:
                raise InvalidCursorError(str(exc)) from exc
            heads = position.heads
            if heads is None or len(heads) != len(partitions) or position.part >= len(partitions) or any(
                    state not in (CURSOR, FROM_START) or (state == CURSOR) != (sub is not None) for state, sub in heads):
                raise InvalidCursorError("cursor belongs to another job, layout or filter")
            subs: list[str | None] = [sub for _, sub in heads]
            first = position.part
        elif start:
            subs = [None] * len(partitions)
        else:
            # From now: each partition's end, before anything is waited for (a partition waited
            # on and given up would otherwise lose its place).
            ends = await asyncio.gather(*(self._one(container, job_id, p, None, False, where, size, 0) for p in partitions))
            subs = [answer["cursor"] for answer in ends]
        value: list[dict[str, Any]] = []
        more = False
        order = [(first + i) % len(partitions) for i in range(len(partitions))]
        last = first
        for index in order:
            if len(value) >= size:
                more = True
                break
            # A partition without a cursor is one whose feed this walk reads from the start.
            answer = await self._one(container, job_id, partitions[index], subs[index], True, where, size - len(value), 0)
            value.extend(answer["value"])
            subs[index], last = answer["cursor"], index
            more = more or answer["more"]
        if not value and not more and wait > 0:
            value, more = await self._wait(container, job_id, partitions, subs, where, size, wait)
        return {"value": value, "cursor": self._encode(scope, subs, (last + 1) % len(partitions)), "more": more}

    async def _one(self, container: str, job_id: str, partition: str, sub: str | None, start: bool, where: Filter,
                   size: int, wait: float) -> dict[str, Any]:
        return await self.feed.changes(container, job_id, cursor=sub, start=start, where=where, size=size, wait=wait,
                                       partition=partition)

    async def _wait(self, container: str, job_id: str, partitions: Sequence[str], subs: list[str | None], where: Filter,
                    size: int, wait: float) -> tuple[list[dict[str, Any]], bool]:
        """Long-poll every partition at once; the changes of those that answered first. A
        partition given up keeps the cursor it had: it answered nothing."""
        tasks = {asyncio.ensure_future(self._one(container, job_id, p, subs[i], True, where, size, wait)): i
                 for i, p in enumerate(partitions)}
        value: list[dict[str, Any]] = []
        more = False
        pending = set(tasks)
        try:
            while pending and not value:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    answer = task.result()
                    if len(value) + len(answer["value"]) > size:
                        more = True  # answered at the same moment, no room: its old cursor reads it again
                        continue
                    subs[tasks[task]] = answer["cursor"]
                    value.extend(answer["value"])
                    more = more or answer["more"]
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return value, more

    def _encode(self, scope: tuple[str | None, ...], subs: list[str | None], part: int) -> str:
        heads = tuple((FROM_START, None) if sub is None else (CURSOR, sub) for sub in subs)
        return self.codec.encode(scope, Position(part, None, heads))
