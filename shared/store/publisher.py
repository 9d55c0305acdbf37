"""``Batch.Outputs.QuotaExceeded``: one CloudEvent when a job first crosses a limit (SPEC §4).

Published with azure-eventgrid's async publisher client to the custom topic in
``EVENTS_TOPIC_ENDPOINT``: with ``EVENTS_TOPIC_KEY`` when set, else with the app's managed
identity (the index account's client ID, else the outputs account's). Not published when the
endpoint is unset. The indexer decides *when* (once per job and crossing, see
``shared.ingest.crossings``); this module only says it. The CloudEvent ``id`` is the crossing's own
ID, so a retried publication carries the same ID and subscribers can drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient

from shared.domain.quotas import QuotaCrossing
from shared.settings import Settings

log = logging.getLogger(__name__)

QUOTA_EXCEEDED = "Batch.Outputs.QuotaExceeded"
SOURCE = "/batch-output-index"
#: Publishing happens after the delivery is durable but before the webhook answers: bound it.
PUBLISH_TIMEOUT_SECONDS = 5.0

JobIdLookup = Callable[[str], Awaitable[str | None]]


class NotificationError(Exception):
    """A QuotaExceeded event could not be published (it is retried on the next crossing)."""


def quota_exceeded_event(crossing: QuotaCrossing, job_id: str | None) -> CloudEvent:
    limits = crossing.limits
    return CloudEvent(
        source=SOURCE,
        type=QUOTA_EXCEEDED,
        subject=f"/jobs/{job_id}" if job_id else f"/containers/{crossing.container}",
        id=crossing.event_id,
        time=crossing.detected_at,
        data={
            "jobId": job_id,
            "container": crossing.container,
            "limit": crossing.reason.value,
            "quota": {
                "maxOutputs": limits.max_outputs,
                "maxBytes": limits.max_bytes,
                "maxOutputsPerTask": limits.max_outputs_per_task,
            },
            "blobName": crossing.blob_name,
        },
    )


class QuotaExceededPublisher:
    """A crossing listener (``Indexer.crossing_listeners``) that publishes to the topic."""

    def __init__(self, client: EventGridPublisherClient, job_id_of: JobIdLookup, credential: Any = None) -> None:
        self._client = client
        self._job_id_of = job_id_of
        self._credential = credential  # a token credential we own and must close

    @classmethod
    def from_settings(cls, settings: Settings, job_id_of: JobIdLookup, **client_options: Any) -> QuotaExceededPublisher | None:
        """The publisher of ``settings``, or ``None`` when ``EVENTS_TOPIC_ENDPOINT`` is unset."""
        endpoint = settings.events_topic_endpoint
        if not endpoint:
            return None
        owned = None
        if settings.events_topic_key:
            credential: Any = AzureKeyCredential(settings.events_topic_key)
        else:
            from azure.identity.aio import ManagedIdentityCredential

            client_id = settings.index_storage.client_id or settings.outputs_storage.client_id
            credential = owned = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
        retry = settings.retry
        options: dict[str, Any] = {
            "retry_total": retry.total,
            "retry_backoff_factor": retry.backoff_seconds,
            "retry_backoff_max": retry.max_backoff_seconds,
            **client_options,
        }
        return cls(EventGridPublisherClient(endpoint, credential, **options), job_id_of, owned)

    async def __call__(self, crossing: QuotaCrossing) -> None:
        """Publish one crossing; raises ``NotificationError`` when it did not go out."""
        try:
            job_id = await self._job_id_of(crossing.container)
            event = quota_exceeded_event(crossing, job_id)
            await asyncio.wait_for(self._client.send(event), PUBLISH_TIMEOUT_SECONDS)
        except Exception as exc:
            raise NotificationError(f"QuotaExceeded for {crossing.container} not published: {exc}") from exc
        log.info("published %s for %s (%s)", QUOTA_EXCEEDED, crossing.container, crossing.reason.value)

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()
