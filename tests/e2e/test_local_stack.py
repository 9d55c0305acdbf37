"""The local event feed end to end: blobs uploaded to Azurite get listed; deletes remove them."""

from __future__ import annotations

import time
import uuid

from azure.storage.blob import BlobServiceClient, ContentSettings

from devtools.event_feed import EventFeed
from shared.conventions import container_name

from .conftest import TEST_KEY, RunningApp

DONE_WHEN = {
    "task-1/$TaskOutput/frames/a b#1.txt": b"frame one",
    "task-2/$TaskPreview/thumb ü%20.png": b"\x89PNG....",
    "$JobOutput/movie.mp4": b"movie" * 100,
}


def feed_until(feed: EventFeed, condition, rounds: int = 40) -> bool:
    """Run the feed round by round (as make run's thread does) until ``condition`` holds."""
    for _ in range(rounds):
        feed.run_once()
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_uploaded_blobs_are_listed_and_deletes_remove_them(app: RunningApp, blob_service: BlobServiceClient) -> None:
    job = f"MyJob-{uuid.uuid4().hex[:8]}"  # Azurite is shared by the session
    container = blob_service.get_container_client(container_name(job))
    container.create_container()
    foreign = blob_service.get_container_client(f"not-a-job-{uuid.uuid4().hex[:8]}")
    foreign.create_container()
    foreign.upload_blob("x/$TaskOutput/y", b"ignored")
    for name, data in DONE_WHEN.items():
        container.upload_blob(name, data, content_settings=ContentSettings(content_type="application/octet-stream"))

    feed = EventFeed(blob_service, f"{app.url}/api/events", TEST_KEY, interval=0.1)
    try:
        def listed() -> set[tuple]:
            items = app.all_pages(f"/api/jobs/{job}/task-outputs") + app.all_pages(f"/api/jobs/{job}/outputs")
            return {(i["taskId"], i["kind"], i["path"], i["size"]) for i in items}

        expected = {
            ("task-1", "TaskOutput", "frames/a b#1.txt", 9),
            ("task-2", "TaskPreview", "thumb ü%20.png", 8),
            (None, "JobOutput", "movie.mp4", 500),
        }
        assert feed_until(feed, lambda: listed() == expected), listed()

        container.delete_blob("task-2/$TaskPreview/thumb ü%20.png")
        assert feed_until(feed, lambda: len(listed()) == 2), listed()
        assert ("task-2", "TaskPreview", "thumb ü%20.png", 8) not in listed()

        container.upload_blob("task-1/$TaskOutput/frames/a b#1.txt", b"longer frame one", overwrite=True)
        assert feed_until(feed, lambda: ("task-1", "TaskOutput", "frames/a b#1.txt", 16) in listed())
        assert app.get(f"/api/jobs/{job}").json()["usage"] == {"outputs": 2, "bytes": 516}
        assert app.all_pages("/api/jobs") and all(j["container"].startswith("job-") for j in app.all_pages("/api/jobs"))
    finally:
        feed.close()


def test_feed_redelivers_what_is_handed_back(azurite, blob_service: BlobServiceClient, serve, settings) -> None:
    """Events produced while the app is down are delivered once it is up: never dropped."""
    job = f"LateApp-{uuid.uuid4().hex[:8]}"
    container = blob_service.get_container_client(container_name(job))
    container.create_container()
    container.upload_blob("t/$TaskOutput/a.txt", b"abc")
    feed = EventFeed(blob_service, "http://127.0.0.1:9/api/events", TEST_KEY)  # nothing listens on port 9
    try:
        feed.run_once()
        mine = [e for e in feed.pending if f"/containers/{container_name(job)}/" in e["subject"]]
        assert len(mine) == 1 and feed.delivered == 0
        app = serve(settings)
        feed.endpoint = f"{app.url}/api/events"
        assert feed_until(feed, lambda: len(app.all_pages(f"/api/jobs/{job}/task-outputs")) == 1)
        assert feed.pending == []
    finally:
        feed.close()
