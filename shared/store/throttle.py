"""Bounded, adaptive concurrency against storage (SPEC §5).

An AIMD limiter: every storage call takes a slot; the number of slots halves when storage
answers 429/503 (at most once per cool-down, so one burst of throttled replies counts once)
and grows back by about one slot per full window of successful calls. A throttled account
therefore sees this instance's load drop at once instead of a retry storm.
"""

from __future__ import annotations

import asyncio
import time
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
        self._condition: asyncio.Condition | None = None
        self.throttle_signals = 0

    @property
    def limit(self) -> int:
        return max(self.min_limit, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _cond(self) -> asyncio.Condition:
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition

    async def __aenter__(self) -> AdaptiveLimiter:
        cond = self._cond()
        async with cond:
            await cond.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cond = self._cond()
        async with cond:
            self._in_flight -= 1
            if exc is None:
                self.on_success()
            cond.notify_all()

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
