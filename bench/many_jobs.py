"""Many jobs at once: one delivery spanning 1,000 new jobs, then the jobs listing over them.

* ``many_jobs_delivery``: one webhook delivery of 1,000 events, each for a job never seen
  before (an account running many jobs at once): its answer, how long it took, and the Table
  requests per event (the delivery's, plus the folds that follow it, counted at the transport).
* ``jobs_listing.requests_per_page``: Table requests of one ``GET /api/jobs`` page of 100 and
  of 1,000 of those jobs, once folded.

Run alone: ``.venv/bin/python -m bench.many_jobs`` (its own in-memory Azurite); ``make bench``
runs it through ``bench.run``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.counting_proxy import CountingProxy, Counts
from bench.scaleout import API_KEY, EVENTS_KEY, Fleet, _processes, _wait_healthy
from bench.workload import Blob, EventFactory
from devtools.azurite import Azurite, free_port
from shared.conventions import container_name
from shared.ingest.compactor import FOLD_DELAY

JOBS = 1_000
PAGES = (100, 1_000)


def delivery(blob_endpoint: str, jobs: int = JOBS) -> list[dict[str, Any]]:
    """One event for each of ``jobs`` distinct jobs."""
    factory = EventFactory(blob_endpoint)
    events = []
    for n in range(jobs):
        job_id = f"many-{n:04d}"
        path = f"frames/frame-{n:04d}.exr"
        events.append(factory.created(Blob(job_id, container_name(job_id), "task-1", "TaskOutput", path,
                                           f"task-1/$TaskOutput/{path}", 1 << 20)))
    return events


def settled(proxy: CountingProxy, quiet: float = 2.0, limit: float = 300.0) -> Counts:
    """The requests until the app has gone quiet: the folds of what it wrote (``FOLD_DELAY``
    after its writes, as it would in Azure) are done when no request came for ``quiet`` s."""
    time.sleep(FOLD_DELAY)
    total = Counts()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(quiet)
        counts = proxy.take()
        total.requests += counts.requests
        if counts.requests == 0:
            break
    return total


def figures(azurite: Azurite, blob_endpoint: str, *, say: Callable[[str], None]) -> dict[str, Any]:
    """``many_jobs_delivery`` and ``jobs_listing`` (SPEC §11 keys), on a fresh index table."""
    proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    events = delivery(blob_endpoint)
    body = json.dumps(events).encode("utf-8")
    try:
        with _processes([command], Fleet(azurite, proxy).settings_env("manyjobs")):
            _wait_healthy(url)
            with httpx.Client(base_url=url, headers={"x-functions-key": API_KEY}, timeout=120) as client:
                client.get("/api/jobs", params={"maxpagesize": 1}).raise_for_status()  # the table exists
                proxy.take()
                started = time.perf_counter()
                answer = client.post("/api/events", content=body,
                                     headers={"x-functions-key": EVENTS_KEY, "content-type": "application/json"})
                seconds = time.perf_counter() - started
                answered = proxy.take()
                folds = settled(proxy)
                say(f"  one delivery over {JOBS:,} new jobs: {answer.status_code} in {seconds:.2f} s, "
                    f"{answered.requests / len(events):.2f} requests/event answering, "
                    f"{(answered.requests + folds.requests) / len(events):.2f} with the folds")
                pages = {}
                for size in PAGES:
                    client.get("/api/jobs", params={"maxpagesize": size}).raise_for_status()
                    pages[str(size)] = proxy.take().requests
                listed = len(client.get("/api/jobs", params={"maxpagesize": 5000}).json()["value"])
                say(f"  GET /api/jobs over {listed:,} jobs: {pages['100']} requests a page of 100, "
                    f"{pages['1000']} a page of 1,000")
    finally:
        proxy.stop()
    return {
        "many_jobs_delivery": {
            "status": answer.status_code,
            "seconds": seconds,
            "requests_per_event": (answered.requests + folds.requests) / len(events),
            "requests_per_event_answering": answered.requests / len(events),
            "events": len(events),
        },
        "jobs_listing": {"requests_per_page": pages, "jobs": listed},
    }


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        azurite = Azurite(location=Path(tmp), in_memory=True).start()
        try:
            blob_endpoint = f"http://{azurite.host}:{azurite.blob_port}/devstoreaccount1"
            print(json.dumps(figures(azurite, blob_endpoint, say=print), indent=2))
        finally:
            azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
