"""Exact usage under concurrent writers (SPEC §4): 8 app instances, one table, one job.

Each writer is its own app (its own indexer, caches, limiter and connection pool), as
separate Function instances would be; all share one index table. Their streams overlap,
repeat and reorder the same events (creates, overwrites with new sizes, deletes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shared.conventions import container_name

from ..support.stack import RunningApp
from ..support.workload import Sender, assert_index_is_exact, assert_quota_held, build_workload, deliveries, index_state

WRITERS = 8


def run_writers(apps: list[RunningApp], streams: list[list[list[dict]]]) -> Counter[int]:
    senders = [Sender(app) for app in apps]
    with ThreadPoolExecutor(len(streams)) as pool:
        for future in [pool.submit(s.send_all, stream) for s, stream in zip(senders, streams, strict=True)]:
            future.result()
    total: Counter[int] = Counter()
    for sender in senders:
        total.update(sender.statuses)
    return total


def test_eight_writers_20000_events_end_with_exact_usage(serve: Callable[..., RunningApp], settings) -> None:
    job = "concurrent-job"
    workload = build_workload(container_name(job), 4000, seed=7)
    streams = deliveries(workload.events, writers=WRITERS, total=20_000, batch=500, seed=8)
    assert sum(len(b) for s in streams for b in s) == 20_000
    apps = [serve(settings) for _ in range(WRITERS)]
    statuses = run_writers(apps, streams)
    print(f"8 writers, 20000 events: answers {dict(statuses)}")
    assert set(statuses) <= {200, 429, 503}
    # Every instance sees the same exact index.
    for app in (apps[0], apps[-1]):
        assert_index_is_exact(app, job, workload)
    # Redelivering everything once more changes nothing.
    before = index_state(apps[0], job)
    run_writers(apps[:2], deliveries(workload.events, writers=2, total=len(workload.events), batch=500, seed=9))
    assert index_state(apps[0], job)[:2] == before[:2]
    assert index_state(apps[0], job)[2]["usage"] == before[2]["usage"]


def test_eight_writers_under_a_job_wide_quota(serve: Callable[..., RunningApp], settings) -> None:
    job = "concurrent-quota-job"
    workload = build_workload(container_name(job), 1000, seed=11)
    limit = len(workload.live) * 2 // 3
    streams = deliveries(workload.events, writers=WRITERS, total=5_000, batch=500, seed=12)
    apps = [serve(settings) for _ in range(WRITERS)]
    assert apps[0].client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": limit}).status_code == 200
    statuses = run_writers(apps, streams)
    print(f"8 writers under a quota, 5000 events: answers {dict(statuses)}")
    assert set(statuses) <= {200, 429, 503}

    assert_quota_held(apps[3], job, workload, limit)

    # Lifting the limit admits every rejected output at once: exactly the truth.
    assert apps[5].client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": 0}).status_code == 200
    assert_index_is_exact(apps[0], job, workload)
