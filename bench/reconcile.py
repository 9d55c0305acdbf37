"""The reconciler at scale (issue 24): what one run reads, lists and holds, whatever the job's size.

For a steady job of 30,000 and of 300,000 outputs (every blob indexed, nothing to fix) one
reconcile run is measured in a process of its own: Table entities read (counted at the
transport, from the answers), blob list calls and property reads (counted at the transport),
and its peak memory over the process at rest. Then a job of 1,000,000 outputs (``--million``;
50,000 with ``--small``) whose index is wrong in 1 % of its rows (0.5 % missing, 0.5 %
phantoms) is reconciled run after run for one whole sweep pass: how many runs, each run's
requests, seconds and peak memory, and whether the index then equals the container. With
``--budget SECONDS`` no run starts past the budget, and a pass cut short reports what it made
exact so far (``swept_exact``). On Azurite the million's index rows cannot be seeded in
reasonable time (one partition's inserts are quadratic in its store: docs/benchmarks.md), so
``--million-only N`` measures a smaller job of the same shape (200,000 this round).

The rows are written straight to the table by the bench (the rows the indexer writes for those
blobs: ``output_entity``), not through events: this measures the reconciler, not ingest.
Figures go to ``bench/results.json`` under ``reconcile`` (SPEC §11). Run alone with
``python -m bench.reconcile [--small] [--million | --million-only N] [--budget SECONDS]``
(merged into ``bench/results.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError, ServiceRequestError
from azure.data.tables.aio import TableClient

from bench.counting_proxy import CountingProxy
from bench.workload import Job, make_job
from devtools.azurite import AZURITE_BIN, Azurite, free_port, port_open
from devtools.table_proxy import TableProxy
from shared.domain import keys
from shared.domain.conventions import parse_blob_path
from shared.domain.events import BlobAction
from shared.domain.rows import LIVE, Change, Int64, output_entity
from shared.settings import PROJECT_ROOT
from shared.store.batch_encoder import submit_fast
from shared.store.clients import azurite_connection_string
from shared.store.table import sdk_entity

TABLE = "benchreconcile"
AZURITE_BLOB_BIN = AZURITE_BIN.with_name("azurite-blob")
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
        figures["requests"] = self.take().requests
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


class SeededBlobs:
    """An Azurite blob service (``azurite-blob``, on disk) whose metadata the bench writes itself.

    Azurite's blob metadata is a LokiJS database, loaded whole at start. Put Blob through its
    REST API runs at about 150 blobs/s on this shared 2-core machine (each request is parsed,
    authorised and logged by one Node.js thread): a million would take two hours. Written as the
    database file Azurite saves (the documents it writes for an empty block blob, data in name
    order, its four binary indices), 300,000 blobs load in 25-90 s, and what the reconciler
    then reads (List Blobs, Get Blob Properties) is Azurite answering as usual. (A million
    blobs' documents, as written here, make a file of 369 MB: under the longest string V8 can
    read it into.)
    """

    def __init__(self, location: Path, port: int) -> None:
        self.location = location
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    def connection_string(self) -> str:
        return azurite_connection_string("127.0.0.1", self.port, self.port + 1, self.port + 2)

    def seed(self, container: str, names: list[str]) -> float:
        """Write the database of one container holding ``names`` (empty block blobs); the
        seconds it took. Azurite must be stopped."""
        started = time.perf_counter()
        shutil.rmtree(self.location, ignore_errors=True)
        self.location.mkdir(parents=True)
        when = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        created = int(time.time() * 1000)
        ordered = sorted(names)  # JavaScript's string order is code-unit order: ASCII names sort alike
        with (self.location / "__azurite_db_blob__.json").open("w", encoding="utf-8") as db:
            db.write(json.dumps({"filename": str(self.location / "__azurite_db_blob__.json"), "databaseVersion": 1.5,
                                 "engineVersion": 1.5, "autosave": True, "autosaveInterval": 5000, "autosaveHandle": None,
                                 "throttledSaves": True, "options": {"persistenceMethod": "fs", "autosave": True,
                                 "autosaveInterval": 5000, "serializationMethod": "normal", "destructureDelimiter": "$<\n"},
                                 "persistenceMethod": "fs", "persistenceAdapter": None, "verbose": False,
                                 "events": {"init": [None], "loaded": [], "flushChanges": [], "close": [], "changes": [],
                                            "warning": []}, "ENV": "NODEJS"})[:-1])
            db.write(',"collections":[')
            db.write(json.dumps(_collection("$SERVICES_COLLECTION$", [], {})) + ",")
            box = {"accountName": ACCOUNT, "name": container, "properties": {
                "etag": '"0x1E442F38BCF6F50"', "lastModified": when, "leaseStatus": "unlocked", "leaseState": "available",
                "hasImmutabilityPolicy": False, "hasLegalHold": False}, "meta": {"revision": 0, "created": created, "version": 0},
                "$loki": 1}
            db.write(json.dumps(_collection("$CONTAINERS_COLLECTION$", [box], _indices(("accountName", "name"), 1))) + ",")
            # The blobs' collection, streamed: its documents are most of a file of hundreds of MB.
            head = json.dumps(_collection("$BLOBS_COLLECTION$", [], _indices(("accountName", "containerName", "name", "snapshot"),
                                                                               len(ordered))))
            before, after = head.split('"data": []', 1)
            db.write(before + '"data": [')
            for number, name in enumerate(ordered, start=1):
                if number > 1:
                    db.write(",")
                # What Azurite stores for an empty block blob, less what no listing needs: the
                # content MD5, the extent of zero bytes, the access tier, the creation time, the
                # lease state and status (Azurite's lease adapter fills in "available" and
                # "unlocked" when it reads a blob without them) and LokiJS's revision metadata
                # (nothing updates these documents). About 250 characters a blob, where what
                # Azurite writes itself is about 500: a million blobs' file then stays well
                # under the longest string V8 can read it into (536,870,888 characters).
                db.write(json.dumps({
                    "accountName": ACCOUNT, "containerName": container, "name": name, "properties": {
                        "lastModified": when, "etag": f'"0x{number:X}"', "contentLength": 0,
                        "contentType": "application/octet-stream", "blobType": "BlockBlob"},
                    "snapshot": "", "isCommitted": True, "$loki": number}, separators=(",", ":")))
            db.write("]" + after.replace('"maxId": 0', f'"maxId": {len(ordered)}') + ",")
            db.write(json.dumps(_collection("$BLOCKS_COLLECTION$", [], _indices(("accountName", "containerName", "blobName", "name"), 0))))
            db.write("]}")
        return time.perf_counter() - started

    def start(self, timeout: float = 1800.0) -> SeededBlobs:
        self._process = subprocess.Popen(
            [str(AZURITE_BLOB_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(self.location),
             "--skipApiVersionCheck", "--loose", "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.location)
        deadline = time.monotonic() + timeout  # a million blobs' database takes a while to load
        while not port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("azurite-blob did not start with the seeded database")
            time.sleep(0.2)
        return self

    def rss_mb(self) -> float:
        return _rss_mb(self._process.pid) if self._process is not None else 0.0

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()  # no save on the way out: the database file is the bench's
            self._process.wait()
        self._process = None


ACCOUNT = "devstoreaccount1"


def _indices(names: Iterable[str], count: int) -> dict[str, Any]:
    """Loki binary indices over documents stored in name order: for every indexed property the
    positions in that order (the account, container and snapshot are the same for all)."""
    return {name: {"name": name, "dirty": False, "values": list(range(count))} for name in names}


def _collection(name: str, data: list[dict[str, Any]], indices: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "data": data, "idIndex": None, "binaryIndices": indices, "constraints": None, "uniqueNames": [],
            "transforms": {}, "objType": name, "dirty": False, "cachedIndex": None, "cachedBinaryIndex": None,
            "cachedData": None, "adaptiveBinaryIndices": True, "transactional": False, "cloneObjects": False,
            "cloneMethod": "parse-stringify", "asyncListeners": False, "disableMeta": False, "disableChangesApi": True,
            "disableDeltaChangesApi": True, "autoupdate": False, "serializableIndices": True, "disableFreeze": True,
            "ttl": None, "maxId": len(data), "DynamicViews": [],
            "events": {"insert": [], "update": [], "pre-insert": [], "pre-update": [], "close": [], "flushbuffer": [],
                       "error": [], "delete": [None], "warning": [None]}, "changes": [], "dirtyIds": []}


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
                for attempt in range(5):
                    try:
                        answer = await submit_fast(client, [("upsert", {"PartitionKey": container, **row}, {}) for row in chunk])
                        break
                    except ServiceRequestError:  # a kept-alive connection Azurite closed meanwhile: upserts repeat
                        if attempt == 4:
                            raise
                if answer.etags is None:
                    raise RuntimeError(f"writing rows failed: {answer.status} {answer.failure}")
            return run

        await bounded(IN_FLIGHT // 2, (batch(rows[i : i + 100]) for i in range(0, len(rows), 100)))


def job_names(job: Job) -> list[str]:
    return [blob.name for blob in job.blobs]


# -- the measured process ----------------------------------------------------------------


def _rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _worker(runs: int) -> dict[str, Any]:
    """Reconcile runs in this process (the reconciler's instance); RSS at rest and at peak."""
    from shared.service import Service
    from shared.settings import Settings

    service = await Service.create(Settings.load())
    try:
        base = _rss_mb()
        # The peak is the kernel's high-water mark of this process's resident set (VmHWM),
        # reset here so that it covers the runs alone. Not ``ru_maxrss``: Linux carries a
        # parent's resident set over fork and exec into it, so a worker started by a bench
        # holding a 300,000-output job's names would report the bench's memory as its own.
        Path("/proc/self/clear_refs").write_text("5")
        reports = []
        for _ in range(runs):
            reports.append((await service.reconciler().run()).as_dict())
        peak = _rss_mb(field="VmHWM")
        return {"base_rss_mb": base, "peak_rss_mb": peak, "reports": reports}
    finally:
        await service.close()


async def _stepped_worker() -> None:
    """Reconcile runs in this process, one each time the bench asks (a line on stdin), each
    answered with its report, its seconds and this process's peak memory so far (a JSON line
    on stdout): the bench counts each run's requests between the two, and a run it never asks
    for is never made (a measurement that has to stop at a deadline keeps what it measured)."""
    from shared.service import Service
    from shared.settings import Settings

    service = await Service.create(Settings.load())
    try:
        base = _rss_mb()
        Path("/proc/self/clear_refs").write_text("5")  # the peak covers the runs alone (see ``_worker``)
        print(json.dumps({"base_rss_mb": base}), flush=True)
        for line in sys.stdin:
            if line.strip() != "run":
                break
            started = time.perf_counter()
            report = (await service.reconciler().run()).as_dict()
            print(json.dumps({"report": report, "seconds": round(time.perf_counter() - started, 2),
                              "peak_rss_mb": _rss_mb(field="VmHWM")}), flush=True)
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
            million_only: int | None = None, budget_s: float | None = None) -> dict[str, Any]:
    """The ``reconcile`` results: steady jobs of 30,000 and 300,000 outputs, and the million
    (``million_only``: that one alone, of this size)."""
    sizes = () if million_only else (3_000, 30_000) if small else (30_000, 300_000)
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        # The index on an in-memory Azurite; the outputs on an azurite-blob of their own whose
        # database the bench writes (``SeededBlobs``), seeded afresh for each job.
        azurite = Azurite(location=Path(tmp) / "tables", in_memory=True).start()
        blobs = SeededBlobs(Path(tmp) / "blobs", free_port())
        table, blob = TableReads(f"http://127.0.0.1:{azurite.table_port}"), BlobCalls(f"http://127.0.0.1:{blobs.port}")
        table.start()
        blob.start()
        try:
            env = {
                "INDEX_STORAGE": table.connection_string(azurite.connection_string, azurite.table_port),
                "OUTPUTS_STORAGE": blobs.connection_string().replace(f":{blobs.port}/", f":{blob.port}/"),
                "API_KEYS": "bench-key", "TOKEN_SIGNING_KEY": "bench",
            }
            results: dict[str, Any] = {}
            for size, label in zip(sizes, ("30000", "300000")[: len(sizes)], strict=True):
                job = make_job(f"steady-{size}", size, seed=size)
                names = job_names(job)
                say(f"  reconcile: seeding a steady job of {size:,} outputs (blobs and rows)…")
                seeding = _seed(azurite, blobs, f"{TABLE}{size}", job.container, names)
                say(f"    seeded: {seeding}")
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
                    "seeding": seeding,
                }
                say(f"    one run: {results[label]}")
            if million or small or million_only:
                size = million_only or (50_000 if small else 1_000_000)
                results["million"] = _million(azurite, blobs, env, size, table, blob, say, budget_s)
            return results
        finally:
            table.stop()
            blob.stop()
            blobs.stop()
            azurite.stop()


