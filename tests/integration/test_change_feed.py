"""The change feed against a real Azurite: interleavings driven step by step, no timing.

Each test drives a walk of cursors (``ChangeFeed.changes``, what the route calls) against
writers and folds that run at chosen points: a writer committing after the reader passed the
feed's end, a fold between two reads of a walk and between the two queries of one read, a fold
round cut short and taken over by another instance. A walk must see every change once, in
every blob's sequencer order, and replaying it must give the index as listed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devtools.azurite import Azurite
from shared.domain import keys
from shared.domain.conventions import container_name
from shared.domain.feed import FeedCursor
from shared.ingest.compactor import Compactor
from shared.read.changes import ChangeFeed
from shared.read.cursors import CursorCodec, InvalidCursorError
from shared.read.feed import CursorExpiredError, Filter
from shared.service import Service
from shared.store.envelopes import parse_events

from ..helpers import blob_event
from ..support.stack import RunningApp, settings_for
from ..support.workload import build_workload, index_state

JOB = "feed-job"
CONTAINER = container_name(JOB)


async def ingest(service: Service, events: list[dict], batch: int = 100) -> None:
    for start in range(0, len(events), batch):
        await service.ingest(parse_events(events[start : start + batch]))


class Walk:
    """A client walking the feed: every change it got, and its cursor."""

    def __init__(self, service: Service, *, start: bool = True, where: Filter | None = None, size: int = 1000) -> None:
        self.service, self.start, self.where, self.size = service, start, where or Filter(), size
        self.cursor: str | None = None
        self.changes: list[dict[str, Any]] = []

    async def step(self, wait: float = 0) -> list[dict[str, Any]]:
        """One request (and the pages it says are ready): the changes it returned."""
        got: list[dict[str, Any]] = []
        while True:
            assert self.service.feed is not None
            answer = await self.service.feed.changes(CONTAINER, JOB, cursor=self.cursor, start=self.start,
                                                     where=self.where, size=self.size, wait=wait)
            self.cursor = answer["cursor"]
            got += answer["value"]
            if not answer["more"]:
                break
        self.changes += got
        return got

    def replay(self) -> dict[str, int]:
        """The live outputs the walk implies (blob name -> size)."""
        state: dict[str, int] = {}
        for change in self.changes:
            output = change["output"]
            if change["change"] in ("created", "updated", "admitted"):
                state[output["blobName"]] = output["size"]
            else:
                state.pop(output["blobName"], None)
        return state


def assert_no_repeat(changes: list[dict[str, Any]]) -> None:
    keys_ = [(c["output"]["blobName"], c["change"], c["output"]["etag"], c["at"]) for c in changes]
    assert len(keys_) == len(set(keys_)), "a change was returned twice"


async def listed(service: Service) -> dict[str, int]:
    items: dict[str, int] = {}
    for lister in (service.query.all_task_outputs, service.query.job_outputs):
        token = None
        while True:
            page = await lister(JOB, None, "", 5000, token)
            items.update({i["blobName"]: i["size"] for i in page.items})
            token = page.next_token
            if token is None:
                break
    return items


def run(azurite: Azurite, body: Callable[..., Awaitable[None]], services: int = 1) -> None:
    settings = settings_for(azurite)

    async def main() -> None:
        created = [await Service.create(settings) for _ in range(services)]
        try:
            for service in created:
                service.indexer.compactor.delay = 3600  # folds are driven by the test
            await body(*created)
        finally:
            for service in created:
                await service.close()

    asyncio.run(main())


def test_a_walk_sees_pending_and_sequenced_changes_once_across_folds_and_late_writers(azurite: Azurite) -> None:
    async def body(first: Service, second: Service) -> None:
        walk = Walk(first)
        assert await walk.step() == []
        # Pending: committed, not folded yet.
        await ingest(first, [blob_event(CONTAINER, f"t1/$TaskOutput/a{i}.txt", sequencer=10 + i, size=i) for i in range(5)])
        got = await walk.step()
        assert [c["output"]["path"] for c in got] == [f"a{i}.txt" for i in range(5)]
        assert {c["change"] for c in got} == {"created"} and all(c["at"] for c in got)
        # A fold between two reads of the walk: the sequenced rows are the ones already received.
        assert await first.indexer.compactor.fold(CONTAINER) == 1
        assert await walk.step() == []
        # A slower instance commits after the reader passed the end of the feed.
        await ingest(second, [blob_event(CONTAINER, "t1/$TaskOutput/a0.txt", sequencer=30, size=99),
                              blob_event(CONTAINER, "t2/$TaskPreview/b.png", sequencer=31, size=7)])
        await ingest(first, [blob_event(CONTAINER, "t1/$TaskOutput/a1.txt", sequencer=32, deleted=True)])
        await second.indexer.compactor.fold(CONTAINER)  # folded before the reader looks again
        got = await walk.step()
        assert [(c["change"], c["output"]["path"]) for c in got] == [
            ("updated", "a0.txt"), ("created", "b.png"), ("deleted", "a1.txt")] or sorted(
            (c["change"], c["output"]["path"]) for c in got) == [("created", "b.png"), ("deleted", "a1.txt"), ("updated", "a0.txt")]
        deleted = next(c for c in got if c["change"] == "deleted")["output"]
        assert (deleted["taskId"], deleted["kind"], deleted["path"], deleted["blobName"]) == ("t1", "TaskOutput", "a1.txt", "t1/$TaskOutput/a1.txt")
        # Duplicates and stale events change nothing, so the feed says nothing.
        await ingest(second, [blob_event(CONTAINER, "t1/$TaskOutput/a0.txt", sequencer=30, size=99),
                              blob_event(CONTAINER, "t1/$TaskOutput/a1.txt", sequencer=20, size=5)])
        assert await walk.step() == []
        assert walk.replay() == await listed(first)
        assert_no_repeat(walk.changes)
        # A retried request (the same cursor) gets the same changes again: the only repeat.
        again = Walk(first)
        await again.step()
        assert again.changes == walk.changes

    run(azurite, body, services=2)


def test_a_fold_between_the_two_queries_of_one_read_neither_skips_nor_repeats(azurite: Azurite) -> None:
    async def body(service: Service) -> None:
        walk = Walk(service)
        await walk.step()
        await ingest(service, [blob_event(CONTAINER, f"t{i}/$TaskLog/log.txt", sequencer=100 + i) for i in range(3)], batch=1)
        store = service.feed.reader.store  # type: ignore[union-attr]
        real = store.query_response
        folds = 0

        async def then_fold(*args: Any, **kwargs: Any) -> Any:
            nonlocal folds
            answer = await real(*args, **kwargs)
            if folds == 0:  # the ledger is read; the deltas are sequenced and deleted before the feed is
                folds += await service.indexer.compactor.fold(CONTAINER)
            return answer

        store.query_response = then_fold  # type: ignore[method-assign]
        try:
            got = await walk.step()
        finally:
            store.query_response = real  # type: ignore[method-assign]
        assert folds == 3
        assert sorted(c["output"]["taskId"] for c in got) == ["t0", "t1", "t2"]
        assert await walk.step() == []
        # and the other way round: received pending, then met in the feed, skipped once.
        await ingest(service, [blob_event(CONTAINER, "t9/$TaskLog/log.txt", sequencer=200)])
        assert len(await walk.step()) == 1
        await service.indexer.compactor.fold(CONTAINER)
        assert await walk.step() == []
        assert_no_repeat(walk.changes)

    run(azurite, body)


class Died(Exception):
    """The instance running a fold stopped (nothing catches this)."""


class CrashingCompactor(Compactor):
    """A fold that stops after ``steps`` transactions, as an instance that dies would."""

    def __init__(self, *args: Any, steps: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps = steps

    async def _submit_with_round(self, *args: Any, **kwargs: Any) -> None:
        if self.steps == 0:
            raise Died
        self.steps -= 1
        await super()._submit_with_round(*args, **kwargs)

    async def _delete(self, *args: Any, **kwargs: Any) -> None:
        if self.steps == 0:
            raise Died
        await super()._delete(*args, **kwargs)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_a_round_taken_over_mid_way_writes_the_same_feed(azurite: Azurite, steps: int) -> None:
    """150 transactions of one change each: the round's feed rows take two batches. The first
    instance dies after the task fold (1), after the job fold allocated the seqs (2), after the
    first feed batch (3), before deleting the deltas (4); another takes the round over."""
    events = [blob_event(CONTAINER, f"t{i % 7}/$TaskOutput/o{i}.bin", sequencer=1000 + i, size=i) for i in range(150)]

    async def body(first: Service, second: Service) -> None:
        walk = Walk(first, size=40)
        await walk.step()
        await ingest(first, events, batch=1)
        got = await walk.step()  # all pending
        assert len(got) == 150
        dying = CrashingCompactor(first.store, "dying", steps=steps)
        with pytest.raises(Died):
            await dying.fold(CONTAINER)
        # Mid-round (rows being written, or written and the deltas not deleted yet): a walk that
        # got the changes pending gets nothing again, however often it asks; a walk that starts
        # now gets each once, in order.
        assert await walk.step() == [] and await walk.step() == []
        middle = Walk(first)
        await middle.step()
        await middle.step()  # (seqs allocated, rows not written yet: those come once they are)
        await second.indexer.compactor.fold(CONTAINER, force=True)
        assert await walk.step() == []
        await middle.step()
        assert [c["output"]["path"] for c in middle.changes] == [f"o{i}.bin" for i in range(150)]
        late = Walk(first, size=40)  # a walk from the start reads the sequenced feed, in order
        await late.step()
        assert [c["output"]["path"] for c in late.changes] == [f"o{i}.bin" for i in range(150)]
        low, high = keys.prefix_range(keys.feed_prefix())
        rows = [r["RowKey"] async for r in first.store.query_range(CONTAINER, low, high)]
        assert rows == [keys.feed_key(i) for i in range(150)]
        assert_no_repeat(walk.changes)

    run(azurite, body, services=2)


def test_each_blobs_changes_keep_sequencer_order_through_pending_and_feed(azurite: Azurite) -> None:
    """A blob created, overwritten, deleted, created again, in four transactions whose random
    delta ids sort any way: walked pending, or sequenced by one round, the order is the blob's."""
    history = [("x.txt", 1, False), ("x.txt", 2, False), ("x.txt", 3, True), ("x.txt", 4, False)]
    expected = ["created", "updated", "deleted", "created"]

    async def body(service: Service) -> None:
        pending, sequenced = Walk(service), Walk(service)
        await pending.step()
        await sequenced.step()
        for trial in range(5):
            for name, seq, deleted in history:
                await ingest(service, [blob_event(CONTAINER, f"t1/$TaskOutput/{trial}{name}", sequencer=seq, deleted=deleted)])
            got = await pending.step()
            assert [c["change"] for c in got] == expected
        await service.indexer.compactor.fold(CONTAINER)
        got = await sequenced.step()
        for trial in range(5):
            assert [c["change"] for c in got if c["output"]["path"] == f"{trial}x.txt"] == expected
        assert await pending.step() == []

    run(azurite, body)


