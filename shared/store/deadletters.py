"""The dead-letter container: where Event Grid writes the events it gave up on.

It lives in the index account (``infra/app/storage.bicep``), so it is reached through the
``INDEX_STORAGE`` connection: its connection string locally, ``INDEX_STORAGE__blobServiceUri``
with the same identity in Azure (the app holds Storage Blob Data Owner on that account). This
adapter lists, reads and marks dead-letter blobs; ``shared.ingest.replay`` decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from shared.domain.deadletters import REPLAYED_AT
from shared.settings import Settings, StorageConnection

from .clients import blob_retry_policy, credential_for, development_storage
from .errors import StorageAccessError, StorageBusyError, StorageUnavailableError

#: Blobs listed per listing call when replaying (each is read and re-ingested).
PAGE_SIZE = 100

_BLOB_ACCESS_FIX = (
    "grant the app's identity (INDEX_STORAGE__clientId) a blob data role (Storage Blob Data Owner or Contributor) "
    "on the index account, and set INDEX_STORAGE__blobServiceUri to its blob endpoint"
)


@dataclass(frozen=True, slots=True)
class DeadLetterBlob:
    name: str
    created: datetime | None
    replayed_at: str | None
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    blobs: list[DeadLetterBlob]
    next_marker: str | None


def blob_endpoint(conn: StorageConnection) -> str:
    """The index account's blob endpoint for an identity-based connection."""
    if conn.blob_service_uri:
        return conn.blob_service_uri
    if conn.service_uri and ".table." in conn.service_uri:
        return conn.service_uri.replace(".table.", ".blob.", 1)
    raise StorageAccessError(
        f"no blob endpoint for the dead-letter container: {conn.name}__blobServiceUri is not set",
        status=None, code="BlobEndpointMissing", setting=f"{conn.name}__blobServiceUri",
        fix=f"set {conn.name}__blobServiceUri to the index account's blob endpoint")


def dead_letter_account(settings: Settings) -> BlobServiceClient:
    """A client of the index account's blob service, with the one retry configuration."""
    conn = settings.index_storage
    policy = blob_retry_policy(settings.retry)
    if conn.connection_string:
        return BlobServiceClient.from_connection_string(development_storage(conn.connection_string), retry_policy=policy)
    return BlobServiceClient(account_url=blob_endpoint(conn), credential=credential_for(conn), retry_policy=policy)


def _translated(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return StorageUnavailableError(f"dead-letter container unreachable ({what}): {exc}")
    assert isinstance(exc, HttpResponseError)
    if isinstance(exc, ClientAuthenticationError) or exc.status_code in (401, 403):
        raw = getattr(exc, "error_code", None)
        code = getattr(raw, "value", raw) or f"HTTP{exc.status_code}"
        return StorageAccessError(f"the index account refused to {what} the dead-letter container ({exc.status_code})",
                                  status=exc.status_code, code=str(code), setting="INDEX_STORAGE", fix=_BLOB_ACCESS_FIX)
    return StorageBusyError(f"dead-letter container: {what} failed: {exc.status_code} {exc.reason}", exc.status_code)


class DeadLetterContainer:
    def __init__(self, account: BlobServiceClient, name: str) -> None:
        self.account = account
        self.name = name
        self._container: ContainerClient = account.get_container_client(name)

    async def close(self) -> None:
        credential = getattr(self.account, "credential", None)
        await self.account.close()
        close = getattr(credential, "close", None)  # a token credential has its own session
        if close is not None and asyncio.iscoroutinefunction(close):
            await close()

    async def pages(self, marker: str | None = None, page_size: int = PAGE_SIZE) -> AsyncIterator[DeadLetterPage]:
        """The container's blobs, a listing page at a time, from ``marker`` (nothing if it is absent)."""
        try:
            pages = self._container.list_blobs(include=["metadata"], results_per_page=page_size).by_page(
                continuation_token=marker)
            async for page in pages:
                blobs = []
                async for blob in page:
                    metadata = dict(blob.metadata or {})
                    replayed = next((v for k, v in metadata.items() if k.lower() == REPLAYED_AT.lower()), None)
                    blobs.append(DeadLetterBlob(blob.name, blob.creation_time or blob.last_modified, replayed, metadata))
                yield DeadLetterPage(blobs, pages.continuation_token or None)  # type: ignore[attr-defined]
        except ResourceNotFoundError:
            return  # no container: Event Grid never dead-lettered anything
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
            raise _translated(exc, "list") from exc

    async def read(self, name: str) -> bytes:
        try:
            stream = await self._container.download_blob(name)
            return await stream.readall()
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
            raise _translated(exc, "read") from exc

    async def mark_replayed(self, blob: DeadLetterBlob, at: str) -> None:
        """Leave ``replayedAt`` on the blob (its other metadata kept): the next replay skips it."""
        metadata = {k: v for k, v in blob.metadata.items() if k.lower() != REPLAYED_AT.lower()}
        metadata[REPLAYED_AT] = at
        try:
            await self._container.get_blob_client(blob.name).set_blob_metadata(metadata)
        except (ServiceRequestError, ServiceResponseError, HttpResponseError) as exc:
            raise _translated(exc, "mark") from exc