def _seed(azurite: Azurite, blobs: SeededBlobs, table: str, container: str, names: list[str], *,
          indexed: list[str] | None = None, phantoms: Iterable[str] = ()) -> dict[str, float]:
    """Blobs ``names`` (a fresh blob database) and the rows of ``indexed`` (default: all of
    them) and ``phantoms``; how long each took, and both Azurites' memory after."""
    blobs.stop()
    blob_s = blobs.seed(container, names)
    started = time.perf_counter()
    blobs.start()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = [*(names if indexed is None else indexed), *phantoms]
    asyncio.run(write_rows(azurite.connection_string, table, container, rows))
    rows_s = time.perf_counter() - started
    return {"blob_db_write_s": round(blob_s, 1), "blob_db_load_s": round(load_s, 1),
            "rows_per_s": round(len(rows) / rows_s), "azurite_blob_rss_mb": round(blobs.rss_mb()),
            "azurite_table_rss_mb": _process_rss(azurite)}


def _process_rss(azurite: Azurite) -> float:
    process = azurite._process  # the memory of the Azurite this bench started
    return round(_rss_mb(process.pid)) if process is not None else 0.0


def _answer(stream: Any) -> dict[str, Any]:
    """The stepped worker's next JSON line (anything else it prints is passed over)."""
    for line in stream:
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError("the reconcile worker ended without answering")


