"""Listings read each result once (issue 24): every ``TaskOutput`` of a 100,000-output job
through the API at the default page size, Table queries and entities read counted at the
transport.

The rows are written straight to the table (``bench.reconcile.write_rows``: the rows the
indexer writes); the app runs as ``make run`` serves it, its index storage behind the counting
proxy. Figures go to ``bench/results.json`` under ``listing`` (SPEC §11):
``entities_read_per_result`` (target ≤ 1.05) and ``queries_per_1000`` (target ≤ 1.05).
Run alone with ``python -m bench.listing [--small]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.reconcile import TABLE, TableReads, job_names, write_rows
from bench.workload import make_job
from devtools.azurite import Azurite, free_port
from shared.settings import PROJECT_ROOT

API_KEY = "bench-key"
KIND = "TaskOutput"


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, **env, "LOCAL_EVENT_FEED": "off"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("the app did not start")
        time.sleep(0.1)


def figures(*, small: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The ``listing`` results for every ``TaskOutput`` of a 100,000-output job (10,000 with ``--small``)."""
    size = 10_000 if small else 100_000
    job = make_job(f"listing-{size}", size, seed=5)
    expected = sum(1 for blob in job.blobs if blob.kind == KIND)
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        azurite = Azurite(location=Path(tmp), in_memory=True).start()
        proxy = TableReads(f"http://127.0.0.1:{azurite.table_port}").start()
        server = None
        try:
            say(f"  listing: writing the rows of a {size:,}-output job ({expected:,} {KIND})…")
            asyncio.run(write_rows(azurite.connection_string, TABLE, job.container, job_names(job)))
            server, url = _serve({
                "INDEX_STORAGE": proxy.connection_string(azurite.connection_string, azurite.table_port),
                "OUTPUTS_STORAGE": azurite.connection_string, "INDEX_TABLE": TABLE, "API_KEYS": API_KEY,
                "TOKEN_SIGNING_KEY": "bench",
            })
            proxy.take_reads()
            started = time.perf_counter()
            listed = 0
            pages = 0
            with httpx.Client(base_url=url, headers={"x-functions-key": API_KEY}, timeout=120) as client:
                response = client.get(f"/api/jobs/{job.job_id}/task-outputs", params={"kind": KIND})
                while True:
                    response.raise_for_status()
                    body = response.json()
                    listed += len(body["value"])
                    pages += 1
                    if "nextLink" not in body:
                        break
                    response = client.get(body["nextLink"])
            seconds = time.perf_counter() - started
            reads = proxy.take_reads()
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
            proxy.stop()
            azurite.stop()
    if listed != expected:
        raise RuntimeError(f"the listing returned {listed:,} of {expected:,} {KIND} outputs")
    results = {
        "outputs": size, "results": listed, "pages": pages, "seconds": round(seconds, 2),
        "entities_read": reads["entities_read"], "queries": reads["queries"],
        "entities_read_per_result": round(reads["entities_read"] / listed, 4),
        "queries_per_1000": round(reads["queries"] / (listed / 1000), 4),
    }
    say(f"    {results}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    print(json.dumps(figures(small=args.small), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
