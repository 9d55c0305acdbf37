"""Event builders for tests: payloads shaped like the documented Event Grid samples."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

EVENTS_DIR = Path(__file__).resolve().parent / "events"
#: The account the suite's Azurite serves (the outputs account of every test app): events from
#: any other account are skipped as foreign-account, as the app skips them in Azure.
LOCAL_ACCOUNT = "devstoreaccount1"
LOCAL_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
               f"/providers/Microsoft.Storage/storageAccounts/{LOCAL_ACCOUNT}")
LOCAL_BLOB_ENDPOINT = f"http://127.0.0.1:10000/{LOCAL_ACCOUNT}"


def load_events(name: str) -> list[dict[str, Any]]:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def from_local_account(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` (e.g. a documented sample) as the suite's Azurite account would send it."""
    event = copy.deepcopy(event)
    event["source" if "specversion" in event else "topic"] = LOCAL_TOPIC
    data = event.get("data")
    if isinstance(data, dict):
        for key in ("url", "sourceUrl", "destinationUrl"):
            if isinstance(data.get(key), str):
                path = data[key].split("://", 1)[-1].split("/", 1)[-1]
                data[key] = f"{LOCAL_BLOB_ENDPOINT}/{path}"
    return event


def blob_event(
    container: str,
    blob_name: str,
    *,
    deleted: bool = False,
    sequencer: int | str = 1,
    size: int = 100,
    schema: str = "eventgrid",
    content_type: str = "application/octet-stream",
) -> dict[str, Any]:
    """A BlobCreated/BlobDeleted event for ``container``/``blob_name`` in either schema."""
    template = load_events(
        f"{'cloudevents' if schema == 'cloudevents' else 'eventgrid'}_blob_{'deleted' if deleted else 'created'}.json"
    )[0]
    event = copy.deepcopy(template)
    event["id"] = str(uuid.uuid4())
    event["source" if schema == "cloudevents" else "topic"] = LOCAL_TOPIC
    event["subject"] = f"/blobServices/default/containers/{container}/blobs/{blob_name}"
    data = event["data"]
    data["sequencer"] = sequencer if isinstance(sequencer, str) else f"{sequencer:032d}"
    data["url"] = f"{LOCAL_BLOB_ENDPOINT}/{container}/{quote(blob_name, safe='/')}"
    data["contentType"] = content_type
    if not deleted:
        data["contentLength"] = size
        data["eTag"] = f"0x{uuid.uuid4().hex[:15].upper()}"
    return event


def real_blob_event(blob_service: Any, container: str, name: str, sequencer: int) -> dict[str, Any]:
    """The BlobCreated event Event Grid would send for the blob as it is now (its real size and ETag)."""
    props = blob_service.get_blob_client(container, name).get_blob_properties()
    event = blob_event(container, name, size=props.size, sequencer=sequencer,
                       content_type=props.content_settings.content_type or "application/octet-stream")
    event["data"]["eTag"] = props.etag.strip('"')
    return event


def eventually(condition: Callable[[], bool], within: float = 30.0) -> bool:
    """Poll ``condition`` until it holds; ``within`` only bounds a hang, it is not a timing check."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