def _million(azurite: Azurite, blobs: SeededBlobs, env: dict[str, str], size: int, table: TableReads, blob: BlobCalls,
             say: Callable[[str], None], budget_s: float | None = None) -> dict[str, Any]:
    """A job of ``size`` outputs 1 % wrong, reconciled run after run (slices as deployed) for one
    whole pass of both sides, then compared with its container. Each run's requests, seconds
    and the worker's peak memory are taken between runs. Past ``budget_s`` seconds of runs no
    further run starts: the figures are then those of the runs made (``complete`` false), with
    the runs a whole pass takes, and no exactness check (it needs the whole pass)."""
    job = make_job(f"million-{size}", size, seed=3)
    names = job_names(job)
    missing = set(names[::200])  # 0.5 %: blobs no event announced
    phantoms = [f"ghost-{n:05d}/$TaskOutput/gone.bin" for n in range(len(missing))]  # 0.5 %: blobs gone unannounced
    say(f"  reconcile: seeding a job of {size:,} outputs, {len(missing):,} unindexed and {len(phantoms):,} phantom rows…")
    table_name = f"{TABLE}million"
    seeding = _seed(azurite, blobs, table_name, job.container, names, indexed=[n for n in names if n not in missing],
                    phantoms=phantoms)
    say(f"    seeded: {seeding}")
    table.take_reads()
    blob.take()
    # Slices as deployed (5,000 blobs and 5,000 rows a run): one whole pass of both sides.
    passes = -(-(size + len(phantoms)) // 5000) + 1
    started = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "bench.reconcile", "--stepped-worker"], cwd=PROJECT_ROOT,
                              env={**os.environ, **env, "INDEX_TABLE": table_name}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdin is not None and worker.stdout is not None
    runs: list[dict[str, Any]] = []
    try:
        base = _answer(worker.stdout)["base_rss_mb"]
        ready = time.perf_counter()  # the budget is the runs' alone
        while len(runs) < passes and (budget_s is None or time.perf_counter() - ready < budget_s):
            worker.stdin.write("run\n")
            worker.stdin.flush()
            answer = _answer(worker.stdout)
            reads, calls = table.take_reads(), blob.take()
            runs.append({"report": answer["report"], "seconds": answer["seconds"],
                         "peak_rss_over_base_mb": round(answer["peak_rss_mb"] - base, 1),
                         "table_requests": reads["requests"], "table_queries": reads["queries"],
                         "entities_read": reads["entities_read"], "blob_list_calls": calls["list"],
                         "blob_property_reads": calls["properties"]})
            say(f"    run {len(runs)}/{passes}: {answer['seconds']:.0f} s, {reads['requests']} Table requests "
                f"({reads['queries']} queries, {reads['entities_read']:,} entities), {calls['list']} list calls, "
                f"{calls['properties']} property reads, added {answer['report']['added']}, removed "
                f"{answer['report']['removed']}, peak {runs[-1]['peak_rss_over_base_mb']} MB over rest")
    finally:
        worker.stdin.close()
        worker.wait()
    complete = len(runs) == passes
    # The whole index against the whole container (at a million, ≈ 1,000 query pages on Azurite).
    exact = _index_equals(azurite.connection_string, table_name, job.container, set(names)) if complete else None
    swept = None if complete else swept_exact(azurite.connection_string, table_name, job.container, missing, phantoms)

    def spread(name: str) -> dict[str, float]:
        values = sorted(run[name] for run in runs)
        return {"median": values[len(values) // 2], "max": values[-1]} if values else {}

    figures = {
        "outputs": size, "runs": len(runs), "runs_for_a_pass": passes, "complete": complete,
        "peak_rss_over_base_mb": max((run["peak_rss_over_base_mb"] for run in runs), default=0.0),
        "exact": exact, "swept": swept, "added": sum(run["report"]["added"] for run in runs),
        "removed": sum(run["report"]["removed"] for run in runs),
        "table_requests": sum(run["table_requests"] for run in runs),
        "blob_calls": {"list": sum(run["blob_list_calls"] for run in runs),
                       "properties": sum(run["blob_property_reads"] for run in runs)},
        "per_run": {name: spread(name) for name in ("table_requests", "table_queries", "entities_read", "blob_list_calls",
                                                    "blob_property_reads", "seconds")},
        "seconds": round(time.perf_counter() - started), "seeding": seeding,
    }
    say(f"    {figures}")
    return figures


def reindex_through_cli(size: int, say: Callable[[str], None] = print) -> dict[str, Any]:
    """``batch-outputs reindex`` of a job of ``size`` outputs (1 % wrong, as ``_million``'s),
    through the app: a reindex that outlives its request (``REINDEX_REQUEST_SECONDS``) answers 202
    and the CLI waits on the operation. Run once by hand (``--cli-reindex N``), not by ``make bench``."""
    from bench.listing import _serve

    with tempfile.TemporaryDirectory(prefix="bench-cli-reindex-") as tmp:
        azurite = Azurite(location=Path(tmp) / "tables", in_memory=True).start()
        blobs = SeededBlobs(Path(tmp) / "blobs", free_port())
        server = None
        try:
            job = make_job(f"steady-{size}", size, seed=size)
            names = job_names(job)
            missing = set(names[::200])
            phantoms = [f"ghost-{n:05d}/$TaskOutput/gone.bin" for n in range(len(missing))]
            say(f"  seeding a job of {size:,} outputs, {len(missing):,} unindexed and {len(phantoms):,} phantom rows…")
            seeding = _seed(azurite, blobs, TABLE, job.container, names, indexed=[n for n in names if n not in missing],
                            phantoms=phantoms)
            say(f"    seeded: {seeding}")
            server, url = _serve({"INDEX_STORAGE": azurite.connection_string, "INDEX_TABLE": TABLE,
                                  "OUTPUTS_STORAGE": blobs.connection_string(), "API_KEYS": "bench-key",
                                  "TOKEN_SIGNING_KEY": "bench"})
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "batch_outputs.cli", "reindex", job.job_id, "--json"], cwd=PROJECT_ROOT,
                                  env={**os.environ, "BATCH_OUTPUTS_API": url, "BATCH_OUTPUTS_KEY": "bench-key"},
                                  capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"batch-outputs reindex failed ({done.returncode}): {done.stderr[-2000:]}")
            figures = {"outputs": size, "seconds": round(seconds), "result": json.loads(done.stdout),
                       "exact": _index_equals(azurite.connection_string, TABLE, job.container, set(names))}
            say(f"    {figures}")
            return figures
        finally:
            if server is not None:
                server.terminate()
                server.wait()
            blobs.stop()
            azurite.stop()


