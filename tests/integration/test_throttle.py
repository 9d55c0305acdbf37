"""Throttling (SPEC §5): the AIMD limiter, and the one retry configuration seen on the wire."""

from __future__ import annotations

import asyncio

import pytest

from devtools.azurite import Azurite
from shared.service import Service
from shared.store.errors import StorageBusyError
from shared.store.throttle import AdaptiveLimiter

from .conftest import settings_for
from .faultproxy import FaultProxy


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


@pytest.fixture
def busy_proxy(azurite: Azurite):
    proxy = FaultProxy(f"http://127.0.0.1:{azurite.table_port}", faults=("busy",), seed=1).start()
    yield proxy
    proxy.stop()


def test_every_attempt_of_the_one_retry_config_shrinks_the_limiter(azurite: Azurite, busy_proxy: FaultProxy) -> None:
    settings = settings_for(
        azurite,
        INDEX_STORAGE=busy_proxy.connection_string(azurite.connection_string, azurite.table_port),
        STORAGE_RETRY_TOTAL="4",
        STORAGE_MAX_CONCURRENCY="8",
    )

    async def run() -> tuple[int, int, int]:
        service = await Service.create(settings)
        try:
            limiter = service.store.limiter
            limiter._cooldown = 0  # noqa: SLF001 - count every throttled reply in this test
            busy_proxy.rate = 1.0
            with pytest.raises(StorageBusyError):
                await service.store.get("p", "r")
            return limiter.throttle_signals, limiter.limit, service.blobs._config.retry_policy.total_retries  # noqa: SLF001
        finally:
            busy_proxy.rate = 0.0
            await service.close()

    signals, limit, blob_retries = asyncio.run(run())
    assert busy_proxy.injected["busy"] == 5  # 1 try + STORAGE_RETRY_TOTAL retries, then handed back
    assert signals == 5
    assert limit == 1  # 8 halved on each throttled reply
    assert blob_retries == 4  # the blob client is built from the same settings
