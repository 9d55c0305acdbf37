"""The client's figures (issue 22): bulk downloads and listings through ``OutputIndexClient``,
each against the baseline the issue names, measured side by side on the same stack.

* ``download.ratio_vs_ceiling``: ``download_outputs`` of the demo job's 240 previews (a fresh
  folder each run) against the ceiling, a raw azure-storage-blob parallel download of the same
  blobs with the same concurrency (8 threads, one shared ``ContainerClient``); time ratio,
  ceiling / client (target >= 0.8).
* ``download.ratio_vs_loop``: against the loop the issue timed, one ``batch-outputs get`` per
  output (after one ``ls --json``); the loop is timed over a sample of ``LOOP_SAMPLE`` outputs
  and scaled to 240 (each ``get`` is the same process start and two requests) (target >= 10).
* ``client.list_ratio``: ``list_outputs`` of every ``TaskOutput`` of a job of 6,000 outputs
  through the client against raw ``httpx`` paging of the same route with the same page size;
  time ratio, raw / client (target >= 0.9).

Run alone with ``python -m bench.client`` (its own stack), or as part of ``make bench``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from azure.core.credentials import AzureKeyCredential
from azure.storage.blob import BlobServiceClient, ContainerClient

from batch_outputs import OutputIndexClient
from bench.stack import API_KEY, EVENTS_KEY, Stack
from bench.workload import Blob, EventFactory, batches
from devtools.frames import frame_png
from shared.conventions import container_name

PREVIEWS = 240
CONCURRENCY = 8
LOOP_SAMPLE = 24
LIST_OUTPUTS = 6_000
ROOT = Path(__file__).resolve().parent.parent


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def seed(stack: Stack, blobs: BlobServiceClient, job_id: str, contents: dict[str, bytes]) -> ContainerClient:
    """Upload the blobs and deliver their BlobCreated events (real ETags) to the app."""
    container = blobs.get_container_client(container_name(job_id))
    container.create_container()
    factory = EventFactory(blobs.url)

    def put(item: tuple[str, bytes]) -> dict[str, Any]:
        name, data = item
        etag = container.get_blob_client(name).upload_blob(data)["etag"]
        task, _, rest = name.partition("/$")
        kind, _, path = rest.partition("/")
        event = factory.created(Blob(job_id, container.container_name, task or None, kind, path, name, len(data)))
        event["data"]["eTag"] = etag.strip('"')
        return event

    with ThreadPoolExecutor(16) as pool:
        events = list(pool.map(put, contents.items()))
    with httpx.Client(base_url=stack.url, headers={"x-functions-key": EVENTS_KEY}, timeout=120) as http:
        for batch in batches(events, 500):
            response = http.post("/api/events", json=batch)
            assert response.status_code == 200, response.text
    return container


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def download_figures(stack: Stack, blobs: BlobServiceClient, runs: int, say: Callable[[str], None]) -> dict[str, Any]:
    job = "bench-previews"
    contents = {f"frame-{i:03}/$TaskPreview/preview.png": frame_png(i, PREVIEWS) for i in range(PREVIEWS)}
    container = seed(stack, blobs, job, contents)
    scratch = Path(tempfile.mkdtemp(prefix="bench-client-"))
    client = OutputIndexClient(stack.url, AzureKeyCredential(API_KEY))
    try:
        def through_client() -> Any:
            dest = scratch / "client"
            shutil.rmtree(dest, ignore_errors=True)
            report = client.download_outputs(job, dest, kind="TaskPreview", max_concurrency=CONCURRENCY)
            assert len(report.downloaded) == PREVIEWS and report.ok, report
            return report

        def ceiling() -> int:
            dest = scratch / "raw"
            shutil.rmtree(dest, ignore_errors=True)

            def one(name: str) -> int:
                target = dest / name.replace("$", "")
                target.parent.mkdir(parents=True, exist_ok=True)
                data = container.get_blob_client(name).download_blob().readall()
                target.write_bytes(data)
                return len(data)

            with ThreadPoolExecutor(CONCURRENCY) as pool:
                return len(list(pool.map(one, contents)))

        pairs = []
        for _ in range(runs):
            raw_s, _ = timed(ceiling)
            client_s, _ = timed(through_client)
            pairs.append({"ceiling_s": raw_s, "client_s": client_s, "ratio": raw_s / client_s})
        resumed_s, again = timed(lambda: client.download_outputs(job, scratch / "client", kind="TaskPreview"))
        assert again.downloaded == () and len(again.skipped) == PREVIEWS

        cli = [sys.executable, "-c", "from batch_outputs.cli import main; main()"]
        env = {**os.environ, "BATCH_OUTPUTS_API": stack.url, "BATCH_OUTPUTS_KEY": API_KEY}
        loop_dir = scratch / "loop"
        loop_dir.mkdir()

        def loop() -> int:
            listed = json.loads(subprocess.run([*cli, "ls", job, "--kind", "TaskPreview", "--json"], env=env, cwd=loop_dir,
                                               capture_output=True, check=True, text=True).stdout)
            for item in listed[:LOOP_SAMPLE]:
                subprocess.run([*cli, "get", job, "--task", item["taskId"], "--kind", "TaskPreview", item["path"],
                                "-o", f"{item['taskId']}.png"], env=env, cwd=loop_dir, capture_output=True, check=True)
            return len(listed)

        loop_s, listed = timed(loop)
        assert listed == PREVIEWS
        loop_240_s = loop_s * PREVIEWS / LOOP_SAMPLE
        client_s = median([p["client_s"] for p in pairs])
        figures = {
            "previews": PREVIEWS, "bytes": sum(len(v) for v in contents.values()), "max_concurrency": CONCURRENCY,
            "pairs": pairs, "client_s": client_s, "ceiling_s": median([p["ceiling_s"] for p in pairs]),
            "ratio_vs_ceiling": median([p["ratio"] for p in pairs]),
            "loop_sample": LOOP_SAMPLE, "loop_sample_s": loop_s, "loop_s_for_240": loop_240_s,
            "ratio_vs_loop": loop_240_s / client_s, "second_run_s": resumed_s, "second_run_downloaded": len(again.downloaded),
        }
        say(f"  download_outputs {client_s:.2f} s, raw ceiling {figures['ceiling_s']:.2f} s ({figures['ratio_vs_ceiling']:.2f}x), "
            f"get loop {loop_240_s:.0f} s for 240 ({figures['ratio_vs_loop']:.0f}x); second run {resumed_s:.2f} s, nothing transferred")
        return figures
    finally:
        client.close()
        shutil.rmtree(scratch, ignore_errors=True)


def list_figures(stack: Stack, blobs: BlobServiceClient, runs: int, say: Callable[[str], None]) -> dict[str, Any]:
    job = "bench-listing"
    contents = {f"task-{i // 20:04}/$TaskOutput/out-{i % 20:02}.bin": b"x" for i in range(LIST_OUTPUTS)}
    seed(stack, blobs, job, contents)
    route = f"/api/jobs/{job}/task-outputs"

    with OutputIndexClient(stack.url, AzureKeyCredential(API_KEY)) as client, \
            httpx.Client(base_url=stack.url, headers={"x-functions-key": API_KEY}, timeout=120) as http:
        def raw() -> int:
            count, response = 0, http.get(route, params={"kind": "TaskOutput", "maxpagesize": 1000})
            while True:
                body = response.json()
                count += len(body["value"])
                if not body.get("nextLink"):
                    return count
                response = http.get(body["nextLink"])

        def through_client() -> int:
            return sum(1 for _ in client.list_outputs(job, kind="TaskOutput"))

        pairs = []
        for _ in range(runs):
            raw_s, raw_n = timed(raw)
            client_s, client_n = timed(through_client)
            assert raw_n == client_n == LIST_OUTPUTS
            pairs.append({"raw_s": raw_s, "client_s": client_s, "ratio": raw_s / client_s})
    ratio = median([p["ratio"] for p in pairs])
    say(f"  list_outputs of {LIST_OUTPUTS:,}: client {median([p['client_s'] for p in pairs]):.2f} s, "
        f"raw paging {median([p['raw_s'] for p in pairs]):.2f} s ({ratio:.2f}x)")
    return {"outputs": LIST_OUTPUTS, "pairs": pairs, "list_ratio": ratio}


def figures(stack: Stack, *, runs: int = 5, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The SPEC section 11 keys ``download`` and ``client`` of ``bench/results.json``."""
    blobs = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    try:
        say(f"[bold]Client[/]: download_outputs of {PREVIEWS} previews, list_outputs of {LIST_OUTPUTS:,} outputs…")
        return {"download": download_figures(stack, blobs, runs, say), "client": list_figures(stack, blobs, runs, say)}
    finally:
        blobs.close()


def main() -> int:
    """``python -m bench.client``: these figures alone, on a stack of their own, printed as JSON."""
    stack = Stack().start()
    try:
        result = figures(stack, say=lambda line: print(line.replace("[bold]", "").replace("[/]", "")))
    finally:
        stack.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