def _row_key(name: str) -> str:
    output = parse_blob_path(name)
    assert output is not None
    return keys.output_key(output.kind, output.path, output.task_id)


def swept_exact(connection: str, table: str, container: str, missing: Iterable[str], phantoms: Iterable[str]) -> dict[str, Any]:
    """What a pass cut short has made exact so far: the sweep's saved positions, and whether
    every unindexed blob named up to the listing's position is indexed now (and none past it
    yet), and every phantom row keyed up to the index's position is gone (and none past it
    yet). Point reads of those rows alone: the whole index read back would be ≈ 1,000 query
    pages over a million rows on Azurite."""
    async def check() -> dict[str, Any]:
        async with TableClient.from_connection_string(connection, table) as client:
            try:
                mark: dict[str, Any] = dict(await client.get_entity(keys.RECONCILE_PARTITION, container))
                blobs_after, rows_after = mark.get("BlobsAfter") or None, mark.get("RowsAfter") or None
            except ResourceNotFoundError:  # no run yet: nothing swept
                mark, blobs_after, rows_after = {}, "", ""
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def live(name: str) -> bool:
                async with slots:
                    try:
                        row = await client.get_entity(container, _row_key(name), select=["State"])
                    except ResourceNotFoundError:
                        return False
                    return bool(row.get("State") == LIVE)

            def swept(position: str | None, value: str) -> bool:
                return position is None or value <= position  # no position: the pass went round

            unindexed, ghosts = sorted(missing), sorted(phantoms, key=_row_key)
            added = [n for n in unindexed if swept(blobs_after, n)]
            removed = [n for n in ghosts if swept(rows_after, _row_key(n))]
            added_live = await asyncio.gather(*(live(n) for n in added))
            rest_live = await asyncio.gather(*(live(n) for n in unindexed if not swept(blobs_after, n)))
            removed_live = await asyncio.gather(*(live(n) for n in removed))
            kept_live = await asyncio.gather(*(live(n) for n in ghosts if not swept(rows_after, _row_key(n))))
            return {"blobs_after": blobs_after, "rows_after": rows_after, "passes": mark.get("Passes"),
                    "unindexed_swept": len(added), "unindexed_swept_now_indexed": sum(added_live),
                    "unindexed_not_swept_still_absent": len(rest_live) - sum(rest_live),
                    "unindexed_not_swept": len(rest_live),
                    "phantoms_swept": len(removed), "phantoms_swept_now_gone": len(removed) - sum(removed_live),
                    "phantoms_not_swept_still_live": sum(kept_live), "phantoms_not_swept": len(kept_live),
                    "exact_so_far": all(added_live) and not any(removed_live)}

    return asyncio.run(check())


