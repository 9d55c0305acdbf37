"""GET /api/jobs: a page is one query whatever its size, its figures are the jobs' as of their last
fold, and a listing whose client went away stops its storage work."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator

import pytest

from devtools.azurite import Azurite
from shared.domain.conventions import container_name
from shared.service import Service
from shared.settings import Settings

from ..helpers import blob_event
from ..support.countingproxy import CountingProxy
from ..support.stack import TEST_KEY, RunningApp, settings_for

JOBS = 12


def fold_all(settings: Settings, containers: list[str]) -> None:
    """Fold the jobs now (the app's writer folds them 2 s after it wrote: not a test's business)."""

    async def run() -> None:
        service = await Service.create(settings)
        try:
            for container in containers:
                await service.indexer.compactor.fold(container)
        finally:
            await service.close()

    asyncio.run(run())


@pytest.fixture
def proxied(azurite: Azurite, app: RunningApp, serve: Callable[..., RunningApp]) -> Iterator[tuple[RunningApp, CountingProxy]]:
    """A second app on the same index, its Table requests through a ``CountingProxy``."""
    proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
    try:
        yield serve(settings_for(azurite, INDEX_TABLE=app.settings.index_table,
                                 INDEX_STORAGE=proxy.connection_string(azurite.connection_string, azurite.table_port))), proxy
    finally:
        proxy.stop()


def test_a_page_is_one_query_whatever_its_size(app: RunningApp, proxied: tuple[RunningApp, CountingProxy]) -> None:
    listing, proxy = proxied
    names = [f"listed-{n:02d}" for n in range(JOBS)]
    assert app.post_events([blob_event(container_name(name), f"t{k}/$TaskOutput/f{k}", sequencer=k + 1, size=10)
                            for name in names for k in range(name.count("1") + 1)]).status_code == 200
    fold_all(app.settings, [container_name(name) for name in names])

    assert listing.get("/api/jobs", params={"maxpagesize": 1}).status_code == 200  # the app's first request creates its table
    requests = {}
    for size in (2, JOBS):
        before = proxy.requests
        assert listing.get("/api/jobs", params={"maxpagesize": size}).status_code == 200
        requests[size] = proxy.requests - before
    assert requests == {2: 1, JOBS: 1}

    jobs = {j["jobId"]: j for j in listing.all_pages("/api/jobs")}
    for name in names:
        summary = listing.get(f"/api/jobs/{name}").json()
        assert (jobs[name]["outputs"], jobs[name]["bytes"], jobs[name]["tasks"], jobs[name]["lastIndexedAt"]) == (
            summary["usage"]["outputs"], summary["usage"]["bytes"], summary["tasks"], summary["lastIndexedAt"])
        assert jobs[name]["outputs"] == name.count("1") + 1


def test_figures_are_as_of_the_last_fold_and_the_summary_exact(app: RunningApp) -> None:
    container = container_name("listed-later")
    assert app.post_events([blob_event(container, "t1/$TaskOutput/a", sequencer=1, size=5)]).status_code == 200
    # Never folded: read from the ledger, exact.
    (job,) = [j for j in app.all_pages("/api/jobs") if j["container"] == container]
    assert (job["outputs"], job["bytes"], job["tasks"]) == (1, 5, 1)
    fold_all(app.settings, [container])
    assert app.post_events([blob_event(container, "t2/$TaskOutput/b", sequencer=1, size=7)]).status_code == 200
    (job,) = [j for j in app.all_pages("/api/jobs") if j["container"] == container]
    summary = app.get("/api/jobs/listed-later").json()
    assert (summary["usage"], summary["tasks"]) == ({"outputs": 2, "bytes": 12}, 2)  # exact
    assert job["outputs"] in (1, 2)  # the app's own fold (2 s after its write) may have run
    fold_all(app.settings, [container])
    (job,) = [j for j in app.all_pages("/api/jobs") if j["container"] == container]
    assert (job["outputs"], job["bytes"], job["tasks"]) == (2, 12, 2)


def test_a_listing_whose_client_left_stops_its_storage_work(app: RunningApp, proxied: tuple[RunningApp, CountingProxy]) -> None:
    listing, proxy = proxied
    assert app.post_events([blob_event(container_name("left"), "t1/$TaskOutput/a", sequencer=1)]).status_code == 200
    proxy.hold = True
    host, port = listing.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(f"GET /api/jobs?maxpagesize=5000 HTTP/1.1\r\nHost: {host}\r\nx-functions-key: {TEST_KEY}\r\n\r\n".encode())
        assert proxy.held.wait(60), "the listing never queried the job registry"
    # The client is gone while the app waits on storage: the app cancels its query. (The wait
    # only bounds a hang: a listing that went on would hold the query forever.)
    assert proxy.abandoned.wait(60), "the app kept waiting on storage for a client that left"
    proxy.hold = False
    assert listing.get("/api/jobs").status_code == 200  # and the app serves the next one


def test_a_delivery_over_many_new_jobs_costs_about_one_request_an_event(
        app: RunningApp, proxied: tuple[RunningApp, CountingProxy]) -> None:
    """Each new job's registry row is created 100 a transaction and its limits are known without
    a read: what remains is each job's own transaction. (Counted by kind: on a busy machine the
    first jobs' folds, 2 s after their writes, may start before the delivery is answered.)"""
    listing, proxy = proxied
    jobs = 250
    assert listing.get("/api/jobs", params={"maxpagesize": 1}).status_code == 200  # the app's table exists
    events = [blob_event(container_name(f"many-{n}"), "t1/$TaskOutput/a", sequencer=1, size=3) for n in range(jobs)]
    start = len(proxy.seen)
    assert listing.post_events(events).status_code == 200
    seen = proxy.seen[start:]
    creates = re.compile(rb"^POST https?://", re.MULTILINE)  # a create inside a batch (a fold replaces: PUT)
    registry = [b for method, _, b in seen if method == "POST" and b"~jobs" in b and creates.search(b)]
    limits = [path for method, path, _ in seen if method == "GET" and "RowKey='S|00'" in path]
    commits = [b for method, _, b in seen if method == "POST" and re.search(rb'"RowKey":\s*"S\|d\|', b)]
    assert (len(registry), len(limits), len(commits)) == (3, 0, jobs)  # 100 + 100 + 50 new jobs
    summaries = [app.get(f"/api/jobs/many-{n}").json() for n in (0, jobs - 1)]
    assert [(s["usage"]["outputs"], s["tasks"]) for s in summaries] == [(1, 1), (1, 1)]
