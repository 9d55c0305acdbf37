"""Many clients waiting on one job's change feed: what they share, and that each still gets
exactly its changes (issue 21: a thousand waiting clients must not slow ingest).

Waiters of a job in one process share one read per wake-up (``JobWatch.shared_tail``); that read
indexes its changes by kind and task once (``Tail.kept``), so a waiter filtered on its task and
kind finds its changes without testing every change of the read; a long page is serialised and
compressed once for every client it answers. Driven step by step against a real Azurite: the
waiters are parked (counted, not timed) before the commit that wakes them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from devtools.azurite import Azurite
from shared.domain import keys
from shared.domain.conventions import container_name
from shared.read.feed import Filter, Tail
from shared.service import Service

from ..helpers import blob_event
from ..support.stack import RunningApp
from .test_change_feed import CONTAINER, Walk, ingest, run

TASKS = 12
KINDS = ("TaskOutput", "TaskLog")


async def parked(service: Service, waiters: int) -> None:
    """Until ``waiters`` long-polls of the job hold (each has had its read and waits for a change)."""
    assert service.feed is not None
    while True:
        watch = service.feed._watches.get(CONTAINER)
        if watch is not None and watch.waiters == waiters and watch._next is None and not watch._reading.locked():
            break
        await asyncio.sleep(0)  # a turn of the loop, not a wait for time to pass
    for _ in range(10):  # their pages from that read are computed, and they are back in changed_since
        await asyncio.sleep(0)


def test_waiters_with_their_own_task_and_kind_share_one_read_and_each_gets_exactly_its_changes(azurite: Azurite) -> None:
    """One commit of outputs of many tasks and kinds wakes every waiter; they share the read it
    causes (not one read each), and each answers only its filter's changes, once. A
    filter on a task ID spelt otherwise (task IDs are case-insensitive) and on a kind only, or no
    filter, see theirs too."""
    events = [blob_event(CONTAINER, f"t{n}/${kind}/{kind.lower()}-{n}-{i}.txt", sequencer=100 + 4 * n + 2 * k + i)
              for n in range(TASKS) for k, kind in enumerate(KINDS) for i in range(2)]
    events.append(blob_event(CONTAINER, "$JobOutput/summary.txt", sequencer=999))
    filters = [Filter(kind, f"t{n}") for n in range(TASKS) for kind in KINDS]
    filters += [Filter(), Filter(kind="TaskLog"), Filter(task_id="T3"), Filter("TaskOutput", "T11")]

    def expected(where: Filter) -> list[str]:
        paths = []
        for event in events:
            task, kind = event["subject"].split("/blobs/", 1)[1].split("/")[:2] if "$JobOutput" not in event["subject"] else (None, "$JobOutput")
            if where.kind is not None and kind != "$" + where.kind:
                continue
            if where.task_id is not None and (task or "").lower() != where.task_id.lower():
                continue
            paths.append(event["subject"].rsplit("/", 1)[1])
        return paths

    async def body(service: Service) -> None:
        assert service.feed is not None
        walks = [Walk(service, start=False, where=where) for where in filters]
        for walk in walks:
            await walk.step()  # from now: a cursor at the current end
        reads = 0
        read_tail = service.feed.reader.read_tail

        async def counted(*args: Any, **kwargs: Any) -> Tail:
            nonlocal reads
            reads += 1
            return await read_tail(*args, **kwargs)

        service.feed.reader.read_tail = counted  # type: ignore[method-assign]
        waiting = [asyncio.create_task(walk.step(wait=60)) for walk in walks]
        await parked(service, len(walks))
        before = reads
        await ingest(service, events, batch=len(events))
        await asyncio.wait_for(asyncio.gather(*waiting), 30)  # bounds a hang only
        for walk, where in zip(walks, filters, strict=True):
            got = [c["output"]["path"] for c in walk.changes]
            assert len(got) == len(set(got)) and sorted(got) == sorted(expected(where)), where
        # Shared: the wake-up cost a read or two (one per commit that found waiters parked),
        # not one per waiter.
        assert reads - before <= 2, reads - before

    run(azurite, body)


def test_a_long_page_is_compressed_for_clients_that_take_gzip_and_plain_for_the_others(app: RunningApp) -> None:
    job = "gzip-feed"
    container = container_name(job)
    url = f"/api/jobs/{job}/changes"
    start = app.get(url, params={"from": "start"}).json()["cursor"]
    assert app.post_events([blob_event(container, f"t{i}/$TaskPreview/p{i}.png", sequencer=i + 1) for i in range(40)]).status_code == 200
    params = {"cursor": start}
    compressed = app.get(url, params=params, headers={"accept-encoding": "gzip"})
    plain = app.get(url, params=params, headers={"accept-encoding": "identity"})
    small = app.get(url, params={"from": "start", "kind": "JobOutput"}, headers={"accept-encoding": "gzip"})
    assert compressed.headers["content-encoding"] == "gzip" and "accept-encoding" in compressed.headers["vary"]
    assert "content-encoding" not in plain.headers
    # httpx decodes it: the same answer, in a third of the bytes or less on the wire.
    assert compressed.json() == plain.json() and len(plain.json()["value"]) == 40
    assert int(compressed.headers["content-length"]) < len(plain.content) // 3
    # A short page (here an empty one of another filter) is not worth compressing.
    assert small.status_code == 200 and "content-encoding" not in small.headers and small.json()["value"] == []


def test_a_shared_read_fetches_only_the_feed_rows_it_has_not_parsed(azurite: Azurite) -> None:
    """Waiters of a busy job re-read its feed every second from the oldest cursor among them: a
    shared read asks for the rows' keys (with their ETags) and fetches only the rows it has not
    parsed (new ones, or one rewritten: a round taken over writes its rows again), and answers
    the same rows a plain read does."""
    events = [blob_event(CONTAINER, f"t{i % 5}/$TaskOutput/o{i}.bin", sequencer=1000 + i, size=i) for i in range(30)]

    async def body(service: Service) -> None:
        assert service.feed is not None
        reader = service.feed.reader
        await ingest(service, events[:20], batch=2)  # 10 transactions: 10 deltas, then 10 feed rows
        assert await service.indexer.compactor.fold(CONTAINER) == 10
        fetched: list[str] = []  # feed rows read whole (not keys only)
        query_range = reader.store.query_range

        def counting(*args: Any, **kwargs: Any) -> Any:
            async def rows() -> Any:
                async for row in query_range(*args, **kwargs):
                    if kwargs.get("select") is None and str(row["RowKey"]).startswith(keys.feed_prefix()):
                        fetched.append(str(row["RowKey"]))
                    yield row
            return rows()

        reader.store.query_range = counting  # type: ignore[method-assign]

        def shape(tail: Tail) -> list[Any]:
            return [(row.seq, row.delta_id, row.at, row.changes) for row in tail.rows]

        first = await reader.read_tail(CONTAINER, 0, shared=True)
        assert len(first.rows) == 10 and len(fetched) == 10 and first.complete
        again = await reader.read_tail(CONTAINER, 0, shared=True)
        assert shape(again) == shape(first) and len(fetched) == 10  # keys only: every row known
        await ingest(service, events[20:], batch=2)
        await service.indexer.compactor.fold(CONTAINER)
        third = await reader.read_tail(CONTAINER, 0, shared=True)
        assert len(third.rows) == 15 and fetched[10:] == [keys.feed_key(seq) for seq in range(10, 15)]  # the new ones only
        # A row written again (same content, a new ETag) is fetched again, with every row after it.
        row = await service.store.get(CONTAINER, keys.feed_key(12))
        assert row is not None
        await service.store.merge({k: v for k, v in row.items() if not k.startswith("__")})
        fourth = await reader.read_tail(CONTAINER, 0, shared=True)
        assert fetched[15:] == [keys.feed_key(seq) for seq in range(12, 15)]
        plain = await reader.read_tail(CONTAINER, 0)  # one query, as a walk reads
        assert shape(fourth) == shape(third) == shape(plain) and fourth.complete

    run(azurite, body)


def test_waiters_of_a_job_not_registered_yet_share_its_layout_read(azurite: Azurite) -> None:
    """A thousand downstream tasks waiting on a job that has not started: its layout (no registry
    row yet) is read for every request, and lookups that come together share one point read; one
    asked once a read has started waits for a read of its own, so a registration in between is
    seen."""
    async def body(service: Service) -> None:
        book = service.query.layouts
        reads = 0
        gate = asyncio.Event()
        get = book.store.get

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            await gate.wait()
            return await get(*args, **kwargs)

        book.store.get = counted  # type: ignore[method-assign]
        together = [asyncio.create_task(book.get(CONTAINER)) for _ in range(50)]
        while reads == 0:
            await asyncio.sleep(0)  # until the shared read has started
        later = asyncio.create_task(book.get(CONTAINER))  # asked after: a read of its own
        for _ in range(10):
            await asyncio.sleep(0)  # turns of the loop: its read starts
        assert reads == 2
        await service.layouts.set(CONTAINER, "feed-job", 4)  # registered before that read is answered
        gate.set()
        assert reads == 2 and {layout.partitions for layout in await asyncio.gather(*together)} <= {1, 4}
        assert (await later).partitions == 4
        assert (await book.get(CONTAINER)).partitions == 4 and reads == 2  # remembered from then on

    run(azurite, body)
