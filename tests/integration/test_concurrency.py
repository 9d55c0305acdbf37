"""Exact usage under concurrent writers (SPEC §4): 8 app instances, one table, one job.

Each writer is its own app (its own indexer, caches, limiter and connection pool), as
separate Function instances would be; all share one index table. Their streams overlap,
repeat and reorder the same events (creates, overwrites with new sizes, deletes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.conventions import container_name

from ..support.stack import RunningApp
from ..support.workload import (
    Sender,
    assert_index_is_exact,
    assert_quota_held,
    build_workload,
    deliveries,
    index_state,
    rows_by_partition,
    spread,
)

WRITERS = 8
#: Both layouts: one partition per job (the default), and a hot job's four (``PUT …/layout``).
LAYOUTS = pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])


def run_writers(apps: list[RunningApp], streams: list[list[list[dict]]]) -> Counter[int]:
    senders = [Sender(app) for app in apps]
    with ThreadPoolExecutor(len(streams)) as pool:
        for future in [pool.submit(s.send_all, stream) for s, stream in zip(senders, streams, strict=True)]:
            future.result()
    total: Counter[int] = Counter()
    for sender in senders:
        total.update(sender.statuses)
    return total


@LAYOUTS
def test_eight_writers_20000_events_end_with_exact_usage(serve: Callable[..., RunningApp], settings, partitions: int) -> None:
    job = f"concurrent-job-{partitions}"
    workload = build_workload(container_name(job), 4000, seed=7)
    streams = deliveries(workload.events, writers=WRITERS, total=20_000, batch=500, seed=8)
    assert sum(len(b) for s in streams for b in s) == 20_000
    apps = [serve(settings) for _ in range(WRITERS)]
    spread(apps[0], job, partitions)
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
    # The layout really is what was asked: outputs in that many partitions, none elsewhere.
    assert len(rows_by_partition(apps[0], container_name(job))) == partitions


@LAYOUTS
def test_eight_writers_under_a_job_wide_quota(serve: Callable[..., RunningApp], settings, partitions: int) -> None:
    job = f"concurrent-quota-job-{partitions}"
    workload = build_workload(container_name(job), 1000, seed=11)
    limit = len(workload.live) * 2 // 3
    streams = deliveries(workload.events, writers=WRITERS, total=5_000, batch=500, seed=12)
    apps = [serve(settings) for _ in range(WRITERS)]
    spread(apps[0], job, partitions)
    assert apps[0].client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": limit}).status_code == 200
    statuses = run_writers(apps, streams)
    print(f"8 writers under a quota, 5000 events: answers {dict(statuses)}")
    assert set(statuses) <= {200, 429, 503}

    assert_quota_held(apps[3], job, workload, limit)
    assert len(rows_by_partition(apps[0], container_name(job))) == partitions

    # Raising it part of the way admits rejected outputs up to exactly the new limit.
    _, rejected, _ = index_state(apps[0], job)
    raised = index_state(apps[0], job)[2]["usage"]["outputs"] + len(rejected) // 2
    assert apps[4].client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": raised}).status_code == 200
    assert_quota_held(apps[6], job, workload, raised)
    assert index_state(apps[6], job)[2]["usage"]["outputs"] == raised

    # Lifting the limit admits every rejected output at once: exactly the truth.
    assert apps[5].client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": 0}).status_code == 200
    assert_index_is_exact(apps[0], job, workload)


@LAYOUTS
def test_eight_writers_under_a_per_task_quota(serve: Callable[..., RunningApp], settings, partitions: int) -> None:
    job = f"concurrent-task-quota-{partitions}"
    workload = build_workload(container_name(job), 1000, seed=13)
    streams = deliveries(workload.events, writers=WRITERS, total=5_000, batch=500, seed=14)
    apps = [serve(settings) for _ in range(WRITERS)]
    spread(apps[0], job, partitions)
    per_task: Counter[str] = Counter(name.split("/")[0] for name in workload.live if not name.startswith("$"))
    limit = max(2, sorted(per_task.values())[len(per_task) // 2])
    assert apps[0].client.put(f"/api/jobs/{job}/quota", json={"maxOutputsPerTask": limit}).status_code == 200
    statuses = run_writers(apps, streams)
    assert set(statuses) <= {200, 429, 503}
    listed, rejected, summary = index_state(apps[2], job)
    assert rejected, "the quota never bit: the test proves nothing"
    held: Counter[str] = Counter(name.split("/")[0] for name in listed if not name.startswith("$"))
    assert max(held.values()) <= limit
    assert summary["usage"] == {"outputs": len(listed), "bytes": sum(listed.values())}
    assert summary["rejections"] == {"outputs": len(rejected), "bytes": sum(rejected.values())}
    assert set(listed).isdisjoint(rejected) and {**listed, **rejected} == workload.live
    # Lifting it admits every rejected output, in whichever partition it waits.
    assert apps[5].client.put(f"/api/jobs/{job}/quota", json={"maxOutputsPerTask": 0}).status_code == 200
    assert_index_is_exact(apps[0], job, workload)


def test_a_job_wide_limit_on_a_spread_job_and_a_layout_once_registered(
        serve: Callable[..., RunningApp], settings) -> None:
    app = serve(settings)
    job = "spread-limits"
    spread(app, job, 4)
    response = app.client.put(f"/api/jobs/{job}/quota", json={"maxOutputs": 10})
    assert response.status_code == 200, response.text
    assert app.client.get(f"/api/jobs/{job}/quota").json()["maxOutputs"] == 10
    assert app.client.put(f"/api/jobs/{job}/layout", json={"partitions": 4}).status_code == 200  # the same: kept
    response = app.client.put(f"/api/jobs/{job}/layout", json={"partitions": 2})
    assert response.status_code == 409 and response.json()["error"]["code"] == "LayoutFixed"
    assert app.client.get(f"/api/jobs/{job}/layout").json() == {"partitions": 4}
    # A job registered by its first output keeps one partition.
    other = "registered-by-output"
    workload = build_workload(container_name(other), 5, seed=3)
    assert app.post_events(workload.events).status_code == 200
    response = app.client.put(f"/api/jobs/{other}/layout", json={"partitions": 4})
    assert response.status_code == 409 and response.json()["error"]["code"] == "LayoutFixed"
    assert app.client.put(f"/api/jobs/{other}/layout", json={"partitions": 17}).status_code == 400
