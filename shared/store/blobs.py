"""Reading the outputs account: listing a job container's blobs (for reindex). Never writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError
from azure.storage.blob.aio import BlobServiceClient

from .errors import StorageBusyError, StorageUnavailableError

#: The outputs account, as the rest of the core names it (only this package knows the SDK type).
OutputsAccount = BlobServiceClient


class ContainerNotFoundError(LookupError):
    """The container does not exist."""


@dataclass(frozen=True, slots=True)
class ListedBlob:
    name: str
    size: int
    etag: str | None
    content_type: str | None
    blob_type: str | None
    last_modified: datetime | None


def bare_etag(etag: str | None) -> str | None:
    """An ETag without its quotes (events and listings quote differently)."""
    return etag.strip('"') if etag else None


async def list_container(blobs: BlobServiceClient, container: str, prefix: str | None = None) -> AsyncIterator[ListedBlob]:
    """Every blob of ``container`` (under ``prefix``), in name order; ``ContainerNotFoundError`` when it is absent."""
    client = blobs.get_container_client(container)
    try:
        async for blob in client.list_blobs(name_starts_with=prefix):
            blob_type = getattr(blob.blob_type, "value", blob.blob_type)
            yield ListedBlob(
                name=blob.name,
                size=blob.size or 0,
                etag=bare_etag(blob.etag),
                content_type=blob.content_settings.content_type if blob.content_settings else None,
                blob_type=str(blob_type) if blob_type else None,
                last_modified=blob.last_modified,
            )
    except ResourceNotFoundError as exc:
        raise ContainerNotFoundError(container) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailableError(f"outputs storage unreachable: {exc}") from exc
    except HttpResponseError as exc:
        raise StorageBusyError(f"listing {container} failed: {exc.status_code} {exc.reason}", exc.status_code) from exc


#: One container listing page holds up to 5,000 containers (the service's maximum).
CONTAINERS_PER_PAGE = 5000


async def list_job_containers(blobs: BlobServiceClient) -> dict[str, datetime | None]:
    """Every convention-named container (``job-…``) of the account, with its last change."""
    found: dict[str, datetime | None] = {}
    try:
        async for container in blobs.list_containers(name_starts_with="job-", results_per_page=CONTAINERS_PER_PAGE):
            found[container.name] = container.last_modified
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailableError(f"outputs storage unreachable: {exc}") from exc
    except HttpResponseError as exc:
        raise StorageBusyError(f"listing containers failed: {exc.status_code} {exc.reason}", exc.status_code) from exc
    return found
