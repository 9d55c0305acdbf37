"""The change feed and output events, measured (``make bench``; never in tests).

* ``feed.p95_seconds``: indexed (the change's ``at``) to a client long-polling the feed, p95 of
  single-event deliveries to one instance (same machine, same clock).
* ``feed.idle_requests_per_wait``: Table requests (counted at the transport) per waiting client
  per ``wait`` interval, 200 clients long-polling an idle job.
* ``feed.waiters_ingest_ratio``: one instance's webhook ingest of a 10,003-output job while
  1,000 clients long-poll that same job's feed, over the same ingest alone: the median of 5
  back-to-back pairs in alternating order (machine load hits both sides alike). The clients
  (``python -m bench.feed waiters``: one process, one session, like clients on other machines,
  cheap: they count changes without building the pages) each wait as ``batch-outputs wait`` and
  ``wait_for_output`` do, for one task's outputs of one kind (500 tasks, 4 kinds); each must
  end with exactly its changes, or the pair says so. ``feed.followers_ingest_ratio`` (beside
  it, not a SPEC key): the same with 1,000 clients each following the whole job, every change.
  Each pair also records the instance's CPU time with and without the clients.
* ``feed.exact``: 8 instances ingest one job with overwrites and deletes while a client walks
  the feed from the start; replayed, the feed equals the final listing, change for change.
* ``publish.requests_per_output``: publish requests the topic received per indexed output, with
  ``EVENTS_TOPIC_ENDPOINT`` set to a local receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.counting_proxy import CountingProxy
from bench.scaleout import API_KEY, EVENTS_KEY, Fleet, _post_all, _processes, _wait_healthy, deliveries_of
from bench.workload import Job
from devtools.azurite import Azurite, free_port
from devtools.run import UVICORN_OPTIONS
from shared.ingest.compactor import FOLD_DELAY

WAITERS = 1000
IDLE_WAITERS = 200
IDLE_WAIT_S = 5
LATENCY_SAMPLES = 60
RATIO_PAIRS = 5
#: After the ingest, how long the waiting clients may take to receive the rest of their changes.
DRAIN_SECONDS = 120
#: Outputs of the job whose ingest the ratio measures (500 tasks of 20 outputs).
RATIO_OUTPUTS = 10_003


class _Topic:
    """A local stand-in for the Event Grid topic: counts publish requests and events."""

    def __init__(self) -> None:
        self.requests = 0
        self.events = 0
        topic = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                topic.requests += 1
                topic.events += len(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/events"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _serve(fleet: Fleet, table: str, instances: int, extra: dict[str, str] | None = None) -> tuple[list[str], Any]:
    """Instances served as ``make run`` serves the app (its protocol and options)."""
    ports = [free_port() for _ in range(instances)]
    commands = [[sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning", *UVICORN_OPTIONS] for port in ports]
    return [f"http://127.0.0.1:{port}" for port in ports], _processes(commands, {**fleet.settings_env(table), **(extra or {})})


def _healthy(url: str, within: float = 300) -> None:
    """Wait for an instance (8 starting at once on a shared 2-core machine can take minutes)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def _headers() -> dict[str, str]:
    return {"x-functions-key": API_KEY}


def _latency(fleet: Fleet, job: Job, events: list[dict[str, Any]]) -> list[float]:
    """Single-event deliveries, one at a time; a client long-polls from now and notes when each
    change reaches it, against the change's indexed time."""
    urls, processes = _serve(fleet, "feedlatency", 1)
    samples: list[float] = []
    with processes:
        _wait_healthy(urls[0])
        url = f"{urls[0]}/api/jobs/{job.job_id}/changes"
        with httpx.Client(headers=_headers(), timeout=90) as client:
            cursor = client.get(url).json()["cursor"]
            got = threading.Event()

            def follow() -> None:
                nonlocal cursor
                while len(samples) < LATENCY_SAMPLES:
                    body = client.get(url, params={"cursor": cursor, "wait": "30"}).json()
                    now = time.time()
                    cursor = body["cursor"]
                    for change in body["value"]:
                        samples.append(now - datetime.fromisoformat(change["at"].replace("Z", "+00:00")).timestamp())
                        got.set()

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            with httpx.Client(timeout=60) as poster:
                for event in events[:LATENCY_SAMPLES]:
                    got.clear()
                    poster.post(f"{urls[0]}/api/events", json=[event], headers={"x-functions-key": EVENTS_KEY}).raise_for_status()
                    got.wait(30)
            follower.join(60)
    return samples


