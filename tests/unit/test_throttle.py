"""Throttling (SPEC §5): the AIMD limiter alone, in process (the retry configuration seen on the
wire is in tests/integration/test_throttle.py)."""

from __future__ import annotations

import asyncio

from shared.store.throttle import AdaptiveLimiter


def test_limiter_halves_once_per_cooldown_and_grows_back_slowly() -> None:
    limiter = AdaptiveLimiter(16, cooldown_seconds=3600)
    limiter.on_throttle()
    assert limiter.limit == 8
    limiter.on_throttle()  # the same burst of throttled replies counts once
    assert limiter.limit == 8
    successes = 0
    while limiter.limit < 16:
        limiter.on_success()
        successes += 1
    assert successes >= 8 * 7  # about one slot per window of successes: slow
    limiter = AdaptiveLimiter(16, cooldown_seconds=0)
    for _ in range(10):
        limiter.on_throttle()
    assert limiter.limit == limiter.min_limit == 1


def test_limiter_bounds_concurrency() -> None:
    async def run() -> int:
        limiter = AdaptiveLimiter(4, cooldown_seconds=0)
        peak = 0

        async def call(i: int) -> None:
            nonlocal peak
            async with limiter:
                peak = max(peak, limiter.in_flight)
                if i == 0:
                    limiter.on_throttle()
                await asyncio.sleep(0.01)

        await asyncio.gather(*(call(i) for i in range(40)))
        return peak

    assert asyncio.run(run()) <= 4


def test_a_freed_slot_goes_to_the_longest_waiting_caller_and_cancelled_waiters_leak_none() -> None:
    async def run() -> tuple[list[int], int, int]:
        limiter = AdaptiveLimiter(2, cooldown_seconds=3600)
        gate = asyncio.Event()
        order: list[int] = []

        async def call(i: int) -> None:
            async with limiter:
                order.append(i)
                await gate.wait()

        tasks = [asyncio.create_task(call(i)) for i in range(6)]
        for _ in range(5):
            await asyncio.sleep(0)
        tasks[3].cancel()  # waiting: leaves the queue
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A slot granted to a caller cancelled before it ran is handed on, not lost.
        granted = asyncio.create_task(call(9))
        blockers = [asyncio.create_task(call(i)) for i in (7, 8)]
        gate.clear()
        for _ in range(5):
            await asyncio.sleep(0)
        gate.set()
        granted.cancel()
        await asyncio.gather(granted, *blockers, return_exceptions=True)
        return order, limiter.in_flight, len(limiter._waiters)

    order, in_flight, waiting = asyncio.run(run())
    assert order[:5] == [0, 1, 2, 4, 5]  # first come, first served; the cancelled one never ran
    assert (in_flight, waiting) == (0, 0)
