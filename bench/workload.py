"""Synthetic but realistic Batch jobs: many tasks, the predefined kinds, paths with folders.

A task of a render-like job writes, in the order a real task would: intermediates while it
works, its frames under folders, one preview thumbnail, then its stdout/stderr logs. Tasks run
in waves (a pool of nodes), so the events of one wave interleave the way Event Grid delivers
them. Events have the shape of ``tests/helpers.py``'s ``blob_event`` (the documented Event Grid
BlobCreated sample), built from the template once.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shared.conventions import blob_name, container_name

TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "events" / "eventgrid_blob_created.json"

#: The outputs of one task (20 blobs): kind, path. One preview per task, as a renderer makes.
TASK_OUTPUTS: tuple[tuple[str, str], ...] = (
    *(("TaskIntermediate", f"scratch/part-{i:02d}.bin") for i in range(3)),
    *(("TaskOutput", f"frames/shot-{i // 7:02d}/frame-{i:04d}.exr") for i in range(14)),
    ("TaskPreview", "thumbnails/preview.png"),
    ("TaskLog", "stdout.txt"),
    ("TaskLog", "stderr.txt"),
)
JOB_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("JobOutput", "reports/summary.json"),
    ("JobOutput", "reports/frames.csv"),
    ("JobPreview", "montage/contact-sheet.png"),
)
#: Tasks running at once (a pool of nodes); their events interleave.
WAVE = 64

_SIZES = {"TaskIntermediate": 4 << 20, "TaskOutput": 12 << 20, "TaskPreview": 48 << 10,
          "TaskLog": 8 << 10, "JobOutput": 64 << 10, "JobPreview": 256 << 10}


@dataclass(frozen=True, slots=True)
class Blob:
    job_id: str
    container: str
    task_id: str | None
    kind: str
    path: str
    name: str
    size: int


@dataclass(frozen=True)
class Job:
    job_id: str
    blobs: tuple[Blob, ...]

    @property
    def container(self) -> str:
        return container_name(self.job_id)

    @property
    def tasks(self) -> int:
        return len({b.task_id for b in self.blobs if b.task_id})

    def of_kind(self, kind: str) -> list[Blob]:
        return [b for b in self.blobs if b.kind == kind]

    def of_task(self, task_id: str) -> list[Blob]:
        return [b for b in self.blobs if b.task_id == task_id]


def make_job(job_id: str, total_blobs: int, seed: int = 7) -> Job:
    """A job of exactly ``total_blobs`` blobs, in the order their events would arrive."""
    rng = random.Random(seed)
    container = container_name(job_id)
    task_count = (total_blobs - len(JOB_OUTPUTS)) // len(TASK_OUTPUTS)
    spare = total_blobs - len(JOB_OUTPUTS) - task_count * len(TASK_OUTPUTS)
    ordered: list[Blob] = []

    def blob(task_id: str | None, kind: str, path: str) -> Blob:
        size = max(0, int(rng.gauss(_SIZES[kind], _SIZES[kind] / 4)))
        return Blob(job_id, container, task_id, kind, path, blob_name(kind, path, task_id=task_id), size)

    for wave_start in range(0, task_count, WAVE):
        streams: list[list[Blob]] = []
        for number in range(wave_start, min(task_count, wave_start + WAVE)):
            task_id = f"render-{number:05d}"
            outputs = list(TASK_OUTPUTS)
            if number < spare:
                outputs.append(("TaskOutput", "frames/extra/frame-9999.exr"))
            streams.append([blob(task_id, kind, path) for kind, path in outputs])
        # Interleave the running tasks: each keeps its own order, the wave is shuffled.
        while streams:
            stream = rng.choice(streams)
            ordered.append(stream.pop(0))
            if not stream:
                streams.remove(stream)
    ordered.extend(blob(None, kind, path) for kind, path in JOB_OUTPUTS)
    assert len(ordered) == total_blobs, (len(ordered), total_blobs)
    return Job(job_id, tuple(ordered))


class EventFactory:
    """BlobCreated events in the Event Grid schema, with increasing sequencers."""

    def __init__(self, blob_endpoint: str) -> None:
        self._template = json.loads(TEMPLATE.read_text(encoding="utf-8"))[0]
        self._endpoint = blob_endpoint.rstrip("/")
        self._sequence = 0
        # The topic names the account the blobs are in (Azurite's: the endpoint's last segment).
        account = self._endpoint.rsplit("/", 1)[-1]
        self._topic = self._template["topic"].rsplit("/", 1)[0] + "/" + account

    def created(self, blob: Blob) -> dict[str, Any]:
        self._sequence += 1
        event = copy.deepcopy(self._template)
        event["id"] = str(uuid.uuid4())
        event["topic"] = self._topic
        event["eventTime"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        event["subject"] = f"/blobServices/default/containers/{blob.container}/blobs/{blob.name}"
        data = event["data"]
        data["sequencer"] = f"{self._sequence:032d}"
        data["url"] = f"{self._endpoint}/{blob.container}/{blob.name}"
        data["contentType"] = "image/png" if blob.name.endswith(".png") else "application/octet-stream"
        data["contentLength"] = blob.size
        data["eTag"] = f"0x{uuid.uuid4().hex[:15].upper()}"
        return event


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
