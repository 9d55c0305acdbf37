"""The deployed paths, side by side: instances ingesting one job, Table requests counted at the transport.

Each figure runs a fleet of N separate processes against one Azurite, all of them talking to
Table storage through one ``CountingProxy``, on a fresh index table:

* ``webhook``: N ``uvicorn`` processes serving the app; deliveries of 500 are posted to them
  round robin, several in flight each, and a refused delivery is posted again (Event Grid).
* ``trigger``: N ``bench.worker`` processes, each running the ``index_blob_event`` function of
  ``function_app.py`` as the Python worker does: a delivery of 500 decoded by azure-functions'
  converter and fanned out as 500 concurrent invocations.

Counts include everything the fleet sends until it is drained: ingest, escrow grants, the
folds of usage deltas. Every run ends by checking the index against the workload: the usage,
per-kind totals and task count are exact, or the benchmark fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.counting_proxy import CountingProxy
from bench.workload import Job
from devtools.azurite import Azurite, free_port
from shared.ingest.compactor import FOLD_DELAY
from shared.settings import PROJECT_ROOT, Settings

API_KEY = "bench-key"
EVENTS_KEY = "bench-events-key"
IN_FLIGHT = 4


@dataclass
class Fleet:
    azurite: Azurite
    proxy: CountingProxy

    def settings_env(self, table: str) -> dict[str, str]:
        table_port = f":{self.azurite.table_port}/"
        return {
            "OUTPUTS_STORAGE": self.azurite.connection_string,
            "INDEX_STORAGE": self.azurite.connection_string.replace(table_port, f":{self.proxy.port}/"),
            "INDEX_TABLE": table,
            "API_KEYS": API_KEY,
            "EVENTS_KEYS": EVENTS_KEY,
            "TOKEN_SIGNING_KEY": "bench-signing-key",
        }

    def direct_settings(self, table: str) -> Settings:
        """Settings that read the index straight from Azurite (not counted)."""
        env = self.settings_env(table)
        env["INDEX_STORAGE"] = self.azurite.connection_string
        return Settings.from_mapping(env)


@contextmanager
def _processes(commands: list[list[str]], env: dict[str, str], **popen: Any) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [subprocess.Popen(c, cwd=PROJECT_ROOT, env={**os.environ, **env}, text=True, **popen) for c in commands]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(subprocess.signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


async def _post_all(urls: list[str], deliveries: list[bytes]) -> dict[str, Any]:
    """Deliveries round robin over the instances; refused ones are posted again."""
    redeliveries = 0
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=len(urls) * IN_FLIGHT + 8)) as client:
        semaphores = [asyncio.Semaphore(IN_FLIGHT) for _ in urls]

        async def post(index: int, body: bytes) -> None:
            nonlocal redeliveries
            slot = index % len(urls)
            async with semaphores[slot]:
                for _ in range(60):
                    response = await client.post(f"{urls[slot]}/api/events", content=body,
                                                 headers={"x-functions-key": EVENTS_KEY, "content-type": "application/json"})
                    if response.status_code == 200:
                        return
                    redeliveries += 1
                    await asyncio.sleep(random.uniform(0.05, 0.5))
                raise RuntimeError(f"a delivery was refused 60 times: {response.status_code} {response.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(post(i, b) for i, b in enumerate(deliveries)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "redeliveries": redeliveries}


@contextmanager
def _readers(count: int, url: str, paths: list[str]) -> Iterator[dict[str, int]]:
    """``count`` readers of ``paths`` in their own process (``bench.readers``) while the block runs."""
    answered = {"reads": 0}
    if not count:
        yield answered
        return
    command = [sys.executable, "-m", "bench.readers", str(count), url, *paths]
    with _processes([command], {}, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as (proc,):
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the readers did not start")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        yield answered
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        answered["reads"] = int(proc.stdout.readline())
        proc.wait(timeout=60)


def run_webhook(fleet: Fleet, table: str, instances: int, deliveries: list[list[dict[str, Any]]], *,
                before: Callable[[list[str]], None] | None = None, readers: int = 0, reader_paths: list[str] | None = None) -> dict[str, Any]:
    ports = [free_port() for _ in range(instances)]
    commands = [[sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"] for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    bodies = [json.dumps(d).encode("utf-8") for d in deliveries]
    with _processes(commands, fleet.settings_env(table)):
        for url in urls:
            _wait_healthy(url)
        if before is not None:
            before(urls)
        fleet.proxy.take()
        with _readers(readers, urls[0], reader_paths or []) as answered:
            posted = asyncio.run(_post_all(urls, bodies))
        time.sleep(FOLD_DELAY + 1.0)  # the instances fold what they wrote, as they would in Azure
    counts = fleet.proxy.take()  # stopping drains any fold still pending
    events = sum(len(d) for d in deliveries)
    return _figures(events, posted["seconds"], counts.as_dict(), redeliveries=posted["redeliveries"], reads=answered["reads"])


def run_trigger(fleet: Fleet, table: str, instances: int, deliveries: list[list[dict[str, Any]]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmp:
        files = []
        for number in range(instances):
            path = Path(tmp) / f"deliveries-{number}.json"
            path.write_text(json.dumps(deliveries[number::instances]), encoding="utf-8")
            files.append(path)
        commands = [[sys.executable, "-m", "bench.worker", str(path)] for path in files]
        with _processes(commands, fleet.settings_env(table), stdin=subprocess.PIPE, stdout=subprocess.PIPE) as procs:
            for proc in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a trigger worker did not start")
            fleet.proxy.take()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
            for proc in procs:  # each exits by itself once it has drained (no interrupt needed)
                proc.wait(timeout=60)
    counts = fleet.proxy.take()
    events = sum(r["events"] for r in results)
    return _figures(events, max(r["seconds"] for r in results), counts.as_dict(),
                    redeliveries=sum(r["redeliveries"] for r in results))


def _figures(events: int, seconds: float, counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {
        "events": events, "seconds": seconds, "events_per_s": events / seconds,
        "requests_per_event": counts["requests"] / events,
        "entities_per_event": counts["entities"] / events,
        "failed_tx_per_event": counts["failed_tx"] / events,
        "counts": counts, **extra,
    }


def deliveries_of(events: list[dict[str, Any]], size: int = 500) -> list[list[dict[str, Any]]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def check_exact(fleet: Fleet, table: str, job: Job) -> dict[str, Any]:
    """The index after a run: exactly the workload's usage, kinds and task count, or an error."""
    from shared.service import Service

    async def summary() -> dict[str, Any] | None:
        service = await Service.create(fleet.direct_settings(table))
        try:
            return await service.query.job_summary(job.job_id)
        finally:
            await service.close()

    found = asyncio.run(summary())
    expected_bytes = sum(b.size for b in job.blobs)
    if found is None or found["usage"] != {"outputs": len(job.blobs), "bytes": expected_bytes} or found["tasks"] != job.tasks:
        raise RuntimeError(f"index not exact after the run: {found and (found['usage'], found['tasks'])}, "
                           f"expected {len(job.blobs)} outputs, {expected_bytes} bytes, {job.tasks} tasks")
    return found


