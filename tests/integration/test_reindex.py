"""Reindex: the index becomes the container's convention blobs, counters exact, races safe."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from azure.storage.blob import BlobServiceClient

from shared.conventions import container_name, parse_blob_path

from ..helpers import blob_event, real_blob_event
from ..support.stack import RunningApp, settings_for
from ..support.workload import rows_by_partition, spread

#: Both layouts: one partition per job (the default), and a hot job's four (``PUT …/layout``).
LAYOUTS = pytest.mark.parametrize("partitions", [1, 4], ids=["one-partition", "four-partitions"])

BLOBS = {
    **{f"task-{n % 4}/$TaskOutput/frames/{n:02d}.png": n + 1 for n in range(12)},
    "task-1/$TaskPreview/thumb #1 ü.png": 40,
    "task-2/$TaskLog/stdout 100%.txt": 50,
    "$JobOutput/movie?.mp4": 60,
    "$JobPreview/poster.png": 70,
    "$MyKind/custom.bin": 80,
    "task-3/$TaskIntermediate/a/b/c.bin": 90,
}
NOT_CONVENTION = ["loose.txt", "task-1/no-kind.txt"]


def new_job() -> tuple[str, str]:
    job = f"reindex:job-{uuid.uuid4().int % 10**9}"
    return job, container_name(job)


def upload_all(blob_service: BlobServiceClient, container: str, blobs: dict[str, int]) -> None:
    client = blob_service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for name, size in blobs.items():
        client.upload_blob(name, b"x" * size, overwrite=True)


def truth(blob_service: BlobServiceClient, container: str) -> dict[str, int]:
    return {
        b.name: b.size
        for b in blob_service.get_container_client(container).list_blobs()
        if parse_blob_path(b.name) is not None
    }


def indexed(app: RunningApp, job: str) -> dict[str, int]:
    items = app.all_pages(f"/api/jobs/{job}/outputs") + app.all_pages(f"/api/jobs/{job}/task-outputs")
    assert len(items) == len({i["blobName"] for i in items})
    return {i["blobName"]: i["size"] for i in items}


def assert_index_equals_container(app: RunningApp, blob_service: BlobServiceClient, job: str, container: str) -> None:
    expected = truth(blob_service, container)
    assert indexed(app, job) == expected
    summary = app.get(f"/api/jobs/{job}").json()
    assert summary["usage"] == {"outputs": len(expected), "bytes": sum(expected.values())}
    kinds: Counter[str] = Counter()
    kind_bytes: Counter[str] = Counter()
    for name, size in expected.items():
        kind = parse_blob_path(name).kind  # type: ignore[union-attr]
        kinds[kind] += 1
        kind_bytes[kind] += size
    assert summary["kinds"] == {k: {"outputs": kinds[k], "bytes": kind_bytes[k]} for k in kinds}
    assert summary["tasks"] == len({n.split("/")[0] for n in expected if not n.startswith("$")})


def reindex(app: RunningApp, job: str) -> dict:
    response = app.client.post(f"/api/jobs/{job}/reindex")
    assert response.status_code == 200, response.text
    return response.json()


@LAYOUTS
def test_reindex_repairs_lost_phantom_resized_and_wrongly_deleted_entries(app: RunningApp, blob_service: BlobServiceClient,
                                                                          partitions: int) -> None:
    job, container = new_job()
    spread(app, job, partitions)
    upload_all(blob_service, container, BLOBS)
    upload_all(blob_service, container, dict.fromkeys(NOT_CONVENTION, 3))
    names = sorted(BLOBS)
    lost, resized, wrongly_deleted = names[:4], names[4], names[5]
    seq = 100
    events = []
    for name in names[4:]:
        seq += 1
        events.append(real_blob_event(blob_service, container, name, seq))
    events.append(blob_event(container, "task-9/$TaskOutput/ghost.bin", size=500, sequencer=seq + 1))  # phantom
    events.append(blob_event(container, resized, size=999, sequencer=seq + 2))  # wrong size
    events.append(blob_event(container, wrongly_deleted, deleted=True, sequencer=seq + 3))  # blob still there
    assert app.post_events(events).status_code == 200
    assert indexed(app, job) != truth(blob_service, container)

    report = reindex(app, job)
    assert report == {"jobId": job, "container": container, "added": 5, "fixed": 1, "removed": 1,
                      "unchanged": len(BLOBS) - 4 - 1 - 1}
    assert_index_equals_container(app, blob_service, job, container)
    assert len(rows_by_partition(app, container)) == partitions

    # idempotent: a second run finds nothing to do and changes no counter
    before = app.get(f"/api/jobs/{job}").json()
    again = reindex(app, job)
    assert (again["added"], again["fixed"], again["removed"], again["unchanged"]) == (0, 0, 0, len(BLOBS))
    assert app.get(f"/api/jobs/{job}").json() == before

    # a real event still wins over the synthetic ones
    victim = lost[0]
    blob_service.get_blob_client(container, victim).delete_blob()
    assert app.post_events([blob_event(container, victim, deleted=True, sequencer=seq + 10)]).status_code == 200
    assert_index_equals_container(app, blob_service, job, container)


def test_reindex_rebuilds_an_empty_index(serve, azurite, blob_service: BlobServiceClient) -> None:
    job, container = new_job()
    upload_all(blob_service, container, BLOBS)
    app = serve(settings_for(azurite))  # a fresh table: everything was lost
    assert app.get(f"/api/jobs/{job}").status_code == 404
    report = reindex(app, job)
    assert (report["added"], report["fixed"], report["removed"], report["unchanged"]) == (len(BLOBS), 0, 0, 0)
    assert_index_equals_container(app, blob_service, job, container)
    (item,) = [i for i in app.all_pages(f"/api/jobs/{job}/outputs") if i["kind"] == "JobOutput"]
    assert item["etag"] == blob_service.get_blob_client(container, "$JobOutput/movie?.mp4").get_blob_properties().etag.strip('"')


def test_reindex_while_events_keep_arriving_ends_exact(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job, container = new_job()
    many = {f"task-{n % 7}/$TaskOutput/{n:03d}.bin": (n % 13) + 1 for n in range(120)}
    upload_all(blob_service, container, many)
    names = sorted(many)
    # some blobs change after upload: overwritten (new size) or deleted, with their events
    later: list[dict] = []
    seq = 1000
    for name in names[::9]:
        blob_service.get_blob_client(container, name).upload_blob(b"y" * 77, overwrite=True)
    for name in names[::11]:
        blob_service.get_blob_client(container, name).delete_blob()
    for name in names:
        seq += 1
        if blob_service.get_blob_client(container, name).exists():
            later.append(real_blob_event(blob_service, container, name, seq))
        else:
            later.append(blob_event(container, name, deleted=True, sequencer=seq))
    failures: list[str] = []

    def deliver() -> None:
        for start in range(0, len(later), 6):
            response = app.post_events(later[start:start + 6])
            if response.status_code != 200:
                failures.append(response.text)

    feeder = threading.Thread(target=deliver)
    feeder.start()
    reports = [reindex(app, job), reindex(app, job)]
    feeder.join()
    assert failures == []
    assert_index_equals_container(app, blob_service, job, container)
    # and once more, now that the events are all in: nothing left to repair
    final = reindex(app, job)
    assert (final["added"], final["fixed"], final["removed"]) == (0, 0, 0), reports


def test_reindex_of_unknown_or_invalid_jobs(app: RunningApp) -> None:
    response = app.client.post("/api/jobs/never-created/reindex")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "JobNotFound"
    assert app.client.post("/api/jobs/bad%20job/reindex").status_code == 400
    assert app.client.post("/api/jobs/never-created/reindex", headers={"x-functions-key": "wrong"}).status_code == 401


@LAYOUTS
def test_reindex_of_a_deleted_container_removes_every_entry(app: RunningApp, blob_service: BlobServiceClient,
                                                            partitions: int) -> None:
    job, container = new_job()
    spread(app, job, partitions)
    upload_all(blob_service, container, {"t1/$TaskOutput/a": 5, "$JobOutput/b": 6})
    app.post_events([real_blob_event(blob_service, container, n, i + 1) for i, n in enumerate(["t1/$TaskOutput/a", "$JobOutput/b"])])
    blob_service.delete_container(container)
    report = reindex(app, job)
    assert (report["added"], report["removed"]) == (0, 2)
    assert indexed(app, job) == {}
    assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 0, "bytes": 0}
