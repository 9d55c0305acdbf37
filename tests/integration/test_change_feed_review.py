"""Adversarial review of the change feed: interleavings that broke a guarantee (real Azurite).

Each test drives one interleaving step by step (a writer committing between two responses of a
fold's ledger read, a walk continued past the retention, a cursor taken from ``now`` while more
deltas are pending than a cursor remembers) and asserts the guarantee of docs/change-feed.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

import shared.read.changes as changes_module
from devtools.azurite import Azurite
from shared.domain import keys
from shared.domain.feed import FeedChange
from shared.domain.ledger import MAX_ROUND_DELTAS, Delta
from shared.domain.planning import MAX_BATCH_OPERATIONS, Op, Operation
from shared.domain.rows import Entity
from shared.read.feed import MAX_DELIVERED, READ_ROWS, Filter
from shared.service import Service
from shared.store.envelopes import parse_events

from ..helpers import blob_event
from .test_change_feed import CONTAINER, CrashingCompactor, Died, Walk, ingest, listed, run


def applied(listing: dict[str, int], changes: list[dict[str, Any]]) -> dict[str, int]:
    """``listing`` with ``changes`` applied in order (blob name -> size)."""
    state = dict(listing)
    for change in changes:
        output = change["output"]
        if change["change"] in ("created", "updated", "admitted"):
            state[output["blobName"]] = output["size"]
        else:
            state.pop(output["blobName"], None)
    return state


def test_a_cursor_from_now_with_more_pending_deltas_than_it_remembers_replays_to_the_index(azurite: Azurite) -> None:
    """``from=now`` while more than ``MAX_DELIVERED`` deltas are pending: the cursor cannot name
    them all. It used to keep the *newest* 200, so an old pending ``created`` came again after
    the fold while the ``deleted`` that followed it (remembered) did not: the client's listing
    showed a deleted output as live. The cursor keeps a prefix of the pending order instead, so
    every blob's changes that come again are a suffix of its history and the listing converges."""

    async def body(service: Service) -> None:
        await ingest(service, [blob_event(CONTAINER, "t0/$TaskOutput/b.txt", sequencer=1, size=5)])
        for i in range(MAX_DELIVERED):
            await ingest(service, [blob_event(CONTAINER, f"t1/$TaskOutput/f{i}.txt", sequencer=10 + i, size=i)])
        await ingest(service, [blob_event(CONTAINER, "t0/$TaskOutput/b.txt", sequencer=2, deleted=True)])
        before = await listed(service)  # a listing read before the cursor is taken
        assert "t0/$TaskOutput/b.txt" not in before
        walk = Walk(service, start=False)
        assert await walk.step() == []
        await service.indexer.compactor.fold(CONTAINER)
        await walk.step()
        assert applied(before, walk.changes) == await listed(service)

    run(azurite, body)


