"""Throttling (SPEC §5): the one retry configuration seen on the wire, each attempt shrinking the AIMD
limiter (the limiter alone is in tests/unit/test_throttle.py)."""

from __future__ import annotations

import asyncio

import pytest

from devtools.azurite import Azurite
from shared.service import Service
from shared.store.errors import StorageBusyError

from ..support.faultproxy import FaultProxy
from ..support.stack import settings_for


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
            limiter._cooldown = 0
            busy_proxy.rate = 1.0
            with pytest.raises(StorageBusyError):
                await service.store.get("p", "r")
            return limiter.throttle_signals, limiter.limit, service.blobs._config.retry_policy.total_retries
        finally:
            busy_proxy.rate = 0.0
            await service.close()

    signals, limit, blob_retries = asyncio.run(run())
    assert busy_proxy.injected["busy"] == 5  # 1 try + STORAGE_RETRY_TOTAL retries, then handed back
    assert signals == 5
    assert limit == 1  # 8 halved on each throttled reply
    assert blob_retries == 4  # the blob client is built from the same settings
