"""The reconciler follows change, not size: bounded slices, a saved position per job, jobs on their own.

Against a real Azurite and the real app: each run reads at most the configured slices of a job
whatever its size, a job's sweep resumes where the last run stopped until the index equals the
container, a job with a poisoned row fails alone while another job is repaired in the same run,
and a run cut short by its time budget reaches the jobs it missed first next time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from azure.data.tables import EdmType, EntityProperty, TableClient
from azure.storage.blob import BlobServiceClient

from shared.domain import keys
from shared.domain.conventions import container_name
from shared.ingest.reconcile import Reconciler
from shared.service import Service
from shared.settings import ReconcileSettings, Settings

from ..helpers import blob_event, real_blob_event
from ..support.stack import RunningApp, settings_for
from ..support.workload import rows_by_partition, spread

#: Both layouts: one partition per job (the default), and a hot job's four (``PUT …/layout``).
LAYOUTS = pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])


def upload(blob_service: BlobServiceClient, container: str, names: list[str]) -> None:
    client = blob_service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for name in names:
        client.upload_blob(name, name.encode(), overwrite=True)


def announce(app: RunningApp, blob_service: BlobServiceClient, container: str, names: list[str]) -> None:
    """The BlobCreated events Azure sends for these blobs as they are now (size, ETag, blob type)."""
    events = [real_blob_event(blob_service, container, name, n + 1) for n, name in enumerate(names)]
    for event, name in zip(events, names, strict=True):
        kind = blob_service.get_blob_client(container, name).get_blob_properties().blob_type
        event["data"]["blobType"] = getattr(kind, "value", kind)
    for start in range(0, len(events), 500):
        assert app.post_events(events[start : start + 500]).status_code == 200


def indexed(app: RunningApp, job: str) -> set[str]:
    return {i["blobName"] for i in app.all_pages(f"/api/jobs/{job}/task-outputs")} | {
        i["blobName"] for i in app.all_pages(f"/api/jobs/{job}/outputs")}


def stored(blob_service: BlobServiceClient, container: str) -> set[str]:
    return {b.name for b in blob_service.get_container_client(container).list_blobs()}


def run(settings: Settings, configure: Callable[[Reconciler], None] | None = None, runs: int = 1) -> list[dict]:
    async def main() -> list[dict]:
        service = await Service.create(settings)
        try:
            reconciler = service.reconciler()
            if configure is not None:
                configure(reconciler)
            return [(await reconciler.run()).as_dict() for _ in range(runs)]
        finally:
            await service.close()

    return asyncio.run(main())


def with_limits(settings: Settings, **limits: int) -> Settings:
    return dataclasses.replace(settings, reconcile=dataclasses.replace(ReconcileSettings(), **limits))


@LAYOUTS
def test_a_job_is_swept_in_bounded_slices_until_the_index_equals_the_container(
        serve: Callable[..., RunningApp], settings: Settings, blob_service: BlobServiceClient, partitions: int) -> None:
    app = serve(settings)
    job = f"swept-job-{partitions}"  # the blob account outlives a test
    container = container_name(job)
    spread(app, job, partitions)
    names = [f"task-{n % 4}/$TaskOutput/f{n:03d}.bin" for n in range(40)] + [f"$JobOutput/j{n}.txt" for n in range(5)]
    upload(blob_service, container, names)
    announced = names[::2]  # half the blobs: no event for the others
    announce(app, blob_service, container, announced)
    # three rows whose blobs vanished without an event
    ghosts = [f"task-9/$TaskLog/ghost{n}.txt" for n in range(3)]
    assert app.post_events([blob_event(container, g, sequencer=100 + n) for n, g in enumerate(ghosts)]).status_code == 200
    assert indexed(app, job) == set(announced) | set(ghosts)

    small = with_limits(settings, sweep_blobs=7, sweep_rows=6)
    reports = run(small, runs=12)
    for report in reports:  # every run reads at most its slices, whatever the job's size
        assert report["blobs_listed"] <= 7  # its listing slice (6 rows are read blob by blob, not listed)
        assert report["rows_checked"] <= 6 and report["blobs_read"] <= 6 + 7
    assert indexed(app, job) == set(names)
    assert sum(r["added"] for r in reports) == len(names) - len(announced)
    assert sum(r["removed"] for r in reports) == len(ghosts)
    assert sum(r["passes_completed"] for r in reports) >= 1
    # steady state: the next runs find nothing to change
    assert all(r["added"] == r["fixed"] == r["removed"] == 0 for r in run(small, runs=3))
    assert len(rows_by_partition(app, container)) == partitions
    summary = app.get(f"/api/jobs/{job}").json()
    assert summary["usage"]["outputs"] == len(names) and summary["tasks"] == 4
    # Its container deleted, the next run removes the job from every partition.
    blob_service.delete_container(container)
    assert run(settings)[0]["jobs_removed"] == 1
    assert rows_by_partition(app, container) == {}


@pytest.mark.parametrize("poison", ["a size that is no number", "a time the SDK cannot read back"])
def test_a_poisoned_job_fails_alone_while_another_job_is_repaired_in_the_same_run(
        serve: Callable[..., RunningApp], settings: Settings, blob_service: BlobServiceClient, poison: str) -> None:
    app = serve(settings)
    suffix = "size" if poison.startswith("a size") else "time"  # the blob account outlives a test
    healthy_job = f"healthy-{suffix}"
    sick, healthy = container_name(f"sick-{suffix}"), container_name(healthy_job)
    upload(blob_service, sick, ["t1/$TaskOutput/a.txt"])
    announce(app, blob_service, sick, ["t1/$TaskOutput/a.txt"])
    upload(blob_service, healthy, ["t1/$TaskOutput/a.txt", "t1/$TaskOutput/silent.txt"])
    announce(app, blob_service, healthy, ["t1/$TaskOutput/a.txt"])
    row = keys.task_output_key("TaskOutput", "t1", "poison.txt")
    entity = {"PartitionKey": sick, "RowKey": row, "State": "live", "Seq": "1", "Kind": "TaskOutput", "TaskId": "t1",
              "Path": "poison.txt", "BlobName": "t1/$TaskOutput/poison.txt", "Scope": "task"}
    if poison.startswith("a size"):
        entity["Size"] = "not-a-number"
    else:
        entity["Size"] = EntityProperty(3, EdmType.INT64)
        entity["IndexedAt"] = datetime(1, 1, 1, tzinfo=timezone.utc)
    with TableClient.from_connection_string(settings.index_storage.connection_string or "", settings.index_table) as table:
        table.upsert_entity(entity)

    report = run(settings)[0]
    assert indexed(app, healthy_job) == {"t1/$TaskOutput/a.txt", "t1/$TaskOutput/silent.txt"}
    assert report["added"] >= 1
    if poison.startswith("a size"):
        assert report["jobs_failed"] == 1  # counted and logged; the run went on
    # and every later run still reaches the healthy job
    upload(blob_service, healthy, ["t1/$TaskOutput/later.txt"])
    run(settings)
    assert "t1/$TaskOutput/later.txt" in indexed(app, healthy_job)


class SteppedClock:
    """A clock one second further on at every reading: a run's budget in readings, not time."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return float(next(self._ticks))


