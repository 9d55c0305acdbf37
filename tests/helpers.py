"""Event builders for tests: payloads shaped like the documented Event Grid samples."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent / "events"


def load_events(name: str) -> list[dict[str, Any]]:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


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
    event["subject"] = f"/blobServices/default/containers/{container}/blobs/{blob_name}"
    data = event["data"]
    data["sequencer"] = sequencer if isinstance(sequencer, str) else f"{sequencer:032d}"
    data["url"] = f"https://acct.blob.core.windows.net/{container}/{blob_name}"
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
