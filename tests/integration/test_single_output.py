"""One output by its ID, with a read-only downloadUrl, over real HTTP against Azurite."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from shared.conventions import blob_name, container_name

from ..helpers import blob_event
from ..support.stack import RunningApp, settings_for

JOB = "nightly:job-7"
C = container_name(JOB)


def upload(blob_service: BlobServiceClient, container: str, name: str, data: bytes) -> None:
    client = blob_service.get_container_client(container)
    if not client.exists():
        client.create_container()
    client.upload_blob(name, data, overwrite=True)


def index(app: RunningApp, container: str, names_and_sizes: dict[str, int], start: int = 1) -> None:
    events = [blob_event(container, name, size=size, sequencer=start + i) for i, (name, size) in enumerate(names_and_sizes.items())]
    response = app.post_events(events)
    assert response.status_code == 200, response.text


def route(job: str, kind: str, path: str, task: str | None = None) -> str:
    owner = f"/api/jobs/{quote(job, safe='')}" + (f"/tasks/{quote(task, safe='')}" if task else "")
    return f"{owner}/outputs/{quote(kind, safe='')}/{quote(path, safe='/')}"


NAMES = ["thumb.png", "a b/c d.png", "hash#1.txt", "100%.txt", "what?.txt", "ünï/cødé €.bin", "deep/er/still.txt"]


@pytest.mark.parametrize("path", NAMES)
def test_task_output_download_url_reads_exactly_that_blob(app: RunningApp, blob_service: BlobServiceClient, path: str) -> None:
    name = blob_name("TaskPreview", path, "t1")
    data = f"bytes of {path}".encode()
    upload(blob_service, C, name, data)
    index(app, C, {name: len(data)})

    response = app.get(route(JOB, "TaskPreview", path, task="t1"))
    assert response.status_code == 200, response.text
    item = response.json()
    assert (item["jobId"], item["taskId"], item["kind"], item["path"], item["blobName"]) == (JOB, "t1", "TaskPreview", path, name)
    assert item["size"] == len(data)
    download = httpx.get(item["downloadUrl"])
    assert download.status_code == 200
    assert download.content == data


def test_job_output_and_key_as_code(app: RunningApp, blob_service: BlobServiceClient) -> None:
    name = blob_name("JobOutput", "movie.mp4")
    upload(blob_service, C, name, b"movie")
    index(app, C, {name: 5})
    response = httpx.get(f"{app.url}{route(JOB, 'JobOutput', 'movie.mp4')}", params={"code": "test-key-1"})
    assert response.status_code == 200, response.text
    item = response.json()
    assert item["taskId"] is None and item["blobName"] == "$JobOutput/movie.mp4"
    assert httpx.get(item["downloadUrl"]).content == b"movie"
    assert httpx.get(f"{app.url}{route(JOB, 'JobOutput', 'movie.mp4')}").status_code == 401


def test_download_url_is_read_only_one_blob_and_expires_within_the_ttl(
    serve, azurite, blob_service: BlobServiceClient
) -> None:
    app = serve(settings_for(azurite, SAS_TTL_MINUTES="7"))
    mine, sibling = "t1/$TaskOutput/mine.txt", "t1/$TaskOutput/sibling.txt"
    upload(blob_service, C, mine, b"mine")
    upload(blob_service, C, sibling, b"sibling")
    index(app, C, {mine: 4, sibling: 7})
    asked_at = datetime.now(timezone.utc)
    item = app.get(route(JOB, "TaskOutput", "mine.txt", task="t1")).json()
    url = item["downloadUrl"]

    assert httpx.get(url).content == b"mine"
    # write: the link carries read permission only
    put = httpx.put(url, content=b"overwritten", headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 403, put.text
    assert blob_service.get_blob_client(C, mine).download_blob().readall() == b"mine"
    delete = httpx.delete(url)
    assert delete.status_code == 403
    # a sibling blob with the same signature
    parts = urlsplit(url)
    sibling_url = parts._replace(path=parts.path.replace("mine.txt", "sibling.txt")).geturl()
    assert httpx.get(sibling_url).status_code == 403
    # an expiry within the TTL
    query = parse_qs(parts.query)
    assert query["sp"] == ["r"]
    assert query["sr"] == ["b"]
    expiry = datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
    assert asked_at < expiry <= asked_at + timedelta(minutes=7, seconds=1)
    assert datetime.fromisoformat(item["downloadUrlExpiresAt"].replace("Z", "+00:00")) == expiry


def test_absent_deleted_and_rejected_outputs_are_404(serve, azurite) -> None:
    app = serve(settings_for(azurite, QUOTA_MAX_OUTPUTS_PER_TASK="1"))
    index(app, C, {"t1/$TaskOutput/kept.txt": 1, "t1/$TaskOutput/rejected.txt": 1, "t2/$TaskOutput/gone.txt": 1})
    app.post_events([blob_event(C, "t2/$TaskOutput/gone.txt", deleted=True, sequencer=99)])
    assert app.get(route(JOB, "TaskOutput", "kept.txt", task="t1")).status_code == 200
    for path in [
        route(JOB, "TaskOutput", "rejected.txt", task="t1"),
        route(JOB, "TaskOutput", "gone.txt", task="t2"),
        route(JOB, "TaskOutput", "never.txt", task="t1"),
        route(JOB, "TaskLog", "kept.txt", task="t1"),  # kinds are case-sensitive and distinct
        route(JOB, "TaskOutput", "kept.txt", task="t2"),
        route(JOB, "TaskOutput", "kept.txt"),  # a job output is not a task output
        route("never-seen", "JobOutput", "x"),
    ]:
        response = app.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "OutputNotFound"


def test_task_ids_are_case_insensitive_and_invalid_ids_are_400(app: RunningApp, blob_service: BlobServiceClient) -> None:
    index(app, C, {"Task-A/$TaskLog/stdout.txt": 3})
    assert app.get(route(JOB, "TaskLog", "stdout.txt", task="task-a")).status_code == 200
    for path, code in [
        (route("bad job!", "TaskLog", "x"), "InvalidJobId"),
        (route(JOB, "TaskLog", "x", task="bad task"), "InvalidTaskId"),
        (f"/api/jobs/{quote(JOB)}/outputs/%5Cbad/x", "InvalidKind"),
    ]:
        response = app.get(path)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == code
