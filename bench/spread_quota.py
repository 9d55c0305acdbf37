"""A job-wide quota on a job spread over 4 partitions (issue 24), counted at the transport.

The same render-farm job (``bench.workload.make_job``) is delivered through the webhook, 500
events a request, 4 requests at once, to 2 app processes (each its own escrows, as two Function
instances): without a quota (the baseline), under ``maxOutputs`` and ``maxBytes`` far from the
limit (10x the workload), and near it (``maxOutputs`` at 90 % of the outputs, so the last tenth
is rejected), on a job of one partition and on one spread over 4 (``PUT …/layout``). Every Table request the apps make, their
folds and escrow grants included, is counted at a proxy in front of Azurite until they are quiet;
each run ends with the summary checked: usage exactly the limit's share, rejections the rest.

Figures go to ``bench/results.json`` under ``spread_quota``: per layout and case, Table requests
and failed transactions per event. Run alone with ``python -m bench.spread_quota [--small]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.counting_proxy import CountingProxy
from bench.listing import _serve
from bench.many_jobs import settled
from bench.scaleout import API_KEY, EVENTS_KEY
from bench.workload import EventFactory, Job, batches, make_job
from devtools.azurite import Azurite

PARTITIONS = 4
PROCESSES = 2
EVENTS_PER_REQUEST = 500
SENDERS = 4


def _deliver(urls: list[str], payloads: list[bytes]) -> Counter[int]:
    """Post every payload (round robin over the apps, ``SENDERS`` at once), again while refused."""
    def send(item: tuple[int, bytes]) -> int:
        index, payload = item
        with httpx.Client(base_url=urls[index % len(urls)], timeout=300) as client:
            for _ in range(50):
                answer = client.post("/api/events", content=payload,
                                     headers={"x-functions-key": EVENTS_KEY, "content-type": "application/json"})
                if answer.status_code not in (429, 503):
                    return answer.status_code
                time.sleep(float(answer.headers.get("retry-after", "1")))
            return answer.status_code

    with ThreadPoolExecutor(SENDERS) as pool:
        return Counter(pool.map(send, enumerate(payloads)))


def _run(client: httpx.Client, urls: list[str], proxy: CountingProxy, factory: EventFactory, job: Job,
         partitions: int, limit: int) -> dict[str, Any]:
    if partitions > 1:
        client.put(f"/api/jobs/{job.job_id}/layout", json={"partitions": partitions}).raise_for_status()
    size = sum(b.size for b in job.blobs)
    near = 0 < limit < len(job.blobs)
    if limit:
        quota = {"maxOutputs": limit, "maxBytes": size * 10}
        client.put(f"/api/jobs/{job.job_id}/quota", json=quota).raise_for_status()
    else:
        limit = len(job.blobs)  # no quota: the baseline
    payloads = [json.dumps(b).encode("utf-8") for b in batches([factory.created(b) for b in job.blobs], EVENTS_PER_REQUEST)]
    proxy.take()
    started = time.perf_counter()
    statuses = _deliver(urls, payloads)
    seconds = time.perf_counter() - started
    counts = proxy.take()
    counts.requests += settled(proxy).requests
    summary = client.get(f"/api/jobs/{job.job_id}").json()
    admitted = min(limit, len(job.blobs))
    if set(statuses) != {200} or summary["usage"]["outputs"] != admitted or \
            summary["rejections"]["outputs"] != len(job.blobs) - admitted:
        raise RuntimeError(f"{job.job_id}: usage {summary['usage']}, rejections {summary['rejections']} "
                           f"under {limit} of {len(job.blobs)}, answers {dict(statuses)}")
    events = len(job.blobs)
    return {"case": "near" if near else "far" if limit > len(job.blobs) else "none", "partitions": partitions, "events": events, "limit": limit,
            "seconds": round(seconds, 2), "requests_per_event": round(counts.requests / events, 4),
            "failed_tx_per_event": round(counts.failed_tx / events, 4), "rejected": events - admitted}


def figures(*, small: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The ``spread_quota`` results: a job-wide quota far from and near its limit, on both layouts."""
    size = 2_000 if small else 8_000
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-spread-quota-") as tmp:
        azurite = Azurite(location=Path(tmp), in_memory=True).start()
        proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
        servers = []
        try:
            env = {"INDEX_STORAGE": proxy.connection_string(azurite.connection_string, azurite.table_port),
                   "OUTPUTS_STORAGE": azurite.connection_string, "INDEX_TABLE": "benchspreadquota",
                   "API_KEYS": API_KEY, "EVENTS_KEYS": EVENTS_KEY, "TOKEN_SIGNING_KEY": "bench"}
            servers = [_serve(env) for _ in range(PROCESSES)]
            urls = [url for _, url in servers]
            factory = EventFactory(f"http://127.0.0.1:{azurite.blob_port}/devstoreaccount1")
            with httpx.Client(base_url=urls[0], headers={"x-functions-key": API_KEY}, timeout=300) as client:
                client.get("/api/jobs", params={"maxpagesize": 1}).raise_for_status()  # the table exists
                for partitions in (1, PARTITIONS):
                    for case in ("none", "far", "near"):
                        job = make_job(f"quota-{case}-{partitions}-{size}", size, seed=11)
                        limit = {"none": 0, "far": len(job.blobs) * 10, "near": len(job.blobs) * 9 // 10}[case]
                        runs.append(_run(client, urls, proxy, factory, job, partitions, limit))
                        say(f"    {json.dumps(runs[-1])}")
        finally:
            for server, _ in servers:
                server.terminate()
                server.wait(timeout=30)
            proxy.stop()
            azurite.stop()
    return {f"{r['case']}_{r['partitions']}": r for r in runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    print(json.dumps(figures(small=args.small), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