def test_filters_from_now_and_cursor_errors(azurite: Azurite) -> None:
    async def body(service: Service) -> None:
        await ingest(service, [blob_event(CONTAINER, "t1/$TaskOutput/old.txt", sequencer=1)])
        now = Walk(service, start=False)
        assert await now.step() == []  # from now: what was there is behind the cursor
        previews = Walk(service, where=Filter("TaskPreview", "T2"))
        await previews.step()
        await ingest(service, [blob_event(CONTAINER, "t1/$TaskOutput/new.txt", sequencer=2),
                               blob_event(CONTAINER, "t2/$TaskPreview/p.png", sequencer=3),
                               blob_event(CONTAINER, "t3/$TaskPreview/q.png", sequencer=4)])
        assert [c["output"]["path"] for c in await now.step()] == ["new.txt", "p.png", "q.png"]
        assert [c["output"]["path"] for c in previews.changes] == []
        assert [c["output"]["path"] for c in await previews.step()] == ["p.png"]
        await service.indexer.compactor.fold(CONTAINER)
        assert await previews.step() == [] and await now.step() == []
        feed = service.feed
        assert feed is not None
        # A cursor of another filter, or altered: refused.
        with pytest.raises(InvalidCursorError):
            await feed.changes(CONTAINER, JOB, cursor=previews.cursor, start=True, where=Filter(), size=10)
        tampered = previews.cursor[:-3] + ("AAA" if not previews.cursor.endswith("AAA") else "BBB")  # type: ignore[index]
        with pytest.raises(InvalidCursorError):
            await feed.changes(CONTAINER, JOB, cursor=tampered, start=True, where=Filter("TaskPreview", "T2"), size=10)
        # Older than the retention (here: any cursor at all): expired.
        feed.retention_seconds = -1
        with pytest.raises(CursorExpiredError):
            await feed.changes(CONTAINER, JOB, cursor=now.cursor, start=True, where=Filter(), size=10)

    run(azurite, body)


