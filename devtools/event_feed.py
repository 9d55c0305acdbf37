"""The local event feed: Azurite emits no events, so this stands in for Event Grid.

It polls Azurite's convention containers (``job-*``) about twice a second, diffs each listing
against the last, and delivers ``Microsoft.Storage.BlobCreated`` / ``BlobDeleted`` events in
the Event Grid schema to ``POST /api/events`` in batches, like an Event Grid webhook
subscription with batching: events handed back (429/503, or the app not up yet) are
redelivered later, in order, never dropped. Sequencers increase monotonically per feed, so
the index's per-blob ordering works as it does with real Event Grid.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

import httpx
from azure.storage.blob import BlobServiceClient

log = logging.getLogger("event-feed")
BATCH_SIZE = 500
TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"


@dataclass(frozen=True)
class BlobState:
    etag: str
    size: int
    content_type: str | None
    blob_type: str


class EventFeed:
    def __init__(self, blobs: BlobServiceClient, endpoint: str, key: str | None, interval: float = 0.5) -> None:
        self.blobs = blobs
        self.endpoint = endpoint
        self.headers = {"x-functions-key": key} if key else {}
        self.interval = interval
        self.known: dict[tuple[str, str], BlobState] = {}
        self.pending: list[dict] = []
        self._last_sequencer = 0
        self._http = httpx.Client(timeout=30)
        self.delivered = 0

    def _sequencer(self) -> str:
        self._last_sequencer = max(self._last_sequencer + 1, time.time_ns())
        return f"{self._last_sequencer:032d}"

    def _event(self, container: str, name: str, created: bool, state: BlobState | None) -> dict:
        url = f"{self.blobs.url.rstrip('/')}/{container}/{quote(name, safe='/')}"
        data: dict = {
            "api": "PutBlob" if created else "DeleteBlob",
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "contentType": (state.content_type if state else None) or "application/octet-stream",
            "blobType": state.blob_type if state else "BlockBlob",
            "url": url,
            "sequencer": self._sequencer(),
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        }
        if created and state is not None:
            data["eTag"] = state.etag
            data["contentLength"] = state.size
        return {
            "id": str(uuid.uuid4()),
            "topic": TOPIC,
            "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
            "eventType": "Microsoft.Storage.BlobCreated" if created else "Microsoft.Storage.BlobDeleted",
            "eventTime": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "dataVersion": "",
            "metadataVersion": "1",
            "data": data,
        }

    def scan(self) -> list[dict]:
        """Diff the current listing against the last one; return the events it implies."""
        seen: dict[tuple[str, str], BlobState] = {}
        for container in self.blobs.list_containers(name_starts_with="job-"):
            client = self.blobs.get_container_client(container.name)
            for blob in client.list_blobs():
                seen[(container.name, blob.name)] = BlobState(
                    etag=blob.etag,
                    size=blob.size,
                    content_type=blob.content_settings.content_type,
                    blob_type=str(blob.blob_type.value if hasattr(blob.blob_type, "value") else blob.blob_type),
                )
        events = []
        for key, state in seen.items():
            if self.known.get(key) != state:
                events.append(self._event(key[0], key[1], True, state))
        for key, state in self.known.items():
            if key not in seen:
                events.append(self._event(key[0], key[1], False, state))
        self.known = seen
        return events

    def deliver(self) -> None:
        """Send pending events in batches; keep what is handed back for the next round."""
        while self.pending:
            batch = self.pending[:BATCH_SIZE]
            try:
                response = self._http.post(self.endpoint, json=batch, headers=self.headers)
            except httpx.HTTPError as exc:
                log.debug("delivery failed (%s); will retry", exc)
                return
            if response.status_code == 200:
                del self.pending[: len(batch)]
                self.delivered += len(batch)
                continue
            if response.status_code in (400, 401, 403, 413):
                # What Event Grid would dead-letter: say so loudly, do not retry forever.
                log.error("events dead-lettered (%d): %s", response.status_code, response.text[:300])
                del self.pending[: len(batch)]
                continue
            log.warning("events handed back (%d); redelivering later", response.status_code)
            return

    def run_once(self) -> None:
        try:
            self.pending.extend(self.scan())
        except Exception as exc:  # Azurite restarting: try again next round
            log.debug("scan failed: %s", exc)
        self.deliver()

    def run(self, stop: "threading.Event | None" = None) -> None:  # noqa: F821
        while stop is None or not stop.is_set():
            started = time.monotonic()
            self.run_once()
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def close(self) -> None:
        self._http.close()
