"""Reading the outputs account: listing a job container's blobs and reading one blob's properties
(for reindex and the reconciler). Never writes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


def _listed(blob: Any) -> ListedBlob:
    blob_type = getattr(blob.blob_type, "value", blob.blob_type)
    return ListedBlob(
        name=blob.name,
        size=blob.size or 0,
        etag=bare_etag(blob.etag),
        content_type=blob.content_settings.content_type if blob.content_settings else None,
        blob_type=str(blob_type) if blob_type else None,
        last_modified=blob.last_modified,
    )


@contextlib.contextmanager
def _translated(container: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError as exc:
        raise ContainerNotFoundError(container) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailableError(f"outputs storage unreachable: {exc}") from exc
    except HttpResponseError as exc:
        raise StorageBusyError(f"listing {container} failed: {exc.status_code} {exc.reason}", exc.status_code) from exc


async def list_container(
    blobs: BlobServiceClient, container: str, prefix: str | None = None, *, start_from: str | None = None
) -> AsyncIterator[ListedBlob]:
    """Every blob of ``container`` (under ``prefix``, from the name ``start_from`` on), in name
    order; ``ContainerNotFoundError`` when it is absent."""
    client = blobs.get_container_client(container)
    with _translated(container):
        async for blob in client.list_blobs(name_starts_with=prefix, start_from=start_from):
            yield _listed(blob)


#: One List Blobs call returns at most 5,000 blobs.
BLOBS_PER_PAGE = 5000


async def list_slice(
    blobs: BlobServiceClient, container: str, *, after: str | None, limit: int
) -> tuple[list[ListedBlob], bool]:
    """Up to ``limit`` blobs named after ``after``, in name order, and whether more follow.

    The listing starts at a name (List Blobs' ``startFrom``), not at an opaque marker: a
    position saved as a blob name stays valid however long it is kept, and it is the same
    position in the index's terms.
    """
    client = blobs.get_container_client(container)
    found: list[ListedBlob] = []
    continuation: str | None = None
    with _translated(container):
        while len(found) < limit:
            # One more than wanted when resuming: ``startFrom`` includes the name itself.
            want = min(BLOBS_PER_PAGE, limit - len(found) + (1 if after is not None and not found else 0))
            pages: Any = client.list_blobs(start_from=after, results_per_page=want).by_page(continuation_token=continuation)
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return found, False
            found.extend([_listed(blob) async for blob in page if after is None or blob.name > after])
            continuation = pages.continuation_token
            if not continuation:
                return found[:limit], len(found) > limit
    return found[:limit], True


async def blob_properties(blobs: BlobServiceClient, container: str, name: str) -> ListedBlob | None:
    """One blob's properties as storage holds them now (``None`` when it is gone)."""
    client = blobs.get_blob_client(container, name)
    try:
        props = await client.get_blob_properties()
    except ResourceNotFoundError:
        return None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailableError(f"outputs storage unreachable: {exc}") from exc
    except HttpResponseError as exc:
        raise StorageBusyError(f"reading {container}/{name} failed: {exc.status_code} {exc.reason}", exc.status_code) from exc
    return _listed(props)


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