def _idle_requests(fleet: Fleet, job: Job) -> tuple[float, float]:
    """Table requests per waiting client while ``IDLE_WAITERS`` clients long-poll an idle job, and
    the instance's CPU milliseconds per idle long-poll (the request, its wait, its empty answer)."""
    urls, processes = _serve(fleet, "feedidle", 1)
    with processes as (server,):
        _wait_healthy(urls[0])
        url = f"{urls[0]}/api/jobs/{job.job_id}/changes"

        async def wait_all() -> None:
            async with aiohttp.ClientSession(headers=_headers(), connector=aiohttp.TCPConnector(limit=IDLE_WAITERS)) as session:
                async with session.get(url) as response:
                    cursor = (await response.json())["cursor"]
                fleet.proxy.take()

                async def one() -> None:
                    async with session.get(url, params={"cursor": cursor, "wait": str(IDLE_WAIT_S)}) as answer:
                        await answer.read()

                await asyncio.gather(*(one() for _ in range(IDLE_WAITERS)))

        before = _cpu_seconds(server.pid)
        asyncio.run(wait_all())
        cpu = _cpu_seconds(server.pid) - before
        counts = fleet.proxy.take()
    return counts.requests / IDLE_WAITERS, cpu * 1000 / IDLE_WAITERS


def _cursor_and_count(body: bytes) -> tuple[str, int]:
    """A page's cursor and number of changes, without building the whole page: the waiters of
    the benchmark stand for clients on other machines, so their own CPU is kept small. The
    answer is ``{"value": [...], "cursor": "...", "nextLink"?: "..."}``; a change's ``{"change":``
    cannot occur inside a JSON string (its quotes would be escaped), so counting it counts
    changes."""
    at = body.rindex(b'"cursor":"') + len(b'"cursor":"')
    return body[at : body.index(b'"', at)].decode("ascii"), body.count(b'{"change":')


