"""Workloads with a known truth, a sender that behaves like Event Grid, and the index check.

A workload is the full history of many blobs (creates, overwrites with new sizes, deletes),
each event with a per-blob increasing sequencer. The truth is what the newest event of each
blob says. Deliveries are those events duplicated, shuffled and split over writers.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from ..helpers import blob_event
from .stack import RunningApp

KINDS = ("TaskOutput", "TaskPreview", "TaskLog", "My Custom Kind")
#: Names a real Batch task may write: spaces, %, #, ?, unicode, nested folders.
TRICKY = ("a b.txt", "100%.log", "#hash?.png", "ünï/cødé.bin", "deep/er/still/x.dat", "o'quote.txt")


@dataclass
class Workload:
    container: str
    events: list[dict]
    #: blob name -> size, for every blob whose newest event is a create
    live: dict[str, int]

    @property
    def live_bytes(self) -> int:
        return sum(self.live.values())


def build_workload(container: str, blobs: int, *, seed: int, tasks: int = 40) -> Workload:
    """``blobs`` blobs, each with 1-5 events (creates, overwrites, deletes)."""
    rng = random.Random(seed)
    events: list[dict] = []
    live: dict[str, int] = {}
    for n in range(blobs):
        if n % 10 == 0:
            name = f"$JobOutput/job-{n}-{rng.choice(TRICKY)}"
        else:
            kind = KINDS[n % len(KINDS)]
            name = f"task-{n % tasks}/${kind}/f{n}-{TRICKY[n % len(TRICKY)]}"
        seq = rng.randrange(10**6, 10**7) * 100
        size: int | None = None
        for _ in range(rng.randint(1, 5)):
            seq += rng.randint(1, 50)
            if size is not None and rng.random() < 0.3:
                events.append(blob_event(container, name, sequencer=seq, deleted=True))
                size = None
            else:
                size = rng.randint(0, 10_000)
                events.append(blob_event(container, name, sequencer=seq, size=size))
        if size is not None:
            live[name] = size
    return Workload(container, events, live)


def deliveries(events: list[dict], *, writers: int, total: int, batch: int, seed: int) -> list[list[list[dict]]]:
    """About ``total`` event sends split over ``writers``: every event at least once, the rest
    duplicates (also across writers), each writer's stream shuffled and cut into batches."""
    rng = random.Random(seed)
    sends = list(events)
    while len(sends) < total:
        sends.append(rng.choice(events))
    rng.shuffle(sends)
    streams: list[list[dict]] = [[] for _ in range(writers)]
    for i, event in enumerate(sends):
        streams[i % writers].append(event)
    for stream in streams:
        rng.shuffle(stream)
    return [[stream[i : i + batch] for i in range(0, len(stream), batch)] for stream in streams]


@dataclass
class Sender:
    """Posts deliveries like Event Grid: redelivers whatever is handed back (429/503)."""

    app: RunningApp
    statuses: Counter[int] = field(default_factory=Counter)
    max_attempts: int = 100

    def send(self, batch: list[dict]) -> dict:
        for attempt in range(self.max_attempts):
            try:
                response = self.app.client.post("/api/events", json=batch)
            except httpx.TransportError:
                # The app itself never drops a request; only storage is faulty here.
                self.statuses[-1] += 1
                raise
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                return response.json()
            assert response.status_code in (429, 503), response.text
            assert response.headers.get("retry-after"), "a handed-back delivery must say when to retry"
            # Event Grid waits minutes; the suite waits a jittered fraction of a second.
            time.sleep(random.uniform(0.05, min(1.0, 0.05 * 2 ** min(attempt, 5))))
        raise AssertionError(f"delivery still refused after {self.max_attempts} attempts")

    def send_all(self, batches: Iterable[list[dict]]) -> None:
        for batch in batches:
            self.send(batch)

    @property
    def handed_back(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


def index_state(app: RunningApp, job: str) -> tuple[dict[str, int], dict[str, int], dict]:
    """(listed blob -> size, rejected blob -> size, summary) as the API shows them."""
    listed = app.all_pages(f"/api/jobs/{job}/task-outputs", maxpagesize=5000)
    listed += app.all_pages(f"/api/jobs/{job}/outputs", maxpagesize=5000)
    names = [item["blobName"] for item in listed]
    assert len(names) == len(set(names)), "a blob is listed twice"
    rejected = app.all_pages(f"/api/jobs/{job}/rejections", maxpagesize=5000)
    response = app.get(f"/api/jobs/{job}")
    assert response.status_code == 200, response.text
    return (
        {item["blobName"]: item["size"] for item in listed},
        {item["blobName"]: item["size"] for item in rejected},
        response.json(),
    )


def assert_quota_held(app: RunningApp, job: str, workload: Workload, limit: int) -> None:
    """Never over ``maxOutputs``; every truly live blob listed or rejected, never both; exact counts."""
    listed, rejected, summary = index_state(app, job)
    assert summary["usage"]["outputs"] <= limit
    assert summary["usage"] == {"outputs": len(listed), "bytes": sum(listed.values())}
    assert summary["rejections"] == {"outputs": len(rejected), "bytes": sum(rejected.values())}
    assert set(listed).isdisjoint(rejected)
    assert {**listed, **rejected} == workload.live
    assert rejected, "the quota never bit: the test proves nothing"


def assert_index_is_exact(app: RunningApp, job: str, workload: Workload) -> dict:
    """Listing equals the truly live blobs; usage, per-kind and task counts are exact."""
    listed, rejected, summary = index_state(app, job)
    assert rejected == {}
    missing = set(workload.live) - set(listed)
    extra = set(listed) - set(workload.live)
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} extra"
    assert listed == workload.live
    assert summary["usage"] == {"outputs": len(workload.live), "bytes": workload.live_bytes}
    assert summary["rejections"] == {"outputs": 0, "bytes": 0}
    kinds: dict[str, dict[str, int]] = {}
    tasks: set[str] = set()
    for name, size in workload.live.items():
        parts = name.split("/")
        kind = parts[0][1:] if parts[0].startswith("$") else parts[1][1:]
        if not parts[0].startswith("$"):
            tasks.add(parts[0])
        entry = kinds.setdefault(kind, {"outputs": 0, "bytes": 0})
        entry["outputs"] += 1
        entry["bytes"] += size
    assert summary["kinds"] == dict(sorted(kinds.items()))
    assert summary["tasks"] == len(tasks)
    return summary


def spread(app: RunningApp, job: str, partitions: int) -> None:
    """Give ``job`` its layout before its first output (a job of one partition: nothing to do,
    today's default is tested as such)."""
    if partitions > 1:
        response = app.client.put(f"/api/jobs/{job}/layout", json={"partitions": partitions})
        assert response.status_code == 200, response.text
        assert response.json() == {"partitions": partitions}


def rows_by_partition(app: RunningApp, container: str) -> dict[str, int]:
    """Output rows per PartitionKey of ``container``'s job, read from the table itself."""
    from azure.data.tables import TableClient

    counts: dict[str, int] = {}
    with TableClient.from_connection_string(app.settings.index_storage.connection_string or "",
                                            app.settings.index_table) as table:
        query = "PartitionKey ge @low and PartitionKey lt @high and RowKey ge 'J|' and RowKey lt 'U'"
        for row in table.query_entities(query, parameters={"low": container, "high": container + "}"},
                                        select=["PartitionKey", "RowKey"]):
            if row["PartitionKey"] == container or row["PartitionKey"].startswith(container + "|"):
                counts[row["PartitionKey"]] = counts.get(row["PartitionKey"], 0) + 1
    return counts
