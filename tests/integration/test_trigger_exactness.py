"""The deployed path under contention: 8 trigger instances, deliveries fanned out as invocations.

Each instance is its own ``Service`` (indexer, group commit, escrow, compactor, connection
pool), as separate Function instances would be. Each delivered batch runs as concurrent
single-event submissions to the instance's group commit, exactly what ``index_blob_event``
does per invocation; a batch with any failed invocation is delivered again whole, as Event
Grid does. The streams overlap, repeat and reorder creates, overwrites and deletes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from shared.domain.conventions import container_name
from shared.domain.events import SkippedEvent
from shared.service import Service
from shared.settings import Settings
from shared.store.envelopes import parse_event
from shared.store.errors import StorageBusyError

from ..support.stack import RunningApp
from ..support.workload import (
    assert_index_is_exact,
    assert_quota_held,
    build_workload,
    deliveries,
    rows_by_partition,
    spread,
)

INSTANCES = 8


async def deliver(service: Service, batch: list[dict]) -> int:
    """One delivery as the Event Grid extension runs it; the number of attempts it took."""
    events = [parse_event(e) for e in batch]
    assert not any(isinstance(e, SkippedEvent) for e in events)
    for attempt in range(1, 40):
        outcomes = await asyncio.gather(*(service.group_commit.submit(e) for e in events), return_exceptions=True)  # type: ignore[arg-type]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if not failures:
            return attempt
        assert all(isinstance(f, StorageBusyError) for f in failures), failures[:1]
        await asyncio.sleep(random.uniform(0.05, 0.3))
    raise AssertionError("a delivery kept failing")


def run_instances(settings: Settings, streams: list[list[list[dict]]]) -> int:
    async def run() -> int:
        services = [await Service.create(settings) for _ in streams]
        try:
            async def instance(service: Service, stream: list[list[dict]]) -> int:
                return sum([await deliver(service, batch) for batch in stream])

            attempts = await asyncio.gather(*(instance(s, st) for s, st in zip(services, streams, strict=True)))
            return sum(attempts) - sum(len(st) for st in streams)
        finally:
            for service in services:
                await service.close()  # drains each instance's pending fold

    return asyncio.run(run())


def test_eight_trigger_instances_end_with_exact_usage(settings: Settings, serve: Callable[..., RunningApp]) -> None:
    job = "trigger-concurrent-job"
    workload = build_workload(container_name(job), 1500, seed=17)
    streams = deliveries(workload.events, writers=INSTANCES, total=6_000, batch=100, seed=18)
    redelivered = run_instances(settings, streams)
    print(f"8 trigger instances, 6000 events: {redelivered} redeliveries")
    assert_index_is_exact(serve(settings), job, workload)


@pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])
def test_eight_trigger_instances_under_a_job_wide_quota(settings: Settings, serve: Callable[..., RunningApp],
                                                        partitions: int) -> None:
    job = f"trigger-quota-job-{partitions}"
    workload = build_workload(container_name(job), 600, seed=19)
    limit = len(workload.live) * 2 // 3
    app = serve(settings)
    spread(app, job, partitions)
    assert app.client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": limit}).status_code == 200
    run_instances(settings, deliveries(workload.events, writers=INSTANCES, total=3_000, batch=100, seed=20))

    assert_quota_held(app, job, workload, limit)
    assert len(rows_by_partition(app, container_name(job))) == partitions