def test_a_walk_that_goes_on_past_the_retention_is_not_expired(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cursor returned an hour ago by a walk that began more than ``CHANGE_FEED_RETENTION_HOURS``
    ago, whose rows are all kept, was ``410 CursorExpired``: the cursor carried the walk's start
    (``issued``), not its own. A ``watch`` following a job for a week died with it."""
    clock = [datetime.now(timezone.utc).timestamp()]
    monkeypatch.setattr(changes_module, "time", SimpleNamespace(time=lambda: clock[0]))

    async def body(service: Service) -> None:
        assert service.feed is not None
        hours = service.feed.retention_seconds // 3600
        walk = Walk(service)
        assert await walk.step() == []
        for step in range(3):
            await ingest(service, [blob_event(CONTAINER, f"t1/$TaskOutput/s{step}.txt", sequencer=step + 1)])
            clock[0] += 3600 * (hours // 2 + 1)  # each cursor is used half a retention after it was returned
            assert [c["output"]["path"] for c in await walk.step()] == [f"s{step}.txt"]

    run(azurite, body)


def _delta(key: str, at: datetime, *changes: FeedChange) -> Entity:
    return Delta(key, at=at, changes=list(changes)).entity()


def _output_change(change: str, seq: int, name: str) -> FeedChange:
    return FeedChange(change, f"{seq:032d}", "t1", "TaskOutput", name, f"t1/$TaskOutput/{name}", size=seq)


def test_a_fold_whose_ledger_read_spans_responses_keeps_each_blobs_order(azurite: Azurite) -> None:
    """More than 1,000 rows under ``S|`` (deltas pending behind a burst): the fold reads the
    ledger over several responses, each its own snapshot. Between the first and second response
    of every ledger read, a writer commits a blob's ``created`` (key in the first response's
    range) and then its ``updated`` (key in the second's). A round built from such a read used
    to hold the ``updated`` without the ``created``, sequence it first, and give the ``created``
    a later seq: a walk saw ``updated`` then ``created`` (a replay listed the blob at its old
    size). Each blob's changes must come in sequencer order, and all of them."""
    now = datetime.now(timezone.utc)

    async def body(service: Service) -> None:
        store = service.indexer.compactor.store
        later = now + timedelta(hours=1)  # other outputs' deltas, ordered after the blobs' in a round
        fillers = [_delta(keys.delta_key(f"{1 + i // 1000:x}{i % 1000:031x}"), later,
                          _output_change("created", 1, f"f{i}.txt")) for i in range(1005)]
        for start in range(0, len(fillers), MAX_BATCH_OPERATIONS):
            await store.submit(CONTAINER, [Operation(Op.CREATE, e) for e in fillers[start : start + MAX_BATCH_OPERATIONS]])
        real = store.query_responses
        blobs: list[str] = []
        low, _ = keys.prefix_range(keys.shard_prefix())

        async def two_responses(partition: str, start: str | None, *args: Any, **kwargs: Any) -> AsyncIterator[list[Entity]]:
            first = True
            async for response in real(partition, start, *args, **kwargs):
                yield response
                if first and start == low and len(blobs) < 6:
                    # Between the first and second response of this ledger read (whichever read
                    # the round is built from): keys before and after every filler's.
                    name = f"b{len(blobs)}.txt"
                    blobs.append(name)
                    await store.submit(CONTAINER, [Operation(Op.CREATE, _delta(
                        keys.delta_key(f"0{len(blobs):031x}"), now, _output_change("created", 10, name)))])
                    await store.submit(CONTAINER, [Operation(Op.CREATE, _delta(
                        keys.delta_key(f"f{len(blobs):031x}"), now + timedelta(milliseconds=1),
                        _output_change("updated", 20, name)))])
                first = False

        store.query_responses = two_responses  # type: ignore[method-assign,assignment]
        try:
            while await service.indexer.compactor.fold(CONTAINER):
                pass
        finally:
            store.query_responses = real  # type: ignore[method-assign]
        await service.indexer.compactor.fold(CONTAINER)
        assert len(blobs) >= 2  # the fold read the ledger over several responses more than once
        walk = Walk(service, start=True, size=5000)
        await walk.step()
        for name in blobs:
            assert [c["change"] for c in walk.changes if c["output"]["path"] == name] == ["created", "updated"], name

    run(azurite, body)


def test_a_round_capped_below_the_pending_deltas_never_takes_a_blobs_later_change_alone(azurite: Azurite) -> None:
    """More deltas pending than a round takes (``MAX_ROUND_DELTAS``): the round takes a prefix of
    the feed's order. A blob's ``updated`` indexed by an instance whose clock is an hour behind
    sorts first by indexed time, its ``created`` (a clock an hour ahead) last: a round that took
    the oldest by indexed time would sequence the ``updated`` and leave the ``created`` to the
    next round. The prefix holds every earlier change of the blobs it holds."""
    now = datetime.now(timezone.utc)

    async def body(service: Service) -> None:
        store = service.indexer.compactor.store
        rows = [_delta(keys.delta_key(f"1{i:031x}"), now + timedelta(milliseconds=i), _output_change("created", 1, f"f{i}.txt"))
                for i in range(MAX_ROUND_DELTAS + 50)]
        rows.append(_delta(keys.delta_key("2" * 32), now + timedelta(hours=1), _output_change("created", 10, "b.txt")))
        rows.append(_delta(keys.delta_key("3" * 32), now - timedelta(hours=1), _output_change("updated", 20, "b.txt")))
        for start in range(0, len(rows), MAX_BATCH_OPERATIONS):
            await store.submit(CONTAINER, [Operation(Op.CREATE, e) for e in rows[start : start + MAX_BATCH_OPERATIONS]])
        walk = Walk(service, size=5000)
        rounds = service.indexer.compactor.rounds
        await service.indexer.compactor.fold(CONTAINER)
        assert service.indexer.compactor.rounds - rounds == 2  # the cap cut the deltas in two rounds
        await walk.step()
        assert [c["change"] for c in walk.changes if c["output"]["path"] == "b.txt"] == ["created", "updated"]
        assert len(walk.changes) == len(rows)

    run(azurite, body)


def test_a_reader_whose_ledger_spans_responses_delivers_no_pending_change_out_of_order(azurite: Azurite) -> None:
    """More than 1,000 rows under ``S|``: a reader's one response of the ledger holds a blob's
    ``updated`` (its delta key in that response's range) but not its ``created`` (a key past it).
    Delivering the pending deltas of that response would hand out the ``updated`` now and the
    ``created`` on a later request. Such a reader delivers feed rows only; once the folds catch
    up, the walk gets the blob's changes in order."""
    now = datetime.now(timezone.utc)

    async def body(service: Service) -> None:
        store = service.indexer.compactor.store
        fillers = [_delta(keys.delta_key(f"{1 + i // 1000:x}{i % 1000:031x}"), now, _output_change("created", 1, f"f{i}.txt"))
                   for i in range(1005)]
        for start in range(0, len(fillers), MAX_BATCH_OPERATIONS):
            await store.submit(CONTAINER, [Operation(Op.CREATE, e) for e in fillers[start : start + MAX_BATCH_OPERATIONS]])
        walk = Walk(service, start=False, size=5000)
        assert await walk.step() == []
        await store.submit(CONTAINER, [Operation(Op.CREATE, _delta(keys.delta_key("f" * 32), now, _output_change("created", 10, "b.txt")))])
        await store.submit(CONTAINER, [Operation(Op.CREATE, _delta(keys.delta_key("0" * 32), now, _output_change("updated", 20, "b.txt")))])
        assert await walk.step() == []  # the ledger took more than one response: nothing pending
        while await service.indexer.compactor.fold(CONTAINER):
            await walk.step()
        await walk.step()
        assert [c["change"] for c in walk.changes if c["output"]["path"] == "b.txt"] == ["created", "updated"]

    run(azurite, body)


def test_from_start_while_a_purge_runs_between_the_two_queries_of_its_read_is_not_expired(azurite: Azurite) -> None:
    """A request without a cursor (``from=start``) read the ledger (oldest kept: 0), then a purge
    moved the oldest kept on and deleted rows before the feed query: the request was
    ``410 CursorExpired``, though it sent no cursor that could have expired. It starts again
    from the oldest kept instead."""

    async def body(service: Service) -> None:
        for i in range(3):
            await ingest(service, [blob_event(CONTAINER, f"t1/$TaskOutput/{i}.txt", sequencer=i + 1)])
            await service.indexer.compactor.fold(CONTAINER)
        assert service.feed is not None
        store = service.feed.reader.store
        real = store.query_response
        purged = 0

        async def then_purge(*args: Any, **kwargs: Any) -> Any:
            nonlocal purged
            answer = await real(*args, **kwargs)
            if not purged:  # the ledger is read; the oldest rows are purged before the feed is
                purged = await service.indexer.compactor.purge_feed(CONTAINER, datetime.now(timezone.utc) + timedelta(hours=1))
            return answer

        store.query_response = then_purge  # type: ignore[method-assign]
        try:
            walk = Walk(service)
            got = await walk.step()
        finally:
            store.query_response = real  # type: ignore[method-assign]
        assert purged == 2
        assert [c["output"]["path"] for c in got] == ["2.txt"]

    run(azurite, body)


def test_a_readmission_that_admits_nothing_writes_no_change(azurite: Azurite) -> None:
    """A rejected output re-evaluated after a limit change that still rejects it changes nothing a
    listing or the rejections show; it used to write a second ``rejected`` change (each call of
    ``PUT .../quota`` repeated every rejection in the feed and in ``watch``)."""

    async def body(service: Service) -> None:
        await service.quotas.set_limits(CONTAINER, {"max_outputs": 1})
        await ingest(service, [blob_event(CONTAINER, "t1/$TaskOutput/a.txt", sequencer=1),
                               blob_event(CONTAINER, "t1/$TaskOutput/b.txt", sequencer=2)])
        walk = Walk(service)
        assert sorted(c["change"] for c in await walk.step()) == ["created", "rejected"]
        await service.quotas.set_limits(CONTAINER, {"max_outputs": 1, "max_bytes": 10**9})
        assert await walk.step() == []
        await service.indexer.compactor.fold(CONTAINER)
        assert await walk.step() == []

    run(azurite, body)


def test_pending_changes_wait_for_the_sequenced_rows_not_written_yet(azurite: Azurite) -> None:
    """A round allocated its seqs (job fold done) and its instance died before writing its feed
    rows: the round's deltas are no longer pending, and their rows are not in the feed yet.
    A later delta of the same blob (here its delete), pending, was delivered at once, and the
    blob's ``created`` came after it once the round was taken over: out of the blob's order,
    and a replay listed a deleted output. Pending deltas now wait until the feed rows read reach
    the feed's end as the ledger read saw it."""

    async def body(first: Service, second: Service) -> None:
        walk = Walk(first)
        assert await walk.step() == []
        await ingest(first, [blob_event(CONTAINER, "t1/$TaskOutput/b.txt", sequencer=1, size=5)])
        dying = CrashingCompactor(first.store, "dying", steps=2)  # the task fold, the job fold
        with pytest.raises(Died):
            await dying.fold(CONTAINER)
        await ingest(second, [blob_event(CONTAINER, "t1/$TaskOutput/b.txt", sequencer=2, deleted=True)])
        await walk.step()
        await second.indexer.compactor.fold(CONTAINER, force=True)  # the round taken over
        await walk.step()
        await second.indexer.compactor.fold(CONTAINER)
        await walk.step()
        assert [c["change"] for c in walk.changes] == ["created", "deleted"]
        assert walk.replay() == await listed(first) == {}

    run(azurite, body, services=2)


def test_a_waiter_at_the_end_is_not_sent_back_by_a_walk_far_behind_sharing_its_read(azurite: Azurite) -> None:
    """Waiters of a job share one read from the lowest seq they need (``JobWatch.shared_tail``),
    which holds at most ``READ_ROWS`` rows. A waiter at the feed's end sharing it with a walk
    more than that behind got rows all below its cursor: an empty page with ``more`` at once,
    instead of waiting (its client spun on ``nextLink`` while the other walk caught up). It now
    reads from its own cursor when the shared read does not reach it."""

    async def body(service: Service) -> None:
        for start in range(0, READ_ROWS + 1):
            await service.ingest(parse_events([blob_event(CONTAINER, f"t1/$TaskOutput/o{start}.txt", sequencer=start + 1)]))
        await service.indexer.compactor.fold(CONTAINER)
        ahead = Walk(service, size=5000)
        await ahead.step()
        assert len(ahead.changes) == READ_ROWS + 1
        end, far = await asyncio.gather(ahead_request(service, ahead.cursor), behind_request(service))
        assert far["more"] and len(far["value"]) == READ_ROWS
        assert (end["value"], end["more"], end["cursor"]) == ([], False, ahead.cursor)

    run(azurite, body)


async def ahead_request(service: Service, cursor: str | None) -> dict[str, Any]:
    assert service.feed is not None
    return await service.feed.changes(CONTAINER, "feed-job", cursor=cursor, start=True, where=Filter(), size=5000, wait=0.2)


async def behind_request(service: Service) -> dict[str, Any]:
    assert service.feed is not None
    return await service.feed.changes(CONTAINER, "feed-job", cursor=None, start=True, where=Filter(), size=5000, wait=0.2)