#: The trigger and the webhook in one process each, back to back this many times: a run of
#: 4,000 events lasts a second or two, and this machine's speed moves more than that between runs.
SINGLE_INSTANCE_PAIRS = 3
#: Ingest alone and with 200 readers, back to back this many times (the same reason).
READER_PAIRS = 3


def _say_run(say: Callable[[str], None], path: str, instances: int, result: dict[str, Any]) -> None:
    say(f"  {path:8} × {instances}: {result['events_per_s']:,.0f} ev/s, "
        f"{result['requests_per_event']:.3f} req/ev, {result['entities_per_event']:.2f} entities/ev, "
        f"{result['failed_tx_per_event']:.4f} failed tx/ev {result['counts']['failures'] or ''}")


def _single_instance_pairs(fleet: Fleet, job: Job, deliveries: list[list[dict[str, Any]]],
                           say: Callable[[str], None]) -> list[dict[str, dict[str, Any]]]:
    """Each path in one process, back to back, the order alternating; each run on a fresh table."""
    pairs = []
    for number in range(SINGLE_INSTANCE_PAIRS):
        order = [("webhook", run_webhook), ("trigger", run_trigger)]
        pair = {}
        for path, run in order if number % 2 == 0 else order[::-1]:
            table = f"scale{path}1n{number}"
            pair[path] = run(fleet, table, 1, deliveries)
            check_exact(fleet, table, job)
            _say_run(say, path, 1, pair[path])
        pairs.append(pair)
    return pairs


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose events/s is the median (the counts are per event, the same in every run)."""
    return sorted(results, key=lambda r: r["events_per_s"])[len(results) // 2]


def figures(azurite: Azurite, blob_endpoint: str, job: Job, events: list[dict[str, Any]], *, say: Callable[[str], None]) -> dict[str, Any]:
    """Every deployed-path figure of ``make bench``, on one job's events."""
    proxy = CountingProxy(f"http://127.0.0.1:{azurite.table_port}").start()
    fleet = Fleet(azurite, proxy)
    runs: dict[str, dict[str, Any]] = {}
    try:
        deliveries = deliveries_of(events)
        pairs = _single_instance_pairs(fleet, job, deliveries, say)
        runs["webhook-1"], runs["trigger-1"] = (_median_run([p[path] for p in pairs]) for path in ("webhook", "trigger"))
        for instances in (4, 8):
            for path, run in (("webhook", run_webhook), ("trigger", run_trigger)):
                table = f"scale{path}{instances}"
                result = run(fleet, table, instances, deliveries)
                check_exact(fleet, table, job)
                runs[f"{path}-{instances}"] = result
                _say_run(say, path, instances, result)

        total_bytes = sum(b.size for b in job.blobs)

        def far_quota(urls: list[str]) -> None:
            limits = {"maxOutputs": 10 * len(job.blobs), "maxBytes": 10 * total_bytes}
            response = httpx.put(f"{urls[0]}/api/jobs/{job.job_id}/quota", json=limits, headers={"x-functions-key": API_KEY}, timeout=60)
            response.raise_for_status()

        quota = run_webhook(fleet, "scalequota", 4, deliveries, before=far_quota)
        check_exact(fleet, "scalequota", job)
        say(f"  quota far from its limit, 4 instances: {quota['requests_per_event']:.3f} req/ev, "
            f"{quota['failed_tx_per_event']:.4f} failed tx/ev")

        previews = f"/api/jobs/{job.job_id}/task-outputs?kind=TaskPreview&maxpagesize=100"
        task = sorted({b.task_id for b in job.blobs if b.task_id})[0]
        paths = [f"/api/jobs/{job.job_id}", previews, "/api/jobs", f"/api/jobs/{job.job_id}/tasks/{task}/outputs"]
        reader_pairs = []
        for number in range(READER_PAIRS):  # alone and with readers, back to back, the order alternating
            pair = {}
            for with_readers in ((False, True) if number % 2 == 0 else (True, False)):
                table = f"scalereaders{number}{'r' if with_readers else 'a'}"
                pair[with_readers] = run_webhook(fleet, table, 1, deliveries, readers=200 if with_readers else 0, reader_paths=paths)
                check_exact(fleet, table, job)
            say(f"  webhook × 1 with 200 readers: {pair[True]['events_per_s']:,.0f} ev/s ({pair[True]['reads']:,} reads answered), "
                f"alone {pair[False]['events_per_s']:,.0f} ev/s")
            reader_pairs.append(pair)
    finally:
        proxy.stop()

    trigger = runs["trigger-1"]
    ratios = [p["trigger"]["events_per_s"] / p["webhook"]["events_per_s"] for p in pairs]
    reader_ratios = [p[True]["events_per_s"] / p[False]["events_per_s"] for p in reader_pairs]
    return {
        "runs": runs,
        "trigger": {
            "requests_per_event": trigger["requests_per_event"],
            "entities_per_event": trigger["entities_per_event"],
            "ratio_vs_webhook": statistics.median(ratios),
            "ratio_pairs": ratios,
        },
        "scaleout": {
            str(n): {
                "failed_tx_per_event": max(runs[f"{p}-{n}"]["failed_tx_per_event"] for p in ("webhook", "trigger")),
                "requests_per_event": max(runs[f"{p}-{n}"]["requests_per_event"] for p in ("webhook", "trigger")),
            }
            for n in (4, 8)
        },
        "quota": {"requests_per_event": quota["requests_per_event"], "run": quota},
        "readers": {
            "ingest_ratio": statistics.median(reader_ratios),
            "ratio_pairs": reader_ratios,
            "run": _median_run([p[True] for p in reader_pairs]),
            "alone": _median_run([p[False] for p in reader_pairs]),
        },
    }