def test_purged_rows_expire_the_cursors_that_needed_them(azurite: Azurite) -> None:
    from datetime import datetime, timedelta, timezone

    async def body(service: Service) -> None:
        behind = Walk(service)
        await behind.step()
        for i in range(3):
            await ingest(service, [blob_event(CONTAINER, f"t1/$TaskOutput/{i}.txt", sequencer=i + 1)])
            await service.indexer.compactor.fold(CONTAINER)
        ahead = Walk(service)
        await ahead.step()
        future = datetime.now(timezone.utc) + timedelta(hours=1)
        assert await service.indexer.compactor.purge_feed(CONTAINER, future) == 2  # the newest row stays
        assert service.feed is not None
        with pytest.raises(CursorExpiredError):
            await service.feed.changes(CONTAINER, JOB, cursor=behind.cursor, start=True, where=Filter(), size=10)
        assert await ahead.step() == []
        fresh = Walk(service)
        got = await fresh.step()  # from the oldest kept
        assert [c["output"]["path"] for c in got] == ["2.txt"]

    run(azurite, body)


def test_a_long_poll_returns_on_a_local_commit_and_times_out_unchanged(azurite: Azurite) -> None:
    async def body(service: Service) -> None:
        walk = Walk(service)
        await walk.step()
        before = walk.cursor
        assert await walk.step(wait=0.2) == []  # nothing: the same cursor back
        assert walk.cursor == before
        waiting = asyncio.create_task(walk.step(wait=60))
        await asyncio.sleep(0)
        await ingest(service, [blob_event(CONTAINER, "t1/$TaskOutput/now.txt", sequencer=5)])
        got = await asyncio.wait_for(waiting, 30)  # bounds a hang only
        assert [c["output"]["path"] for c in got] == ["now.txt"]

    run(azurite, body)