def test_a_run_cut_short_reaches_the_jobs_it_missed_first_next_time(
        serve: Callable[..., RunningApp], azurite, blob_service: BlobServiceClient) -> None:
    settings = with_limits(settings_for(azurite), job_concurrency=1, run_seconds=3)
    app = serve(settings)
    jobs = [f"budget-{n}" for n in range(5)]
    for job in jobs:
        container = container_name(job)
        upload(blob_service, container, ["t/$TaskOutput/seen.txt", "t/$TaskOutput/silent.txt"])
        announce(app, blob_service, container, ["t/$TaskOutput/seen.txt"])

    def stepped(reconciler: Reconciler) -> None:
        reconciler.clock = SteppedClock()

    first = run(settings, stepped)[0]
    assert first["jobs_reconciled"] == 2 and first["jobs_deferred"] == 3  # readings 1 and 2 fit in 3 s
    reached = {job for job in jobs if "t/$TaskOutput/silent.txt" in indexed(app, job)}
    assert len(reached) == 2
    second = run(settings, stepped)[0]
    assert second["jobs_reconciled"] == 2
    third = run(settings, stepped)[0]
    assert third["jobs_reconciled"] == 2
    assert all("t/$TaskOutput/silent.txt" in indexed(app, job) for job in jobs)  # every job reached


@LAYOUTS
def test_grown_append_and_page_blobs_are_found_by_their_rows_alone(
        serve: Callable[..., RunningApp], settings: Settings, blob_service: BlobServiceClient, partitions: int) -> None:
    app = serve(settings)
    job = f"growing-job-{partitions}"
    container = container_name(job)
    spread(app, job, partitions)
    upload(blob_service, container, [f"t/$TaskOutput/still{n}.bin" for n in range(30)])
    log = blob_service.get_blob_client(container, "t/$TaskLog/stdout.txt")
    log.create_append_blob()
    disk = blob_service.get_blob_client(container, "t/$TaskOutput/disk.vhd")
    disk.create_page_blob(512)
    names = [f"t/$TaskOutput/still{n}.bin" for n in range(30)] + ["t/$TaskLog/stdout.txt", "t/$TaskOutput/disk.vhd"]
    announce(app, blob_service, container, names)
    run(settings)  # the first pass: everything already equal
    log.append_block(b"x" * 1000)
    disk.resize_blob(4096)
    report = run(with_limits(settings, sweep_blobs=1, sweep_rows=1))[0]
    assert report["fixed"] == 2
    assert report["blobs_read"] <= 2 + 1  # the two growing blobs, and the one row of the index's slice
    sizes = {i["blobName"]: i["size"] for i in app.all_pages(f"/api/jobs/{job}/task-outputs")}
    assert sizes["t/$TaskLog/stdout.txt"] == 1000 and sizes["t/$TaskOutput/disk.vhd"] == 4096


def test_the_index_side_lists_the_names_its_rows_span_instead_of_reading_each_blob(
        serve: Callable[..., RunningApp], settings: Settings, blob_service: BlobServiceClient) -> None:
    app = serve(settings)
    job, container = "listed-rows", container_name("listed-rows")
    names = [f"t{n % 5}/${kind}/f{n:03d}" for n in range(60) for kind in ("TaskLog", "TaskOutput") if (n + len(kind)) % 2]
    upload(blob_service, container, names)
    announce(app, blob_service, container, names)
    gone = names[10:13]
    for name in gone:  # deleted with no event (e.g. a dead-lettered BlobDeleted)
        blob_service.get_blob_client(container, name).delete_blob()
    report = run(with_limits(settings, sweep_blobs=1, sweep_rows=len(names)))[0]
    assert report["removed"] == len(gone)
    assert report["blobs_read"] == 0  # no blob read one by one
    assert report["list_calls"] <= 1 + 1  # the listing slice, and one listing for every row
    assert indexed(app, job) == set(names) - set(gone)
