"""The reconciler at scale (issue 24): what one run reads, lists and holds, whatever the job's size.

For a steady job of 30,000 and of 300,000 outputs (every blob indexed, nothing to fix) one
reconcile run is measured in a process of its own: Table entities read (counted at the
transport, from the answers), blob list calls and property reads (counted at the transport),
and its peak memory over the process at rest. Then a job of 1,000,000 outputs (``--million``;
50,000 with ``--small``) whose index is wrong in 1 % of its rows (0.5 % missing, 0.5 %
phantoms) is reconciled run after run until one whole sweep pass changes nothing: how many
runs, the peak memory of any, and whether the index then equals the container.

The rows are written straight to the table by the bench (the rows the indexer writes for those
blobs: ``output_entity``), not through events: this measures the reconciler, not ingest.
Figures go to ``bench/results.json`` under ``reconcile`` (SPEC §11). Run alone with
``python -m bench.reconcile [--small] [--million]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import aiohttp
from aiohttp import web
from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient
from azure.storage.blob import BlobServiceClient, generate_container_sas

from bench.counting_proxy import CountingProxy
from bench.workload import Job, make_job
from devtools.azurite import Azurite
from devtools.table_proxy import TableProxy
from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction
from shared.domain.rows import LIVE, Change, Int64, output_entity
from shared.settings import PROJECT_ROOT
from shared.store.batch_encoder import submit_fast
from shared.store.table import sdk_entity

TABLE = "benchreconcile"
IN_FLIGHT = 32


class TableReads(CountingProxy):
    """The Table meter, counting the entities every read answered too."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.entities_read = 0
        self.queries = 0

    def _count(self, request: web.Request, body: bytes, status: int, payload: bytes) -> None:
        super()._count(request, body, status, payload)
        if request.method == "GET" and status == 200 and not request.path.rstrip("/").endswith("Tables"):
            with self._lock:
                answer = json.loads(payload or b"{}")
                self.entities_read += len(answer["value"]) if "value" in answer else 1
                self.queries += "value" in answer

    def take_reads(self) -> dict[str, int]:
        with self._lock:
            figures = {"entities_read": self.entities_read, "queries": self.queries}
            self.entities_read = self.queries = 0
        self.take()
        return figures