def test_a_long_poll_sees_another_instances_commit_through_the_shared_poll(azurite: Azurite) -> None:
    async def body(reader: Service, writer: Service) -> None:
        assert reader.feed is not None
        reader.feed.poll_seconds = 0.05
        walk = Walk(reader)
        await walk.step()
        waiting = asyncio.create_task(walk.step(wait=60))
        await asyncio.sleep(0.01)
        await ingest(writer, [blob_event(CONTAINER, "t1/$TaskOutput/there.txt", sequencer=5)])
        got = await asyncio.wait_for(waiting, 30)
        assert [c["output"]["path"] for c in got] == ["there.txt"]

    run(azurite, body, services=2)


def test_a_random_history_walked_in_small_pages_replays_to_the_index(azurite: Azurite) -> None:
    workload = build_workload(CONTAINER, 400, seed=3)

    async def body(first: Service, second: Service) -> None:
        walks = [Walk(first, size=7), Walk(second, size=50, start=True)]
        for walk in walks:
            await walk.step()
        events = workload.events
        for start in range(0, len(events), 60):
            writer = (first, second)[start // 60 % 2]
            await ingest(writer, events[start : start + 60], batch=30)
            if start % 180 == 0:
                await writer.indexer.compactor.fold(CONTAINER, force=True)
            await walks[start // 60 % 2].step()
        await first.indexer.compactor.fold(CONTAINER, force=True)
        for walk in walks:
            await walk.step()
            assert walk.replay() == workload.live == await listed(first)
            assert_no_repeat(walk.changes)

    run(azurite, body, services=2)


def test_the_route_over_http(app: RunningApp) -> None:
    """Pages and nextLink, the key, 400 for a tampered or foreign cursor, 410 for an expired one,
    and a long-poll answered by a change posted while it waits."""
    job = "http-feed"
    container = container_name(job)
    url = f"/api/jobs/{job}/changes"
    assert httpx.get(app.url + url).status_code == 401
    start = app.get(url, params={"from": "start"})
    assert start.status_code == 200 and start.json()["value"] == []
    assert app.post_events([blob_event(container, f"t1/$TaskPreview/p{i}.png", sequencer=i + 1, size=i) for i in range(5)]
                           + [blob_event(container, "$JobOutput/summary.txt", sequencer=9)]).status_code == 200
    first = app.get(url, params={"cursor": start.json()["cursor"], "maxpagesize": 2}).json()
    assert len(first["value"]) == 2 and "nextLink" in first
    changes, body = list(first["value"]), first
    while "nextLink" in body:
        body = app.client.get(body["nextLink"]).json()
        assert len(body["value"]) <= 2
        changes += body["value"]
    assert [c["output"]["path"] for c in changes] == [f"p{i}.png" for i in range(5)] + ["summary.txt"]
    one = changes[0]
    assert one["change"] == "created" and one["at"] == one["output"]["indexedAt"]
    assert set(one["output"]) >= {"jobId", "taskId", "kind", "path", "blobName", "container", "url", "size",
                                  "contentType", "etag", "createdAt", "indexedAt"}
    assert "downloadUrl" not in one["output"] and one["output"]["jobId"] == job
    jobs_only = app.all_pages(url, **{"from": "start", "kind": "JobOutput"})
    assert [c["output"]["taskId"] for c in jobs_only] == [None]
    cursor = app.get(url).json()["cursor"]  # from now

    # Tampered, foreign (another filter, another job): 400. Bad parameters: 400.
    for params in ({"cursor": cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]},
                   {"cursor": cursor, "kind": "TaskPreview"}, {"cursor": "not-a-cursor"}, {"wait": "61"},
                   {"from": "yesterday"}, {"taskId": "bad task"}):
        answer = app.get(url, params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["code"] in ("InvalidCursor", "InvalidRequest", "InvalidTaskId")
    assert app.get("/api/jobs/another-job/changes", params={"cursor": cursor}).status_code == 400
    # Older than CHANGE_FEED_RETENTION_HOURS: 410 CursorExpired.
    scope = ChangeFeed.scope(container, Filter())
    old = CursorCodec(app.settings.token_signing_key).encode(scope, FeedCursor(0, 0, [], issued=1))
    expired = app.get(url, params={"cursor": old})
    assert expired.status_code == 410 and expired.json()["error"]["code"] == "CursorExpired"

    # A long-poll: held until the change arrives, then answered with it.
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(app.get, url, params={"cursor": cursor, "wait": "60"})
        assert app.post_events([blob_event(container, "t2/$TaskPreview/late.png", sequencer=20)]).status_code == 200
        answer = waiting.result(timeout=60)
    assert answer.status_code == 200
    assert [c["output"]["path"] for c in answer.json()["value"]] == ["late.png"]
    # Nothing more: a short wait answers the same cursor back, with nothing.
    idle = app.get(url, params={"cursor": answer.json()["cursor"], "wait": "0.2"}).json()
    assert idle == {"value": [], "cursor": answer.json()["cursor"]}


def test_eight_writers_with_overwrites_and_deletes_end_with_a_feed_equal_to_the_index(serve: Callable[..., RunningApp], settings) -> None:
    """8 app instances ingest one job (duplicates, reordering, overwrites, deletes) while a
    client follows the feed over HTTP with long-polls from the start: replayed, the feed equals
    the final index; no change twice; every blob's versions in sequencer order."""
    from ..support.workload import deliveries
    from .test_concurrency import WRITERS, run_writers

    job = "feed-writers"
    workload = build_workload(container_name(job), 2000, seed=17)
    streams = deliveries(workload.events, writers=WRITERS, total=10_000, batch=250, seed=18)
    apps = [serve(settings) for _ in range(WRITERS)]
    url = f"/api/jobs/{job}/changes"
    cursor = apps[0].get(url, params={"from": "start"}).json()["cursor"]
    walked: list[dict] = []
    done = threading.Event()

    def follow() -> None:
        nonlocal cursor
        reader = apps[-1]  # another instance than most writes land on: the shared poll finds them
        while True:
            finishing = done.is_set()
            body = reader.get(url, params={"cursor": cursor, "wait": "0" if finishing else "5"}).json()
            cursor = body["cursor"]
            walked.extend(body["value"])
            if finishing and not body["value"] and "nextLink" not in body:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    statuses = run_writers(apps, streams)
    done.set()
    follower.join(timeout=600)
    assert set(statuses) <= {200, 429, 503}
    listed = index_state(apps[0], job)[0]
    replayed: dict[str, int] = {}
    for change in walked:
        output = change["output"]
        if change["change"] in ("created", "updated", "admitted"):
            replayed[output["blobName"]] = output["size"]
        else:
            replayed.pop(output["blobName"], None)
    print(f"8 writers, 10000 events: {len(walked)} changes walked, {len(listed)} outputs listed")
    wrong = {n for n in set(replayed) | set(workload.live) if replayed.get(n) != workload.live.get(n)}
    history = {n: [(c["change"], c["output"]["size"], c["at"], c["output"]["etag"]) for c in walked if c["output"]["blobName"] == n] for n in wrong}
    events = {n: [(e["eventType"][-7:], e["data"]["sequencer"][-6:], e["data"].get("eTag")) for e in workload.events
                  if e["subject"].endswith("/" + n)] for n in wrong}
    assert replayed == listed == workload.live, (history, events)
    sequencer = {e["data"]["eTag"]: e["data"]["sequencer"] for e in workload.events if "eTag" in e["data"]}
    last: dict[str, str] = {}
    seen: set[tuple[str, str, str | None]] = set()
    for change in walked:
        output = change["output"]
        key = (output["blobName"], change["change"], output["etag"] if change["change"] != "deleted" else change["at"])
        assert key not in seen, f"a change walked twice: {key}"
        seen.add(key)
        if output["etag"]:
            seq = sequencer[output["etag"]]
            assert seq > last.get(output["blobName"], ""), f"{output['blobName']} went back in sequencer order"
            last[output["blobName"]] = seq
