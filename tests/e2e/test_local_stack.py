"""The local stack end to end: blobs written through the local event source (the proxy in front of
Azurite's blob endpoint, as ``make run`` serves it) are listed by the app; deletes remove them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from devtools.azurite import Azurite, free_port
from devtools.event_feed import EventFeed, Webhook
from devtools.event_proxy import EventProxy
from shared.conventions import container_name

from ..helpers import eventually
from ..support.stack import EVENTS_KEY, RunningApp

DONE_WHEN = {
    "task-1/$TaskOutput/frames/a b#1.txt": b"frame one",
    "task-2/$TaskPreview/thumb ü%20.png": b"\x89PNG....",
    "$JobOutput/movie.mp4": b"movie" * 100,
}


@pytest.fixture
def local_source(azurite: Azurite) -> Iterator[tuple[EventProxy, Webhook, BlobServiceClient]]:
    """The event source as make run wires it: a proxy on the blob endpoint posting to /api/events."""
    webhook = Webhook(f"http://127.0.0.1:{free_port()}/api/events", EVENTS_KEY)
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", EventFeed(webhook, max_backoff=0.2)).start()
    blobs = BlobServiceClient.from_connection_string(proxy.connection_string())
    yield proxy, webhook, blobs
    blobs.close()
    proxy.stop()


def test_uploaded_blobs_are_listed_and_deletes_remove_them(app: RunningApp, local_source) -> None:
    proxy, webhook, blob_service = local_source
    webhook.endpoint = f"{app.url}/api/events"
    job = f"MyJob-{uuid.uuid4().hex[:8]}"  # Azurite is shared by the session
    container = blob_service.get_container_client(container_name(job))
    container.create_container()
    foreign = blob_service.get_container_client(f"not-a-job-{uuid.uuid4().hex[:8]}")
    foreign.create_container()
    foreign.upload_blob("x/$TaskOutput/y", b"ignored")
    for name, data in DONE_WHEN.items():
        container.upload_blob(name, data, content_settings=ContentSettings(content_type="application/octet-stream"))

    def listed() -> set[tuple]:
        items = app.all_pages(f"/api/jobs/{job}/task-outputs") + app.all_pages(f"/api/jobs/{job}/outputs")
        return {(i["taskId"], i["kind"], i["path"], i["size"]) for i in items}

    expected = {
        ("task-1", "TaskOutput", "frames/a b#1.txt", 9),
        ("task-2", "TaskPreview", "thumb ü%20.png", 8),
        (None, "JobOutput", "movie.mp4", 500),
    }
    assert eventually(lambda: listed() == expected), listed()

    container.delete_blob("task-2/$TaskPreview/thumb ü%20.png")
    assert eventually(lambda: len(listed()) == 2), listed()
    assert ("task-2", "TaskPreview", "thumb ü%20.png", 8) not in listed()

    container.upload_blob("task-1/$TaskOutput/frames/a b#1.txt", b"longer frame one", overwrite=True)
    assert eventually(lambda: ("task-1", "TaskOutput", "frames/a b#1.txt", 16) in listed())
    assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 2, "bytes": 516}
    assert app.all_pages("/api/jobs") and all(j["container"].startswith("job-") for j in app.all_pages("/api/jobs"))
    assert proxy.drain(5) and proxy.feed.dead_lettered == 0


def test_feed_redelivers_what_is_handed_back(local_source, serve, settings) -> None:
    """Events raised while the app is down are delivered once it is up: never dropped."""
    proxy, webhook, blob_service = local_source  # the webhook points where nothing listens
    job = f"LateApp-{uuid.uuid4().hex[:8]}"
    container = blob_service.get_container_client(container_name(job))
    container.create_container()
    container.upload_blob("t/$TaskOutput/a.txt", b"abc")
    assert eventually(lambda: proxy.feed.failures >= 1)
    assert proxy.feed.pending == 1 and proxy.feed.delivered == 0
    app = serve(settings)
    webhook.endpoint = f"{app.url}/api/events"
    assert eventually(lambda: len(app.all_pages(f"/api/jobs/{job}/task-outputs")) == 1)
    assert proxy.drain(5) and proxy.feed.pending == 0
