"""Blob clients of a job's output container, from whatever a node or a user has at hand.

``storage`` is one of:

* a connection string (``UseDevelopmentStorage=true`` for Azurite, or a full one with a key);
* a blob account URL (``https://acct.blob.core.windows.net``), signed in with
  ``DefaultAzureCredential`` (the pool's managed identity on a node) unless a credential is given;
* a container URL with a SAS (``https://acct.blob.core.windows.net/job-x?sv=...&sig=...``), as
  ``container_sas_url`` or .NET's ``GetOutputStorageContainerUrl`` hand it to tasks.

Every client retries 408/429/500/502/503/504 and dropped connections with exponential backoff
and jitter (the same budget as the indexer's storage clients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from azure.storage.blob import ContainerClient, ExponentialRetry

from .conventions import ConventionError, container_name, is_valid_job_id
from .endpoints import is_path_style

#: Azurite's well-known development account (public, documented; not a secret).
DEVSTORE_ACCOUNT = "devstoreaccount1"
DEVSTORE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class RetrySettings:
    """Attempts and backoff of every blob request (429/503 and dropped connections retried)."""

    total: int = 6
    backoff_seconds: float = 0.5


def retry_policy(retry: Optional[RetrySettings] = None) -> ExponentialRetry:
    """The blob SDK's exponential policy: initial * 2**n, plus random jitter."""
    retry = retry or RetrySettings()
    return ExponentialRetry(
        initial_backoff=retry.backoff_seconds,  # type: ignore[arg-type]  # the SDK takes floats too
        increment_base=2,
        retry_total=retry.total,
        random_jitter_range=max(1, int(retry.backoff_seconds * 2)),
    )


def development_storage(connection_string: str) -> str:
    """Expand ``UseDevelopmentStorage=true`` to Azurite's full connection string."""
    if connection_string.replace(" ", "").lower() != "usedevelopmentstorage=true":
        return connection_string
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={DEVSTORE_ACCOUNT};AccountKey={DEVSTORE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:10000/{DEVSTORE_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:10001/{DEVSTORE_ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:10002/{DEVSTORE_ACCOUNT};"
    )


def is_url(storage: str) -> bool:
    return storage.lower().startswith(("http://", "https://"))


def split_container_url(url: str) -> Optional[tuple[str, str, str]]:
    """``(account URL, container, query)`` of a container URL; ``None`` for an account URL."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    account_segments = 1 if is_path_style(parts.hostname or "") else 0
    if len(segments) <= account_segments:
        return None
    if len(segments) > account_segments + 1:
        raise ConventionError(f"not a container URL (a blob or folder inside one?): {parts.scheme}://{parts.netloc}{parts.path}")
    account = urlunsplit((parts.scheme, parts.netloc, "/".join(["", *segments[:account_segments]]), "", ""))
    return account, segments[-1], parts.query


def container_client(storage: str, job_id: str, *, retry: Optional[RetrySettings] = None, credential: Any = None) -> ContainerClient:
    """The client of ``job_id``'s output container (see the module for what ``storage`` may be)."""
    if not is_valid_job_id(job_id):
        raise ConventionError(f"invalid job ID {job_id!r}")
    policy = retry_policy(retry)
    name = container_name(job_id)
    if not is_url(storage):
        return ContainerClient.from_connection_string(development_storage(storage), name, retry_policy=policy)
    container = split_container_url(storage)
    if container is not None:
        if container[1] != name:
            raise ConventionError(f"the container URL names container {container[1]!r}, but job {job_id!r} saves to {name!r}")
        return from_container_url(storage, retry=retry, credential=credential)
    account_url = storage.rstrip("/")
    if credential is None and "sig=" not in urlsplit(account_url).query:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerClient(account_url, name, credential=credential, retry_policy=policy)


def from_container_url(url: str, *, retry: Optional[RetrySettings] = None, credential: Any = None) -> ContainerClient:
    """The client of the container a URL names (with its SAS, or signed in with ``credential``)."""
    if not is_url(url):
        raise ConventionError("a container URL starts with https:// (or http:// for Azurite)")
    container = split_container_url(url)
    if container is None:
        raise ConventionError("the URL names no container: give the job's container URL (with its SAS)")
    account, name, query = container
    full = f"{account}/{name}?{query}" if query else f"{account}/{name}"
    if credential is None and "sig=" not in query:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerClient.from_container_url(full, credential=credential, retry_policy=retry_policy(retry))