def waiting_filters(job: Job, count: int, shape: str) -> list[dict[str, Any]]:
    """``count`` waiting clients: ``wait``, as downstream tasks wait for an upstream task's
    outputs (``batch-outputs wait``, ``wait_for_output``: the feed filtered by task and kind,
    spread over the job's tasks and kinds), or ``follow``, each following the whole job (``watch``);
    with the number of changes each must receive from the workload's ingest."""
    if shape == "follow":
        return [{"expect": len(job.blobs)} for _ in range(count)]
    tasks = sorted({b.task_id for b in job.blobs if b.task_id})
    kinds = ("TaskOutput", "TaskPreview", "TaskLog", "TaskIntermediate")
    out = []
    for number in range(count):
        task, kind = tasks[number % len(tasks)], kinds[number // len(tasks) % len(kinds)]
        out.append({"taskId": task, "kind": kind, "expect": sum(1 for b in job.blobs if b.task_id == task and b.kind == kind)})
    return out


async def _waiters(url: str, job_id: str, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """``python -m bench.feed waiters``: clients that follow a job's feed with long-polls (one
    session, one process), each with its filter; each counts the changes it received.

    Each takes its cursor ``from=now`` first, then long-polls from it: ``holding`` is printed once
    every one has its cursor (and so will receive every change the ingest makes). On ``drain``
    they go on until each has its expected changes (or ``DRAIN_SECONDS`` passed), then stop."""
    loop = asyncio.get_running_loop()
    received = [0] * len(filters)
    tally = {"requests": 0, "errors": 0}
    all_in, drained = asyncio.Event(), asyncio.Event()
    path = f"/api/jobs/{job_id}/changes"
    holding = 0
    async with aiohttp.ClientSession(url, headers=_headers(), connector=aiohttp.TCPConnector(limit=len(filters)),
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def get(params: dict[str, str]) -> tuple[str, int]:
            while True:
                try:
                    async with session.get(path, params=params) as response:
                        body = await response.read()
                    tally["requests"] += 1
                    if response.status == 200:
                        return _cursor_and_count(body)
                except (TimeoutError, aiohttp.ClientError):
                    pass
                tally["errors"] += 1
                await asyncio.sleep(0.5)

        async def waiter(number: int, where: dict[str, Any]) -> None:
            nonlocal holding
            params = {k: where[k] for k in ("taskId", "kind") if k in where}
            cursor, received[number] = await get(params)
            holding += 1
            if holding == len(filters):
                all_in.set()
            while received[number] < where["expect"]:
                cursor, changes = await get({**params, "cursor": cursor, "wait": "20"})
                received[number] += changes
            if all(r >= f["expect"] for r, f in zip(received, filters, strict=True)):
                drained.set()

        tasks = [asyncio.create_task(waiter(n, f)) for n, f in enumerate(filters)]
        await all_in.wait()
        held = tally["requests"]
        print("holding", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        # The answers received while the ingest ran (from "holding" to "drain": the job was idle
        # before it, so every one of them was an answer with changes).
        answered = tally["requests"] - held
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), DRAIN_SECONDS)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {**tally, "answered_in_ingest": answered, "exact": sum(r == f["expect"] for r, f in zip(received, filters, strict=True)),
            "short": sum(r < f["expect"] for r, f in zip(received, filters, strict=True)), "received": sum(received)}


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far; 0 where ``/proc`` is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settled(pid: int, within: float = 60) -> None:
    """Until the process is idle (under 2 % of a CPU for half a second): the waiting clients' first
    long-polls have all been read and are held, not still being served when the ingest starts."""
    deadline = time.monotonic() + within
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_seconds(pid)
        if now - before < 0.01:
            return
        before = now


def _ingest(fleet: Fleet, table: str, deliveries: list[bytes], events: int, job_id: str,
            filters: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One instance's webhook ingest of ``deliveries``, alone or while ``filters`` waiting clients
    (their own process, like clients on other machines) long-poll the job's feed; with the CPU
    time the instance (and the clients) used meanwhile."""
    urls, processes = _serve(fleet, table, 1)
    with processes as (server,):
        _wait_healthy(urls[0])
        if not filters:
            before = _cpu_seconds(server.pid)
            posted = asyncio.run(_post_all(urls, deliveries))
            return {"rate": events / posted["seconds"], "server_cpu": _cpu_seconds(server.pid) - before}
        command = [[sys.executable, "-m", "bench.feed", "waiters", urls[0], job_id]]
        with _processes(command, {}, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as (proc,):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(filters) + "\n")
            proc.stdin.flush()
            if proc.stdout.readline().strip() != "holding":
                raise RuntimeError("the waiting clients did not start")
            _settled(server.pid)  # their long-polls (sent right after their cursors) are all held
            before, clients_before = _cpu_seconds(server.pid), _cpu_seconds(proc.pid)
            posted = asyncio.run(_post_all(urls, deliveries))
            cpu = {"server_cpu": _cpu_seconds(server.pid) - before, "clients_cpu": _cpu_seconds(proc.pid) - clients_before}
            proc.stdin.write("drain\n")
            proc.stdin.flush()
            waited = json.loads(proc.stdout.readline())
    return {"rate": events / posted["seconds"], **cpu, **waited}


def ratio_workload(azurite: Azurite, outputs: int = RATIO_OUTPUTS) -> tuple[Job, list[dict[str, Any]]]:
    """The job the ingest ratio is measured on: long enough an ingest (seconds, not one) that a
    pair measures the steady state rather than its first wake-up."""
    from azure.storage.blob import BlobServiceClient

    from bench.workload import EventFactory, make_job

    job = make_job("feed-ratio", outputs, seed=21)
    factory = EventFactory(BlobServiceClient.from_connection_string(azurite.connection_string).url)
    return job, [factory.created(b) for b in job.blobs]


def ratio(fleet: Fleet, job: Job, events: list[dict[str, Any]], shape: str, *, pairs: int = RATIO_PAIRS,
          say: Callable[[str], None], tag: str = "") -> dict[str, Any]:
    """Ingest with ``WAITERS`` waiting clients of ``shape`` over ingest alone: ``pairs`` back-to-back
    pairs in alternating order (machine load hits both sides alike); the median of the pairs."""
    deliveries = [json.dumps(d).encode("utf-8") for d in deliveries_of(events)]
    filters = waiting_filters(job, WAITERS, shape)
    ratios, checks, alone_cpu, answer_ms = [], [], [], []
    for number in range(pairs):
        pair: dict[bool, dict[str, Any]] = {}
        for waiting in ((False, True) if number % 2 == 0 else (True, False)):
            pair[waiting] = _ingest(fleet, f"feed{tag}{shape}{number}{'w' if waiting else 'a'}", deliveries, len(events),
                                    job.job_id, filters if waiting else None)
        ratios.append(pair[True]["rate"] / pair[False]["rate"])
        checks.append(pair[True])
        alone_cpu.append(pair[False]["server_cpu"])
        # The instance's extra CPU with the clients, per answer it gave them meanwhile.
        answer_ms.append((pair[True]["server_cpu"] - pair[False]["server_cpu"]) * 1000 / max(1, pair[True]["answered_in_ingest"]))
        say(f"    {shape}: {pair[True]['rate']:,.0f} ev/s with {WAITERS:,} waiting clients, alone {pair[False]['rate']:,.0f} ev/s "
            f"({ratios[-1]:.2f}×); {pair[True]['exact']:,} clients received exactly their changes, {pair[True]['short']} short "
            f"({pair[True]['requests']:,} requests); instance CPU {pair[True]['server_cpu']:.1f} s with, {pair[False]['server_cpu']:.1f} s alone, "
            f"clients {pair[True]['clients_cpu']:.1f} s; {pair[True]['answered_in_ingest']:,} answers during the ingest, "
            f"{answer_ms[-1]:.2f} ms of instance CPU each (load average {os.getloadavg()[0]:.1f})")
    return {"median": statistics.median(ratios), "pairs": ratios, "answer_cpu_ms": statistics.median(answer_ms),
            "answer_cpu_ms_pairs": answer_ms, "load_average": os.getloadavg()[0],
            "server_cpu_ratio": statistics.median(c["server_cpu"] / max(a, 1e-9) for c, a in zip(checks, alone_cpu, strict=True)),
            "all_received": all(c["exact"] == WAITERS for c in checks),
            "requests": [c["requests"] for c in checks], "errors": sum(c["errors"] for c in checks)}


def _history(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each blob's create, then for some an overwrite (a new size) and for some a delete; every
    sequencer 32 digits, so that string order is the blob's order."""
    out: list[dict[str, Any]] = []
    for number, event in enumerate(events):
        base = int(event["data"]["sequencer"]) * 10
        created = copy.deepcopy(event)
        created["data"]["sequencer"] = f"{base:032d}"
        out.append(created)
        if number % 3 == 0:
            again = copy.deepcopy(created)
            again["data"]["sequencer"] = f"{base + 1:032d}"
            again["data"]["contentLength"] += 1
            again["data"]["eTag"] += "1"
            out.append(again)
        if number % 5 == 0:
            gone = copy.deepcopy(created)
            gone["eventType"] = "Microsoft.Storage.BlobDeleted"
            gone["data"]["sequencer"] = f"{base + 2:032d}"
            gone["data"].pop("contentLength", None)
            out.append(gone)
    return out


def _exact(fleet: Fleet, job: Job, events: list[dict[str, Any]], topic: _Topic) -> dict[str, Any]:
    """8 instances, overwrites and deletes, a client walking the feed; output events to ``topic``."""
    history = _history(events)
    deliveries = deliveries_of(history[::2] + history[1::2], 250)  # every blob's events split and reordered
    urls, processes = _serve(fleet, "feedexact", 8, {"EVENTS_TOPIC_ENDPOINT": topic.endpoint, "EVENTS_TOPIC_KEY": "bench-topic-key"})
    with processes:
        for url in urls:
            _healthy(url)
        feed = f"{urls[-1]}/api/jobs/{job.job_id}/changes"
        walked: list[dict[str, Any]] = []
        with httpx.Client(headers=_headers(), timeout=90) as client:
            cursor = client.get(feed, params={"from": "start"}).json()["cursor"]
            asyncio.run(_post_all(urls, [json.dumps(d).encode("utf-8") for d in deliveries]))
            time.sleep(FOLD_DELAY + 2.0)  # the instances fold, and publish, what they wrote
            while True:
                body = client.get(feed, params={"cursor": cursor}).json()
                cursor = body["cursor"]
                walked += body["value"]
                if not body["value"] and "nextLink" not in body:
                    break
            listed: dict[str, int] = {}
            for path in ("task-outputs", "outputs"):
                link: str | None = f"{urls[0]}/api/jobs/{job.job_id}/{path}?maxpagesize=5000"
                while link:
                    page = client.get(link if link.startswith("http") else urls[0] + link).json()
                    listed.update({i["blobName"]: i["size"] for i in page["value"]})
                    link = page.get("nextLink")
    replayed: dict[str, int] = {}
    for change in walked:
        if change["change"] in ("created", "updated", "admitted"):
            replayed[change["output"]["blobName"]] = change["output"]["size"]
        else:
            replayed.pop(change["output"]["blobName"], None)
    keys = [(c["output"]["blobName"], c["change"], c["output"]["etag"], c["at"]) for c in walked]
    return {"exact": replayed == listed and len(keys) == len(set(keys)), "changes": len(walked), "outputs": len(listed),
            "events": len(history), "changed_outputs": len({c["output"]["blobName"] for c in walked})}


def figures(azurite: Azurite, job: Job, events: list[dict[str, Any]], *, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``feed`` and ``publish`` keys of ``bench/results.json``."""
    proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
    fleet = Fleet(azurite, proxy)
    topic = _Topic()
    try:
        samples = sorted(_latency(fleet, job, events))
        p95 = samples[max(0, int(len(samples) * 0.95) - 1)] if samples else float("nan")
        say(f"  indexed → waiting client: p95 {p95:.3f} s, max {max(samples, default=float('nan')):.3f} s ({len(samples)} changes)")
        idle, idle_cpu_ms = _idle_requests(fleet, job)
        say(f"  idle long-poll ({IDLE_WAITERS} clients, wait {IDLE_WAIT_S} s): {idle:.3f} Table requests per client, "
            f"{idle_cpu_ms:.2f} ms of instance CPU per long-poll")
        ratio_job, ratio_events = ratio_workload(azurite)
        waiting = ratio(fleet, ratio_job, ratio_events, "wait", say=say)
        say(f"  ingest with {WAITERS:,} clients waiting (each for one task's outputs of a kind): "
            f"{waiting['median']:.2f}× ingest alone (median of {len(waiting['pairs'])} pairs)")
        following = ratio(fleet, ratio_job, ratio_events, "follow", say=say)
        say(f"  ingest with {WAITERS:,} clients following the whole job: {following['median']:.2f}× ingest alone "
            f"(median of {len(following['pairs'])} pairs)")
        exact = _exact(fleet, job, events, topic)
        say(f"  8 writers, overwrites and deletes: feed replayed {'equals' if exact['exact'] else 'DIFFERS FROM'} the index "
            f"({exact['changes']:,} changes, {exact['outputs']:,} outputs listed)")
        per_output = topic.requests / max(1, exact["changes"])
        say(f"  output events: {topic.events:,} events in {topic.requests} publish requests, {per_output:.4f} per output")
    finally:
        topic.stop()
        proxy.stop()
    return {
        "feed": {"p95_seconds": p95, "idle_requests_per_wait": idle, "idle_cpu_ms_per_wait": idle_cpu_ms,
                 "answer_cpu_ms": waiting["answer_cpu_ms"], "waiters_ingest_ratio": waiting["median"],
                 "exact": exact["exact"], "waiters": waiting, "followers_ingest_ratio": following["median"], "followers": following, "latency_samples": len(samples), "exact_run": exact},
        "publish": {"requests_per_output": per_output, "requests": topic.requests, "events": topic.events},
    }


def main() -> int:
    if len(sys.argv) >= 4 and sys.argv[1] == "waiters":
        filters = json.loads(sys.stdin.readline())
        with contextlib.suppress(KeyboardInterrupt):  # stopped by the benchmark once it has read the count
            print(json.dumps(asyncio.run(_waiters(sys.argv[2], sys.argv[3], filters))), flush=True)
        return 0
    # Alone: this part of the benchmark on its own Azurite (python -m bench.feed), only the
    # ingest ratio (python -m bench.feed ratio [wait|follow] [PAIRS]), or only the latency and
    # the idle long-poll's requests (python -m bench.feed waiting).
    import tempfile

    from azure.storage.blob import BlobServiceClient

    from bench.workload import EventFactory, make_job

    azurite = Azurite(location=Path(tempfile.mkdtemp(prefix="bench-feed-")), in_memory=True).start()
    try:
        job = make_job("feed-bench", 4_000, seed=12)
        factory = EventFactory(BlobServiceClient.from_connection_string(azurite.connection_string).url)
        events = [factory.created(b) for b in job.blobs]
        if len(sys.argv) >= 2 and sys.argv[1] == "waiting":  # p95 and idle requests only
            proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
            try:
                fleet = Fleet(azurite, proxy)
                samples = sorted(_latency(fleet, job, events))
                idle, idle_cpu_ms = _idle_requests(fleet, job)
                results = {"p95_seconds": samples[max(0, int(len(samples) * 0.95) - 1)], "max_seconds": samples[-1],
                           "idle_requests_per_wait": idle, "idle_cpu_ms_per_wait": idle_cpu_ms}
            finally:
                proxy.stop()
        elif len(sys.argv) >= 2 and sys.argv[1] == "ratio":
            job, events = ratio_workload(azurite)
            proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
            try:
                shapes = sys.argv[2:3] or ["wait", "follow"]
                pairs = int(sys.argv[3]) if len(sys.argv) >= 4 else RATIO_PAIRS
                results: dict[str, Any] = {s: ratio(Fleet(azurite, proxy), job, events, s, pairs=pairs, say=print) for s in shapes}
            finally:
                proxy.stop()
        else:
            results = figures(azurite, job, events, say=print)
            results = {k: {n: v for n, v in f.items() if n != "exact_run"} for k, f in results.items()}
    finally:
        azurite.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
