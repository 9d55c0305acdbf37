"""A hot job over 4 Table partitions (issue 24, item 4), counted at the transport.

Two render-farm jobs of the same shape (``bench.workload.make_job``: 20 outputs a task, 64 tasks
running at once, their events interleaved) are delivered through the webhook, 500 events a
request, 4 requests at once: one job of one partition (the default), one registered first with
``PUT /api/jobs/{jobId}/layout {"partitions": 4}``. Every entity written, by the app's
transactions, its folds and its registry, is counted per PartitionKey at a proxy in front of
Azurite's Table endpoint. Then every ``TaskOutput`` of each job is listed across its tasks
(``GET …/task-outputs?kind=TaskOutput``), and the queries counted.

Figures go to ``bench/results.json`` under ``partitions`` (SPEC §11):

* ``entities_per_event``: entities the hot job's ingest wrote (all its partitions, its folds
  and its ``~jobs`` row) per event (target ≤ 1.3);
* ``listing_requests_ratio``: Table queries per 1,000 results of the cross-task listing, hot
  job over one-partition job, at the default page size (target ≤ 2);
* ``max_share``: the largest share of the hot job's writes any one partition took (target ≤ 0.35).

Run alone with ``python -m bench.partitions [--small]``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from aiohttp import web

from bench.counting_proxy import CountingProxy
from bench.listing import _serve
from bench.many_jobs import settled
from bench.scaleout import API_KEY, EVENTS_KEY
from bench.workload import EventFactory, batches, make_job
from devtools.azurite import Azurite
from shared.domain import keys

PARTITIONS = 4
EVENTS_PER_REQUEST = 500
SENDERS = 4
KIND = "TaskOutput"
_OPERATION = re.compile(rb"^(POST|PUT|MERGE|PATCH|DELETE) https?://", re.MULTILINE)
_IN_URL = re.compile(r"PartitionKey='([^']*)'")
_IN_BODY = re.compile(rb'"PartitionKey"\s*:\s*"([^"]*)"')


class PartitionMeter(CountingProxy):
    """The Table meter, also counting the entities written per PartitionKey and the queries
    (a batch transaction is one partition's; a single write names its own)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.written: Counter[str] = Counter()
        self.queries = 0
        self.entities_read = 0

    def _count(self, request: web.Request, body: bytes, status: int, payload: bytes) -> None:
        super()._count(request, body, status, payload)
        with self._lock:
            if request.method == "GET":
                if status == 200 and not request.path.rstrip("/").endswith("Tables"):
                    answer = json.loads(payload or b"{}")
                    self.queries += "value" in answer
                    self.entities_read += len(answer["value"]) if "value" in answer else 1
                return
            if status >= 400:
                return
            if request.path.endswith("$batch"):
                if re.search(rb"^HTTP/1\.1 [45]\d\d", payload, re.MULTILINE):
                    return  # refused as a whole: nothing written
                found = _IN_URL.search(unquote(body.decode("utf-8", "replace")))
                partition = found.group(1) if found else None
                if partition is None and (in_body := _IN_BODY.search(body)):
                    partition = in_body.group(1).decode("utf-8")
                self.written[unquote(partition or "?").replace("''", "'")] += len(_OPERATION.findall(body))
                return
            found = _IN_URL.search(unquote(request.path))
            in_body = _IN_BODY.search(body) if found is None else None
            name = found.group(1) if found else in_body.group(1).decode("utf-8") if in_body else "?"
            self.written[name.replace("''", "'")] += 1

    def take_partitions(self) -> tuple[Counter[str], int, int]:
        """Entities written per partition, queries and entities read since the last call."""
        with self._lock:
            written, self.written = self.written, Counter()
            queries, self.queries = self.queries, 0
            read, self.entities_read = self.entities_read, 0
        self.take()
        return written, queries, read


def _deliver(url: str, payloads: list[bytes]) -> list[int]:
    def send(payload: bytes) -> int:
        with httpx.Client(base_url=url, timeout=300) as client:
            for _ in range(50):
                answer = client.post("/api/events", content=payload,
                                     headers={"x-functions-key": EVENTS_KEY, "content-type": "application/json"})
                if answer.status_code not in (429, 503):
                    return answer.status_code
                time.sleep(float(answer.headers.get("retry-after", "1")))
            return answer.status_code

    with ThreadPoolExecutor(SENDERS) as pool:
        return list(pool.map(send, payloads))


def _job_writes(written: Counter[str], container: str) -> dict[str, int]:
    return {p: n for p, n in written.items() if keys.container_of(p) == container}


def _list_all(client: httpx.Client, job_id: str, page_size: int | None) -> int:
    params: dict[str, Any] = {"kind": KIND}
    if page_size is not None:
        params["maxpagesize"] = page_size
    response = client.get(f"/api/jobs/{job_id}/task-outputs", params=params)
    listed = 0
    while True:
        response.raise_for_status()
        body = response.json()
        listed += len(body["value"])
        if "nextLink" not in body:
            return listed
        response = client.get(body["nextLink"])


def figures(*, small: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The ``partitions`` results: a hot job over 4 partitions beside a job of one."""
    size = 4_000 if small else 20_000
    jobs = {1: make_job(f"hot-one-{size}", size, seed=9), PARTITIONS: make_job(f"hot-spread-{size}", size, seed=9)}
    found: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        azurite = Azurite(location=Path(tmp), in_memory=True).start()
        meter = PartitionMeter(f"http://127.0.0.1:{azurite.table_port}").start()
        server = None
        try:
            server, url = _serve({
                "INDEX_STORAGE": meter.connection_string(azurite.connection_string, azurite.table_port),
                "OUTPUTS_STORAGE": azurite.connection_string, "INDEX_TABLE": "benchpartitions", "API_KEYS": API_KEY,
                "EVENTS_KEYS": EVENTS_KEY, "TOKEN_SIGNING_KEY": "bench",
            })
            factory = EventFactory(f"http://127.0.0.1:{azurite.blob_port}/devstoreaccount1")
            with httpx.Client(base_url=url, headers={"x-functions-key": API_KEY}, timeout=300) as client:
                client.get("/api/jobs", params={"maxpagesize": 1}).raise_for_status()  # the table exists
                for partitions, job in jobs.items():
                    if partitions > 1:
                        client.put(f"/api/jobs/{job.job_id}/layout", json={"partitions": partitions}).raise_for_status()
                    payloads = [json.dumps(b).encode("utf-8")
                                for b in batches([factory.created(blob) for blob in job.blobs], EVENTS_PER_REQUEST)]
                    meter.take_partitions()
                    started = time.perf_counter()
                    statuses = Counter(_deliver(url, payloads))
                    seconds = time.perf_counter() - started
                    settled(meter)  # the folds of what was written
                    written, _, _ = meter.take_partitions()
                    own = _job_writes(written, job.container)
                    total = sum(own.values()) + written.get(keys.JOBS_PARTITION, 0)
                    summary = client.get(f"/api/jobs/{job.job_id}").json()
                    if summary["usage"]["outputs"] != len(job.blobs) or set(statuses) != {200}:
                        raise RuntimeError(f"{job.job_id}: {summary['usage']} of {len(job.blobs)}, answers {dict(statuses)}")
                    found[partitions] = {
                        "events": len(job.blobs), "tasks": job.tasks, "seconds": round(seconds, 2),
                        "entities_written": total, "entities_per_event": round(total / len(job.blobs), 4),
                        "writes_by_partition": dict(sorted(own.items())),
                        "max_share": round(max(own.values()) / sum(own.values()), 4),
                    }
                expected = sum(1 for blob in jobs[1].blobs if blob.kind == KIND)
                for page_size in (None, 5000):
                    label = "default" if page_size is None else str(page_size)
                    for partitions, job in jobs.items():
                        meter.take_partitions()
                        listed = _list_all(client, job.job_id, page_size)
                        _, queries, read = meter.take_partitions()
                        if listed != expected:
                            raise RuntimeError(f"{job.job_id}: listed {listed:,} of {expected:,}")
                        found[partitions].setdefault("listing", {})[label] = {
                            "results": listed, "queries": queries, "queries_per_1000": round(queries / (listed / 1000), 4),
                            "entities_read_per_result": round(read / listed, 4)}
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            meter.stop()
            azurite.stop()
    hot, one = found[PARTITIONS], found[1]

    def ratio(label: str) -> float:
        return round(hot["listing"][label]["queries_per_1000"] / one["listing"][label]["queries_per_1000"], 4)

    results = {
        "entities_per_event": hot["entities_per_event"],
        "listing_requests_ratio": ratio("default"),
        "max_share": hot["max_share"],
        "listing_requests_ratio_at_5000": ratio("5000"),
        "partitions": PARTITIONS,
        "hot": hot,
        "one_partition": one,
    }
    say(f"    {json.dumps(results)}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    print(json.dumps(figures(small=args.small), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
