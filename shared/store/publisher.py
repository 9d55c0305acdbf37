"""Events to the custom topic in ``EVENTS_TOPIC_ENDPOINT``: ``Batch.Outputs.QuotaExceeded``, one
CloudEvent when a job first crosses a limit (SPEC §4), and ``Batch.Outputs.OutputCreated`` /
``Batch.Outputs.OutputDeleted`` for indexed outputs, published in batches per fold round (SPEC §11).

Published with azure-eventgrid's async publisher client to the custom topic in
``EVENTS_TOPIC_ENDPOINT``: with ``EVENTS_TOPIC_KEY`` when set, else with the app's managed
identity (the index account's client ID, else the outputs account's). Not published when the
endpoint is unset. The indexer decides *when* (once per job and crossing, see
``shared.ingest.crossings``); this module only says it. The CloudEvent ``id`` is the crossing's own
ID, so a retried publication carries the same ID and subscribers can drop the repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient

from shared.domain.feed import ChangeSet, ChangeType, change_item, output_subject
from shared.domain.quotas import QuotaCrossing
from shared.settings import Settings

log = logging.getLogger(__name__)

QUOTA_EXCEEDED = "Batch.Outputs.QuotaExceeded"
OUTPUT_CREATED = "Batch.Outputs.OutputCreated"
OUTPUT_DELETED = "Batch.Outputs.OutputDeleted"
#: Event Grid takes at most 1 MB a publish request: outputs are sent in batches below that.
MAX_BATCH_EVENTS = 1000
MAX_BATCH_CHARS = 800_000
#: A batch is tried this often (the client's own retries within each) before it is given up.
PUBLISH_ATTEMPTS = 3
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


def topic_client(settings: Settings, **client_options: Any) -> tuple[EventGridPublisherClient, Any] | None:
    """The topic's publisher client and a credential it owns (``None``: ``EVENTS_TOPIC_ENDPOINT``
    is unset): ``EVENTS_TOPIC_KEY`` when set, else the app's managed identity."""
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
    return EventGridPublisherClient(endpoint, credential, **options), owned


class QuotaExceededPublisher:
    """A crossing listener (``Indexer.crossing_listeners``) that publishes to the topic."""

    def __init__(self, client: EventGridPublisherClient, job_id_of: JobIdLookup, credential: Any = None) -> None:
        self._client = client
        self._job_id_of = job_id_of
        self._credential = credential  # a token credential we own and must close

    @classmethod
    def from_settings(cls, settings: Settings, job_id_of: JobIdLookup, **client_options: Any) -> QuotaExceededPublisher | None:
        """The publisher of ``settings``, or ``None`` when ``EVENTS_TOPIC_ENDPOINT`` is unset."""
        topic = topic_client(settings, **client_options)
        return cls(topic[0], job_id_of, topic[1]) if topic else None

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


def output_events(container: str, job_id: str | None, sets: Sequence[ChangeSet], blob_url: Callable[[str, str], str]) -> list[CloudEvent]:
    """One CloudEvent per output change that adds or removes a listed output (a rejection is
    told by ``QuotaExceeded`` and the job's rejections). The ``id`` is derived from the change
    itself, so a round published again sends the same IDs and subscribers can drop repeats."""
    events = []
    for item in sets:
        for index, change in enumerate(item.changes):
            if change.change == ChangeType.REJECTED.value:
                continue
            kind = OUTPUT_DELETED if change.change == ChangeType.DELETED.value else OUTPUT_CREATED
            event_id = hashlib.sha1(f"{container}|{item.delta_id}|{index}".encode("utf-8", "surrogatepass")).hexdigest()
            events.append(CloudEvent(
                source=SOURCE, type=kind, subject=output_subject(job_id, container, change), id=event_id, time=item.at,
                data=change_item(container, job_id, change, item.at, blob_url(container, change.blob_name)),
            ))
    return events


def _batches(events: list[CloudEvent]) -> list[list[CloudEvent]]:
    batches: list[list[CloudEvent]] = []
    size = MAX_BATCH_CHARS
    for event in events:
        length = len(json.dumps(event.data, ensure_ascii=False)) + len(event.subject or "") + 300
        if size + length > MAX_BATCH_CHARS or len(batches[-1]) >= MAX_BATCH_EVENTS:
            batches.append([])
            size = 0
        batches[-1].append(event)
        size += length
    return batches


class OutputEventsPublisher:
    """A fold-round listener (``Compactor.round_listeners``): publishes the round's output
    changes in batches, after they are durable (in the feed), before the round ends.

    At least once: a round that stops before it ends is resumed and published again (same event
    IDs). Never failing ingest or the fold: a batch still refused after ``PUBLISH_ATTEMPTS`` is
    logged and counted (``failed``), and the change feed stays the source of truth.
    """

    def __init__(self, client: EventGridPublisherClient, job_id_of: JobIdLookup, blob_url: Callable[[str, str], str],
                 credential: Any = None) -> None:
        self._client = client
        self._job_id_of = job_id_of
        self._blob_url = blob_url
        self._credential = credential
        self.requests = 0  # publish requests sent
        self.published = 0  # events the topic accepted
        self.failed = 0  # events given up on

    @classmethod
    def from_settings(cls, settings: Settings, job_id_of: JobIdLookup, blob_url: Callable[[str, str], str],
                      **client_options: Any) -> OutputEventsPublisher | None:
        topic = topic_client(settings, **client_options)
        return cls(topic[0], job_id_of, blob_url, topic[1]) if topic else None

    async def __call__(self, container: str, sets: Sequence[ChangeSet]) -> None:
        try:
            job_id = await self._job_id_of(container)
        except Exception as exc:  # the registry is unreachable: say what we know
            log.warning("job ID of %s not read for its output events: %s", container, exc)
            job_id = None
        for batch in _batches(output_events(container, job_id, sets, self._blob_url)):
            await self._send(container, batch)

    async def _send(self, container: str, batch: list[CloudEvent]) -> None:
        for attempt in range(PUBLISH_ATTEMPTS):
            self.requests += 1
            try:
                await asyncio.wait_for(self._client.send(batch), PUBLISH_TIMEOUT_SECONDS)
            except Exception as exc:
                if attempt + 1 < PUBLISH_ATTEMPTS:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                self.failed += len(batch)
                log.warning("%d output events of %s not published (the change feed has them): %s", len(batch), container, exc)
                return
            self.published += len(batch)
            return

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()
