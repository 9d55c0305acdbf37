"""Storage clients, all built with the one retry configuration of SPEC §5.

Every client retries 408/429/500/502/503/504 and connection errors with exponential backoff
and jitter, within the budget in settings (``STORAGE_RETRY_*``), and reports throttling to the
instance's ``AdaptiveLimiter``. Connections are a connection string locally (Azurite) and a
managed identity in Azure.
"""

from __future__ import annotations

import logging
import random
import urllib.request
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline import PipelineResponse
from azure.data.tables.aio import TableClient
from azure.storage.blob import ExponentialRetry
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.blob.aio import ExponentialRetry as AsyncExponentialRetry

# Azurite's development account and the ``UseDevelopmentStorage=true`` shorthand are the
# client package's (the indexer and compute nodes expand it the same way).
from batch_outputs.clients import DEVSTORE_ACCOUNT, DEVSTORE_KEY, development_storage
from shared.settings import RetrySettings, Settings, StorageConnection

from .throttle import THROTTLE_STATUSES, AdaptiveLimiter

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: azure-core logs every request and every response at INFO through this logger (and
#: azure-identity each token it gets): two records per storage call, several per event, all
#: shipped to Application Insights under the Functions host. Warnings and errors still show;
#: set this logger's level to INFO (host.json ``logging.logLevel``) to trace requests.
QUIET_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_sdk_logging() -> None:
    """Per-request HTTP logging off (errors still logged), unless configured already."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


quiet_sdk_logging()


def _jittered(backoff: Any) -> Any:
    def get_backoff_time(settings: dict[str, Any]) -> float:
        ceiling = backoff(settings)
        return random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0

    return get_backoff_time


def table_retry_kwargs(retry: RetrySettings) -> dict[str, Any]:
    """The Tables SDK builds its retry policy from these keywords (it takes no policy object)."""
    return {
        "retry_total": retry.total,
        "retry_connect": retry.total,
        "retry_read": retry.total,
        "retry_status": retry.total,
        "retry_backoff_factor": retry.backoff_seconds,
        "retry_backoff_max": retry.max_backoff_seconds,
        "retry_on_status_codes": sorted(RETRY_STATUSES),
    }


def _add_jitter(client: TableClient) -> TableClient:
    # azure-core's exponential backoff has no jitter and the Tables SDK accepts no policy
    # object, so the one retry policy in the client's pipeline gets a jittered backoff.
    pipeline = client._client._client._pipeline
    for policy in pipeline._impl_policies:
        if type(policy).__name__ == "AsyncTablesRetryPolicy":
            policy.get_backoff_time = _jittered(policy.get_backoff_time)  # type: ignore[attr-defined]
    return client


def blob_retry_policy(retry: RetrySettings, *, asynchronous: bool = True) -> ExponentialRetry | AsyncExponentialRetry:
    """The blob SDK's own exponential policy: initial * base**n, plus random jitter.

    An async client needs the async policy class (the sync one cannot await responses).
    """
    policy_class = AsyncExponentialRetry if asynchronous else ExponentialRetry
    return policy_class(
        initial_backoff=retry.backoff_seconds,  # type: ignore[arg-type]  # the SDK takes floats too
        increment_base=2,
        retry_total=retry.total,
        random_jitter_range=max(1, int(retry.backoff_seconds * 2)),
    )


def credential_for(conn: StorageConnection) -> AsyncTokenCredential:
    """The token credential of an identity-based connection."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    if (conn.credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=conn.client_id) if conn.client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=conn.client_id)


def table_client(settings: Settings, limiter: AdaptiveLimiter | None = None) -> TableClient:
    """The index table's client."""
    conn = settings.index_storage
    kwargs: dict[str, Any] = table_retry_kwargs(settings.retry)
    # With the environment trusted (azure-core's default), aiohttp looks up proxies and
    # ~/.netrc in a worker thread for every request: two thread hops per Table request, on
    # every ingest batch and feed read. Only a proxy configured in the environment needs that.
    kwargs["use_env_settings"] = bool(urllib.request.getproxies())
    if limiter is not None:
        # Runs on every attempt, retries included: throttling shrinks the limiter at once.
        def on_response(response: PipelineResponse) -> None:
            if response.http_response.status_code in THROTTLE_STATUSES:
                limiter.on_throttle()

        kwargs["raw_response_hook"] = on_response
    if conn.connection_string:
        # A client of its own (not get_table_client), so closing it closes its transport.
        return _add_jitter(
            TableClient.from_connection_string(
                development_storage(conn.connection_string), table_name=settings.index_table, **kwargs
            )
        )
    return _add_jitter(
        TableClient(
            endpoint=conn.service_uri or "",
            table_name=settings.index_table,
            credential=credential_for(conn),
            **kwargs,
        )
    )


def blob_service_client(settings: Settings) -> BlobServiceClient:
    """The client of the account holding the Batch outputs (read-only use)."""
    conn = settings.outputs_storage
    policy = blob_retry_policy(settings.retry)
    if conn.connection_string:
        return BlobServiceClient.from_connection_string(
            development_storage(conn.connection_string), retry_policy=policy
        )
    return BlobServiceClient(
        account_url=conn.service_uri or "", credential=credential_for(conn), retry_policy=policy
    )


def azurite_connection_string(host: str, blob_port: int, queue_port: int, table_port: int) -> str:
    """A connection string for an Azurite on custom ports (tests, benchmarks)."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={DEVSTORE_ACCOUNT};AccountKey={DEVSTORE_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{DEVSTORE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{DEVSTORE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{DEVSTORE_ACCOUNT};"
    )
