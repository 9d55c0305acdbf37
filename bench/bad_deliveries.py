"""Hostile deliveries (issue 20): what a 16 MiB body of ``[{},{},...]`` (an events key's worth of
abuse) costs the app, and what API reads see while four clients keep posting one.

``make bench`` records these under ``bad_deliveries`` in ``bench/results.json``; alone:
``.venv/bin/python -m bench.bad_deliveries``. Before issue 20 one such body raised the app from
115 MB to 522 MB and held the event loop about 1.1 s before its 400, and four such clients held
API reads at a p50 of 2.6 s.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.stack import API_KEY, EVENTS_KEY, Stack, rss_mb
from shared.conventions import container_name

MIB = 1024 * 1024
BAD_BODY = b"[" + b",".join([b"{}"] * ((16 * MIB - 8) // 3)) + b"]"
JOB = "bad-deliveries"
BAD_CLIENTS = 4
READS = 200


def _seed(client: httpx.Client, events: httpx.Client) -> None:
    container = container_name(JOB)
    topic = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
             "/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    batch = [{
        "id": f"seed-{n}", "topic": topic, "eventType": "Microsoft.Storage.BlobCreated",
        "subject": f"/blobServices/default/containers/{container}/blobs/t{n % 10}/$TaskOutput/{n}.bin",
        "eventTime": "2026-12-05T10:00:00Z", "dataVersion": "", "metadataVersion": "1",
        "data": {"api": "PutBlob", "contentType": "application/octet-stream", "contentLength": n, "blobType": "BlockBlob",
                 "url": f"http://127.0.0.1:10000/devstoreaccount1/{container}/t{n % 10}/%24TaskOutput/{n}.bin",
                 "sequencer": f"{n + 1:032d}", "eTag": f"0x{n:015X}"},
    } for n in range(100)]
    assert events.post("/api/events", json=batch).status_code == 200


def _read_p50_ms(client: httpx.Client) -> float:
    times = []
    for _ in range(READS):
        start = time.perf_counter()
        assert client.get(f"/api/jobs/{JOB}/task-outputs", params={"maxpagesize": "100"}).status_code == 200
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def figures(stack: Stack, say: Callable[[str], Any] = print) -> dict[str, Any]:
    """The figures, against a running stack (its app process measured)."""
    pid = stack.server_pid()
    with httpx.Client(base_url=stack.url, headers={"x-functions-key": API_KEY}, timeout=120) as client, \
            httpx.Client(base_url=stack.url, headers={"x-functions-key": EVENTS_KEY}, timeout=120) as events:
        _seed(client, events)
        rss_before = rss_mb(pid)
        start = time.perf_counter()
        status = events.post("/api/events", content=BAD_BODY, headers={"content-type": "application/json"}).status_code
        answer_s = time.perf_counter() - start
        rss_after_one = rss_mb(pid)
        alone = _read_p50_ms(client)
        stop = threading.Event()
        posted = [0]

        def abuse() -> None:
            with httpx.Client(base_url=stack.url, headers={"x-functions-key": EVENTS_KEY}, timeout=120) as own:
                while not stop.is_set():
                    own.post("/api/events", content=BAD_BODY, headers={"content-type": "application/json"})
                    posted[0] += 1

        threads = [threading.Thread(target=abuse) for _ in range(BAD_CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            under_abuse = _read_p50_ms(client)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        rss_end = rss_mb(pid)
    result = {"status": status, "answer_seconds": round(answer_s, 3), "rss_before_mb": round(rss_before, 1),
              "rss_after_one_mb": round(rss_after_one, 1), "rss_after_abuse_mb": round(rss_end, 1),
              "read_p50_ms_alone": round(alone, 1), f"read_p50_ms_with_{BAD_CLIENTS}_bad_clients": round(under_abuse, 1),
              "bad_bodies_posted": posted[0]}
    say(f"  16 MiB [{{}},...]: {status} in {answer_s:.2f} s; app RSS {rss_before:.0f} -> {rss_after_one:.0f} MB "
        f"(after {posted[0]} more: {rss_end:.0f} MB); read p50 {alone:.1f} ms alone, {under_abuse:.1f} ms "
        f"with {BAD_CLIENTS} such clients")
    return result


if __name__ == "__main__":
    stack = Stack().start()
    try:
        print(figures(stack))
    finally:
        stack.stop()
