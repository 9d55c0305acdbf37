"""The local event source's dead-letter destination: what Event Grid does when it gives up.

Event Grid writes the events of a subscription it stopped retrying (attempts or time to live
spent, or a 400/401/403/413 answer) to the subscription's dead-letter container, one blob per
batch, in the format ``shared.domain.deadletters`` reads. ``make run``'s feed does the same into
``DEADLETTER_CONTAINER`` of the local Azurite, so ``batch-outputs replay-deadletters`` runs end
to end locally. It writes to Azurite's own blob port, not through the event proxy: in Azure the
dead-letter container is in the index account, not the outputs account the subscription watches.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from shared.domain.deadletters import dead_letter_blob

log = logging.getLogger("event-feed")

#: The local subscription's name (Event Grid names the blobs after it, upper-cased).
SUBSCRIPTION = "local-event-feed"


class BlobDeadLetters:
    """Writes dead-lettered events (already carrying their delivery record) as one blob."""

    def __init__(self, connection_string: str, container: str, topic: str, subscription: str = SUBSCRIPTION) -> None:
        self.connection_string = connection_string
        self.container = container
        self.topic = topic
        self.subscription = subscription
        self.written: list[str] = []
        self._client: BlobServiceClient | None = None
        self._created = False

    async def __call__(self, events: list[dict[str, Any]]) -> str:
        if self._client is None:
            self._client = BlobServiceClient.from_connection_string(self.connection_string)
        container = self._client.get_container_client(self.container)
        if not self._created:
            try:
                await container.create_container()
            except ResourceExistsError:
                pass
            self._created = True
        name = dead_letter_blob(self.topic, self.subscription, datetime.now(timezone.utc))
        await container.upload_blob(name, json.dumps(events).encode("utf-8"),
                                    content_settings=ContentSettings(content_type="application/json"))
        self.written.append(name)
        log.error("%d events dead-lettered to %s/%s", len(events), self.container, name)
        return name

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
