"""Waking the change feed's waiters (``shared.read.waiting.JobWatch``), interleavings driven step by
step on one event loop: no storage, no timing (a deadline already passed means "would wait").

A local commit wakes only the waiters whose filter keeps one of its changes; the version a
waiter takes before its read catches a commit between its read and its wait; a waiter that
registers while a commit wakes others is not woken by a commit older than its read; a poll
wakes every waiter for a fold or another instance's delta, none for the deltas committed here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from shared.domain.feed import ChangeSet, FeedChange
from shared.read.feed import FeedReader, Filter, Tail
from shared.read.waiting import JobWatch

T0 = datetime(2026, 12, 5, tzinfo=timezone.utc)
OUT_T1 = Filter("TaskOutput", "t1").key
LOG_T1 = Filter("TaskLog", "t1").key
OUT_T2 = Filter("TaskOutput", "T2").key


def delta(name: str, *outputs: tuple[str, str | None]) -> ChangeSet:
    return ChangeSet(f"S|d|{name}", T0, tuple(FeedChange("created", "1", task, kind, f"p{n}", f"b{n}")
                                             for n, (kind, task) in enumerate(outputs)))


def tail(next_seq: int = 0, *pending: ChangeSet) -> Tail:
    return Tail(next_seq, 0, list(pending), [], next_seq, True)


def run(body: Callable[[JobWatch], Awaitable[None]]) -> None:
    async def main() -> None:
        await body(JobWatch(FeedReader(store=None), "job-x", 3600, lambda _: None))  # type: ignore[arg-type]

    asyncio.run(main())


async def turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)  # a turn of the loop: whatever is ready runs


def now(watch: JobWatch) -> float:
    return asyncio.get_running_loop().time()


async def parked(watch: JobWatch, key: Any, read: Tail) -> asyncio.Task[bool]:
    """A waiter of ``key`` that read ``read``, waiting (its event registered)."""
    version = watch.version()
    task = asyncio.create_task(watch.changed_since(version, read, now(watch) + 3600, key))
    while key not in watch._events:
        await asyncio.sleep(0)
    return task


def test_a_commit_between_a_waiters_read_and_its_wait_is_seen_if_its_filter_keeps_it() -> None:
    async def body(watch: JobWatch) -> None:
        version = watch.version()  # before the read
        read = tail()
        watch.notify(delta("a", ("TaskOutput", "T1")))  # committed while the read was under way
        # The waiter of t1's TaskOutput (any case), of TaskOutput, of t1, of anything: at once.
        for key in (OUT_T1, Filter("TaskOutput").key, Filter(task_id="t1").key, Filter().key):
            assert await watch.changed_since(version, read, now(watch) + 3600, key) is True
        # Another task or kind: nothing for it, it would wait (here: its deadline has passed).
        for key in (LOG_T1, OUT_T2, Filter("TaskLog").key):
            assert await watch.changed_since(version, read, now(watch), key) is False
        # A commit whose changes are not known wakes every filter.
        watch.notify()
        assert await watch.changed_since(version, read, now(watch), LOG_T1) is True

    run(body)


def test_a_commit_wakes_only_the_waiters_whose_filter_keeps_one_of_its_changes() -> None:
    async def body(watch: JobWatch) -> None:
        read = tail()
        out_t1, log_t1, out_t2, anything = [await parked(watch, key, read) for key in (OUT_T1, LOG_T1, OUT_T2, Filter().key)]
        watch.notify(delta("a", ("TaskOutput", "t1"), ("JobOutput", None)))
        await turns()
        assert out_t1.done() and out_t1.result() is True
        assert anything.done() and anything.result() is True
        assert not log_t1.done() and not out_t2.done()  # asleep: never resumed
        watch.notify(delta("b", ("TaskOutput", "t2")))
        await turns()
        assert out_t2.done() and out_t2.result() is True and not log_t1.done()
        log_t1.cancel()

    run(body)


def test_a_waiter_registering_while_a_commit_wakes_is_not_woken_by_a_commit_older_than_its_read() -> None:
    async def body(watch: JobWatch) -> None:
        first = await parked(watch, OUT_T1, tail())
        watch.notify(delta("a", ("TaskOutput", "t1")))  # wakes ``first``: its event is set and gone
        # Before ``first`` runs again, a second waiter of the same filter reads (after the
        # commit: its version has it) and registers a new event for the filter.
        second = await parked(watch, OUT_T1, tail(0, delta("a", ("TaskOutput", "t1"))))
        await turns()
        assert first.done() and first.result() is True
        assert not second.done()  # the commit is in what it read: nothing new for it
        watch.notify(delta("b", ("TaskOutput", "t1")))
        await turns()
        assert second.done() and second.result() is True

    run(body)


def test_a_poll_wakes_every_waiter_for_a_fold_or_another_instances_delta_and_none_for_local_deltas() -> None:
    async def body(watch: JobWatch) -> None:
        watch.polled_state(0, frozenset())  # the first poll
        read = tail()
        waiter = await parked(watch, LOG_T1, read)
        local = delta("mine", ("TaskOutput", "t1"))
        watch.notify(local)  # not this waiter's filter: it sleeps on
        generation = watch.poll_generation
        watch.polled_state(0, frozenset({local.delta_id}))  # the poll finds the local delta
        await turns()
        assert not waiter.done()
        # The local delta folded away, the feed's end unchanged: nothing new.
        watch.polled_state(0, frozenset())
        await turns()
        assert not waiter.done()
        assert watch.poll_generation == generation  # no waiter was even woken to look
        # Another instance's delta: every waiter looks, and this one has not read it.
        watch.polled_state(0, frozenset({"S|d|theirs"}))
        await turns()
        assert waiter.done() and waiter.result() is True
        # One that read that delta already (pending) looks and sleeps on; a fold moves the end.
        after = await parked(watch, LOG_T1, tail(0, ChangeSet("S|d|theirs", T0, ())))
        again = delta("mine-again", ("TaskOutput", "t1"))
        watch.notify(again)
        watch.polled_state(0, frozenset({"S|d|theirs", again.delta_id}))
        await turns()
        assert not after.done()
        watch.polled_state(3, frozenset())
        await turns()
        assert after.done() and after.result() is True

    run(body)
