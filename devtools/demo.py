"""``make demo``: seeds the local stack of ``make run`` with a realistic rendering job.

A 240-frame shot: every task saves a preview (a real PNG), its stdout and stderr, render tiles
as intermediates and the frame itself; the job saves the encoded movie and a poster. One task
saves more than the per-task quota allows, so the job also shows rejections. The blobs are
uploaded to Azurite by convention; the event feed of ``make run`` indexes them, and this
script waits until the index holds them all, then prints the page to open.

Run again, it re-renders the shot as a job re-run would: it first deletes what the last run
saved (the index drops those outputs, and a ``batch-outputs watch`` shows each ``deleted``),
then saves everything anew.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from azure.storage.blob import BlobServiceClient, ContentSettings
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from devtools.frames import frame_png
from shared.conventions import blob_name, container_name
from shared.settings import Settings
from shared.store.clients import development_storage

APP = "http://127.0.0.1:7071"
JOB_ID = "render-shot-042"
FRAMES = 240
TILES = 4
GREEDY_TASK = 137          # saves two extra tiles: the per-task quota rejects them
QUOTA = {"maxOutputs": 2500, "maxBytes": 200 * 1024 * 1024, "maxOutputsPerTask": 8}


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    content_type: str


def stdout_log(frame: int, rng: random.Random) -> bytes:
    samples = 256
    lines = [
        "Blender 4.2.3 LTS (hash a45c36efae0f built 2025-10-14)",
        "Read blend: /mnt/batch/tasks/shared/shot-042/shot-042.blend",
        f"Fra:{frame} Mem:118.40M (Peak 118.42M) | Time:00:00.31 | Syncing Sky",
        f"Fra:{frame} Mem:402.17M (Peak 402.17M) | Time:00:02.84 | Loading render kernels",
        f"Fra:{frame} Mem:611.09M (Peak 640.55M) | Time:00:04.12 | Updating Geometry BVH Terrain 1/3",
    ]
    elapsed = 4.5
    for tile in range(TILES):
        for sample in range(0, samples + 1, 4):
            elapsed += rng.uniform(0.05, 0.12)
            minutes, seconds = divmod(elapsed, 60)
            lines.append(f"Fra:{frame} Mem:{612 + tile * 3.1:.2f}M (Peak 688.03M) | Time:{int(minutes):02d}:{seconds:05.2f} "
                         f"| Remaining:{max(0, (samples - sample) * 0.09):05.2f} | Tile {tile + 1}/{TILES} | Sample {sample}/{samples}")
        lines.append(f"Saved tile {tile}: /mnt/batch/tasks/workitems/shot-042/job-1/frame-{frame:04d}/wd/tiles/tile-{tile}.exr")
    lines += [
        f"Fra:{frame} Mem:402.11M (Peak 688.03M) | Time:{int(elapsed // 60):02d}:{elapsed % 60:05.2f} | Compositing",
        f"Saved: 'frame-{frame:04d}.exr'",
        f" Time: {int(elapsed // 60):02d}:{elapsed % 60:05.2f} (Saving: 00:00.41)",
        "Blender quit",
        f"batch-outputs save --kind TaskOutput frame-{frame:04d}.exr: done",
    ]
    return ("\n".join(lines) + "\n").encode()


def stderr_log(frame: int, rng: random.Random) -> bytes:
    lines = []
    if rng.random() < 0.3:
        lines.append(f"Warning: Fra:{frame} texture 'rock_albedo_8k.png' downscaled to fit GPU memory")
    if frame == GREEDY_TASK:
        lines.append("Warning: adaptive sampling disabled; two extra tile passes saved")
    return ("\n".join(lines) + ("\n" if lines else "")).encode()


def job_uploads(frames: int = FRAMES) -> tuple[list[Upload], list[Upload]]:
    """The job's blobs, and the greedy task's extra tiles, saved once the rest is indexed."""
    rng = random.Random(42)
    uploads: list[Upload] = []
    extra: list[Upload] = []
    greedy = min(GREEDY_TASK, frames)
    for index in range(frames):
        frame = index + 1
        task = f"frame-{frame:04d}"
        put = lambda kind, path, data, ctype, task=task: uploads.append(Upload(blob_name(kind, path, task), data, ctype))  # noqa: E731
        put("TaskPreview", "preview.png", frame_png(index, frames), "image/png")
        put("TaskLog", "stdout.txt", stdout_log(frame, rng), "text/plain; charset=utf-8")
        put("TaskLog", "stderr.txt", stderr_log(frame, rng), "text/plain; charset=utf-8")
        for tile in range(TILES):
            put("TaskIntermediate", f"tiles/tile-{tile}.exr", os.urandom(rng.randint(12_000, 40_000)), "image/x-exr")
        put("TaskOutput", f"frame-{frame:04d}.exr", os.urandom(rng.randint(150_000, 260_000)), "image/x-exr")
    uploads.append(Upload(blob_name("JobPreview", "poster.png"), frame_png(frames // 2, frames, 480, 270), "image/png"))
    uploads.append(Upload(blob_name("JobOutput", "shot-042.mp4"), os.urandom(3_500_000), "video/mp4"))
    uploads.append(Upload(blob_name("JobOutput", "edl/shot-042.edl"), b"TITLE: SHOT-042\nFCM: NON-DROP FRAME\n", "text/plain"))
    extra += [Upload(blob_name("TaskIntermediate", f"tiles/tile-{tile}-pass2.exr", f"frame-{greedy:04d}"),
                     os.urandom(rng.randint(12_000, 40_000)), "image/x-exr") for tile in range(2)]
    return uploads, extra


def clear_previous_run(container: Any, names: list[str], outputs: Callable[[], int], args: argparse.Namespace) -> bool:
    """Delete the last run's blobs and wait until the index holds none of its outputs."""
    with ThreadPoolExecutor(args.concurrency) as pool:
        for future in as_completed([pool.submit(container.delete_blob, name) for name in names]):
            future.result()
    deadline = time.monotonic() + args.timeout
    while outputs():
        if time.monotonic() > deadline:
            print("The index did not drop the last run's outputs: is the event feed of `make run` running?", file=sys.stderr)
            return False
        time.sleep(1)
    print(f"deleted the last run's {len(names)} blobs; the index dropped them")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed the local stack (make run) with a demo rendering job.")
    parser.add_argument("--app", default=APP, help="the app's base URL (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for the index")
    parser.add_argument("--frames", type=int, default=FRAMES, help="tasks of the shot (default %(default)s)")
    parser.add_argument("--job-id", default=JOB_ID, help="the job (default %(default)s)")
    parser.add_argument("--key", help="an admin key (default: the first of API_KEYS)")
    parser.add_argument("--blobs", help="the outputs account's connection string (default: the settings')")
    args = parser.parse_args(argv)

    settings = Settings.load()
    key = args.key or (settings.api_keys[0] if settings.api_keys else "")
    api = httpx.Client(base_url=args.app, headers={"x-functions-key": key}, timeout=30)
    try:
        api.get("/api/health").raise_for_status()
    except httpx.HTTPError:
        print(f"The app is not answering on {args.app}: start `make run` in another terminal first.", file=sys.stderr)
        return 1
    job_path = f"/api/jobs/{quote(args.job_id, safe='')}"
    for method, path, body in (("PUT", job_path, None), ("PUT", f"{job_path}/quota", QUOTA)):
        response = api.request(method, path, json=body)
        if response.status_code != 200:
            print(f"{method} {path}: {response.status_code} {response.text}", file=sys.stderr)
            return 1

    uploads, extra = job_uploads(args.frames)
    total = len(uploads) + len(extra)
    blobs = BlobServiceClient.from_connection_string(
        args.blobs or development_storage(settings.outputs_storage.connection_string or ""), max_single_put_size=8 * 1024 * 1024)
    container = blobs.get_container_client(container_name(args.job_id))
    if not container.exists():
        container.create_container()

    def upload(item: Upload) -> int:
        container.upload_blob(item.name, item.data, overwrite=True, content_settings=ContentSettings(content_type=item.content_type))
        return len(item.data)

    def indexed_count() -> int:
        summary = api.get(job_path).json()
        return summary.get("usage", {}).get("outputs", 0) + summary.get("rejections", {}).get("outputs", 0)

    previous = [blob.name for blob in container.list_blobs()]
    outputs = lambda: api.get(job_path).json()["usage"]["outputs"]  # noqa: E731
    if previous and not clear_previous_run(container, previous, outputs, args):
        return 1
    baseline = indexed_count()  # rejections of earlier runs stay counted

    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        uploaded = progress.add_task("upload", total=total)
        indexed = progress.add_task("index", total=total)
        deadline = time.monotonic() + args.timeout
        for phase, expected in ((uploads, baseline + len(uploads)), (extra, baseline + total)):
            with ThreadPoolExecutor(args.concurrency) as pool:
                for future in as_completed([pool.submit(upload, item) for item in phase]):
                    future.result()
                    progress.advance(uploaded)
            while (done := indexed_count()) < expected:
                progress.update(indexed, completed=done)
                if time.monotonic() > deadline:
                    print("The index did not catch up: is the event feed of `make run` running?", file=sys.stderr)
                    return 1
                time.sleep(1)
            progress.update(indexed, completed=done)
    # The page only reads: hand it a reader key when there is one (issue 23), not the admin key.
    page_key = settings.read_keys[0] if settings.read_keys and not args.key else key
    page = f"{args.app}/ui/jobs/{quote(args.job_id, safe='')}?code={quote(page_key, safe='')}"
    print(f"\n{args.frames} tasks, {total} outputs of job {args.job_id} indexed. Open:\n\n  {page}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
