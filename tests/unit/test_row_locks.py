"""RowLocks: in-process exclusion per index row (no I/O)."""

from __future__ import annotations

import asyncio

from shared.store.row_locks import RowLocks


def test_holders_of_a_shared_row_take_turns_and_others_do_not_wait() -> None:
    async def scenario() -> list[str]:
        locks = RowLocks()
        order: list[str] = []
        first_inside = asyncio.Event()
        release_first = asyncio.Event()

        async def first() -> None:
            async with locks.hold([("job", "U|a"), ("job", "U|b")]):
                order.append("first in")
                first_inside.set()
                await release_first.wait()
                order.append("first out")

        async def second() -> None:
            await first_inside.wait()
            async with locks.hold([("job", "U|b")]):
                order.append("second in")

        async def unrelated() -> None:
            await first_inside.wait()
            async with locks.hold([("job", "U|c")]):
                order.append("unrelated in")
            release_first.set()

        await asyncio.gather(first(), second(), unrelated())
        assert len(locks) == 0, "locks nobody holds or awaits are dropped"
        return order

    assert asyncio.run(scenario()) == ["first in", "unrelated in", "first out", "second in"]


def test_opposite_orders_cannot_deadlock() -> None:
    async def scenario() -> int:
        locks = RowLocks()
        done = 0

        async def worker(keys: list[str]) -> None:
            nonlocal done
            for _ in range(50):
                async with locks.hold(keys):
                    await asyncio.sleep(0)
            done += 1

        await asyncio.wait_for(asyncio.gather(worker(["a", "b", "c"]), worker(["c", "b", "a"]), worker(["b", "a"])), 10)
        return done

    assert asyncio.run(scenario()) == 3


def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    async def scenario() -> int:
        locks = RowLocks()
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with locks.hold(["a"]):
                holding.set()
                await release.wait()

        task = asyncio.create_task(holder())
        await holding.wait()
        waiter = asyncio.create_task(locks.hold(["a", "b"]).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        release.set()
        await task
        return len(locks)

    assert asyncio.run(scenario()) == 0