class BlobCalls(TableProxy):
    """The blob meter: list calls, property reads and anything else sent to the outputs account."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.calls = {"list": 0, "properties": 0, "other": 0}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = parse_qs(request.query_string)
        kind = "list" if query.get("comp") == ["list"] else "properties" if request.method == "HEAD" else "other"
        self.calls[kind] += 1
        return await super()._handle(request)

    def take(self) -> dict[str, int]:
        calls, self.calls = self.calls, {"list": 0, "properties": 0, "other": 0}
        return calls


async def bounded(limit: int, work: Iterable[Callable[[], Awaitable[Any]]]) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with semaphore:
            await job()

    await asyncio.gather(*(one(job) for job in work))


async def put_blobs(connection: str, container: str, names: list[str]) -> None:
    """Empty block blobs, plain PUTs with a container SAS (setup, not measured)."""
    service = BlobServiceClient.from_connection_string(connection)
    account, key = service.credential.account_name, service.credential.account_key
    service.create_container(container)
    sas = generate_container_sas(account, container, account_key=key, permission="cw",
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=4))
    base = service.url.rstrip("/")
    service.close()
    headers = {"x-ms-blob-type": "BlockBlob", "x-ms-version": "2023-11-03", "Content-Length": "0"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        def put(name: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                async with session.put(f"{base}/{container}/{quote(name)}?{sas}", data=b"", headers=headers) as answer:
                    if answer.status != 201:
                        raise RuntimeError(f"upload of {name} answered {answer.status}")
            return run

        await bounded(IN_FLIGHT, (put(name) for name in names))


async def write_rows(connection: str, table: str, container: str, names: list[str], *,
                     extra_phantoms: Iterable[str] = ()) -> None:
    """The index rows of ``names`` (and of ``extra_phantoms``, whose blobs do not exist), the
    job's row and its counters, as the indexer would leave them: written straight, 100 a batch."""
    now = datetime.now(timezone.utc)
    rows = []
    for name in [*names, *extra_phantoms]:
        output = parse_blob_path(name)
        assert output is not None
        change = Change(container, keys.output_key(output.kind, output.path, output.task_id), output,
                        BlobAction.CREATED, "0" * 32, now, size=0, blob_type="BlockBlob")
        rows.append(sdk_entity(output_entity(change, LIVE, None, now)))
    rows.sort(key=lambda row: row["RowKey"])
    async with TableClient.from_connection_string(connection, table) as client:
        with contextlib.suppress(ResourceExistsError):  # made for an earlier size
            await client.create_table()
        await client.upsert_entity({"PartitionKey": keys.JOBS_PARTITION, "RowKey": container, "FirstSeenAt": now})
        counters = {"PartitionKey": container, "RowKey": keys.counter_key(), "Outputs": len(rows), "Bytes": Int64(0),
                    "LastIndexedAt": now}
        await client.upsert_entity(sdk_entity(counters))

        def batch(chunk: list[dict[str, Any]]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                answer = await submit_fast(client, [("upsert", {"PartitionKey": container, **row}, {}) for row in chunk])
                if answer.etags is None:
                    raise RuntimeError(f"writing rows failed: {answer.status} {answer.failure}")
            return run

        await bounded(IN_FLIGHT // 2, (batch(rows[i : i + 100]) for i in range(0, len(rows), 100)))


def job_names(job: Job) -> list[str]:
    return [blob.name for blob in job.blobs]


# -- the measured process ----------------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _worker(runs: int) -> dict[str, Any]:
    """Reconcile runs in this process (the reconciler's instance); RSS at rest and at peak."""
    from shared.service import Service
    from shared.settings import Settings

    service = await Service.create(Settings.load())
    try:
        base = _rss_mb()
        reports = []
        for _ in range(runs):
            reports.append((await service.reconciler().run()).as_dict())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"base_rss_mb": base, "peak_rss_mb": peak, "reports": reports}
    finally:
        await service.close()


def run_worker(env: dict[str, str], runs: int) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.reconcile", "--worker", str(runs)]
    done = subprocess.run(args, cwd=PROJECT_ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reconcile worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the figures -------------------------------------------------------------------------


def figures(*, small: bool = False, million: bool = False, say: Callable[[str], None] = print,
            million_only: int | None = None) -> dict[str, Any]:
    """The ``reconcile`` results: steady jobs of 30,000 and 300,000 outputs, and the million
    (``million_only``: that one alone, of this size)."""
    sizes = () if million_only else (3_000, 30_000) if small else (30_000, 300_000)
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        azurite = Azurite(location=Path(tmp), in_memory=True).start()
        table, blob = TableReads(f"http://127.0.0.1:{azurite.table_port}").start(), BlobCalls(
            f"http://127.0.0.1:{azurite.blob_port}").start()
        try:
            env = {
                "INDEX_STORAGE": table.connection_string(azurite.connection_string, azurite.table_port),
                "OUTPUTS_STORAGE": azurite.connection_string.replace(f":{azurite.blob_port}/", f":{blob.port}/"),
                "API_KEYS": "bench-key", "TOKEN_SIGNING_KEY": "bench",
            }
            results: dict[str, Any] = {}
            for size, label in zip(sizes, ("30000", "300000")[: len(sizes)], strict=True):
                job = make_job(f"steady-{size}", size, seed=size)
                names = job_names(job)
                say(f"  reconcile: seeding a steady job of {size:,} outputs (blobs and rows)…")
                asyncio.run(put_blobs(azurite.connection_string, job.container, names))
                # An index table of its own: the run reads this job alone.
                asyncio.run(write_rows(azurite.connection_string, f"{TABLE}{size}", job.container, names))
                table.take_reads()
                blob.take()
                started = time.perf_counter()
                measured = run_worker({**env, "INDEX_TABLE": f"{TABLE}{size}"}, 1)
                report = measured["reports"][0]
                reads, calls = table.take_reads(), blob.take()
                results[label] = {
                    "outputs": size,
                    "peak_rss_over_base_mb": round(measured["peak_rss_mb"] - measured["base_rss_mb"], 1),
                    "entities_read": reads["entities_read"], "table_queries": reads["queries"],
                    "blob_list_calls": calls["list"], "blob_property_reads": calls["properties"],
                    "seconds": round(time.perf_counter() - started, 1),
                    "changed": report["added"] + report["fixed"] + report["removed"],
                }
                say(f"    one run: {results[label]}")
            if million or small or million_only:
                size = million_only or (50_000 if small else 1_000_000)
                results["million"] = _million(azurite, env, size, table, blob, say)
            return results
        finally:
            table.stop()
            blob.stop()
            azurite.stop()


def _million(azurite: Azurite, env: dict[str, str], size: int, table: TableReads, blob: BlobCalls,
             say: Callable[[str], None]) -> dict[str, Any]:
    job = make_job(f"million-{size}", size, seed=3)
    names = job_names(job)
    missing = set(names[::200])  # 0.5 %: blobs no event announced
    phantoms = [f"ghost-{n:05d}/$TaskOutput/gone.bin" for n in range(len(missing))]  # 0.5 %: blobs gone unannounced
    say(f"  reconcile: seeding a job of {size:,} outputs, {len(missing):,} unindexed and {len(phantoms):,} phantom rows…")
    asyncio.run(put_blobs(azurite.connection_string, job.container, names))
    table_name = f"{TABLE}million"
    asyncio.run(write_rows(azurite.connection_string, table_name, job.container, [n for n in names if n not in missing],
                           extra_phantoms=phantoms))
    table.take_reads()
    blob.take()
    # Slices as deployed (5,000 blobs and 5,000 rows a run): one whole pass of both sides.
    passes = -(-(size + len(phantoms)) // 5000) + 1
    measured = run_worker({**env, "INDEX_TABLE": table_name}, passes)
    reports = measured["reports"]
    exact = _index_equals(azurite.connection_string, table_name, job.container, set(names))
    figures = {
        "outputs": size, "runs": len(reports),
        "peak_rss_over_base_mb": round(measured["peak_rss_mb"] - measured["base_rss_mb"], 1),
        "exact": exact, "added": sum(r["added"] for r in reports), "removed": sum(r["removed"] for r in reports),
        "table_requests": table.take().requests, "blob_calls": blob.take(),
    }
    say(f"    {figures}")
    return figures


def _index_equals(connection: str, table: str, container: str, names: set[str]) -> bool:
    async def live() -> set[str]:
        async with TableClient.from_connection_string(connection, table) as client:
            return {row["BlobName"] async for row in client.query_entities(
                "PartitionKey eq @pk and State eq 'live'", parameters={"pk": container}, select=["BlobName"])}

    return asyncio.run(live()) == names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--million-only", type=int, metavar="OUTPUTS", help="only the to-exact figure, for a job of this size")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.worker))))
        return 0
    print(json.dumps(figures(small=args.small, million=args.million, million_only=args.million_only), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