def _index_equals(connection: str, table: str, container: str, names: set[str]) -> bool:
    async def live() -> set[str]:
        async with TableClient.from_connection_string(connection, table) as client:
            return {row["BlobName"] async for row in client.query_entities(
                "PartitionKey eq @pk and State eq 'live'", parameters={"pk": container}, select=["BlobName"])}

    return asyncio.run(live()) == names


def _record(results: dict[str, Any]) -> None:
    """Merge these figures into ``bench/results.json`` under ``reconcile`` (what a ``make bench``
    wrote there before stays; a figure measured again replaces its old value)."""
    path = PROJECT_ROOT / "bench" / "results.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.setdefault("reconcile", {}).update(results)
    path.write_text(json.dumps(recorded, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--million-only", type=int, metavar="OUTPUTS", help="only the to-exact figure, for a job of this size")
    parser.add_argument("--cli-reindex", type=int, metavar="OUTPUTS",
                        help="only `batch-outputs reindex` of a job of this size, through the long-running operation")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="the to-exact figure: start no reconcile run past this many seconds of runs (partial figures)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stepped-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.worker))))
        return 0
    if args.stepped_worker:
        asyncio.run(_stepped_worker())
        return 0
    if args.cli_reindex:
        print(json.dumps(reindex_through_cli(args.cli_reindex), indent=2))
        return 0
    results = figures(small=args.small, million=args.million, million_only=args.million_only, budget_s=args.budget)
    print(json.dumps(results, indent=2))
    _record(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
