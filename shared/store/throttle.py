"""Bounded, adaptive concurrency against storage (SPEC §5).

An AIMD limiter: every storage call takes a slot; the number of slots halves when storage
answers 429/503 (at most once per cool-down, so one burst of throttled replies counts once)
and grows back by about one slot per full window of successful calls. A throttled account
therefore sees this instance's load drop at once instead of a retry storm.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from types import TracebackType

THROTTLE_STATUSES = frozenset({429, 503})


class AdaptiveLimiter:
    """An async semaphore whose size adapts to storage's throttling signals."""

    def __init__(self, max_limit: int, *, min_limit: int = 1, cooldown_seconds: float = 1.0) -> None:
        if max_limit < min_limit:
            raise ValueError("max_limit must be at least min_limit")
        self.max_limit = max_limit
        self.min_limit = min_limit
        self._limit = float(max_limit)
        self._cooldown = cooldown_seconds
        self._last_decrease = float("-inf")
        self._in_flight = 0
        # Callers waiting for a slot, first come first served. A freed slot wakes one of them:
        # with a condition every release woke every waiter (each to re-take its lock and
        # check), so a delivery of 1,000 jobs queuing 1,000 requests spent its time waking.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.throttle_signals = 0

    @property
    def limit(self) -> int:
        return max(self.min_limit, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> AdaptiveLimiter:
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return self
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot  # granted: ``_grant`` counted it in flight
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self._release()  # granted, then cancelled before it ran: give it on
            elif slot in self._waiters:  # (``_grant`` drops a cancelled one it comes across)
                self._waiters.remove(slot)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.on_success()
        self._release()

    def _release(self) -> None:
        self._in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to the longest waiting callers (the limit may have grown or shrunk)."""
        while self._waiters and self._in_flight < self.limit:
            slot = self._waiters.popleft()
            if not slot.done():
                self._in_flight += 1
                slot.set_result(None)

    def on_throttle(self) -> None:
        """Storage said slow down: halve the window (once per cool-down)."""
        self.throttle_signals += 1
        now = time.monotonic()
        if now - self._last_decrease >= self._cooldown:
            self._last_decrease = now
            self._limit = max(float(self.min_limit), self._limit / 2)

    def on_success(self) -> None:
        """Additive increase: about one more slot per window of successful calls."""
        if self._limit < self.max_limit:
            self._limit = min(float(self.max_limit), self._limit + 1.0 / max(self._limit, 1.0))
