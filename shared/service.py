"""The core's composition: one set of clients, one indexer, one query service per process.

Both entry points (the Event Grid trigger and the HTTP app) share it, created lazily on
first use so it binds to the event loop the host runs them on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from azure.storage.blob.aio import BlobServiceClient

from .index import Indexer
from .paging import TokenCodec
from .query import QueryService
from .sas import SasIssuer
from .settings import Settings
from .storage import blob_service_client, table_client
from .table_store import TableStore
from .throttle import AdaptiveLimiter

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    store: TableStore
    indexer: Indexer
    query: QueryService
    blobs: BlobServiceClient
    sas: SasIssuer

    @classmethod
    async def create(cls, settings: Settings) -> Service:
        limiter = AdaptiveLimiter(settings.max_concurrency)
        store = TableStore(table_client(settings, limiter), limiter)
        await store.ensure_table()
        indexer = Indexer(store, settings.quota)
        blobs = blob_service_client(settings)
        query = QueryService(store, indexer, TokenCodec(settings.token_signing_key), blobs.url)
        if not settings.token_signing_key:
            log.warning("TOKEN_SIGNING_KEY is not set: continuation tokens work only within this process")
        sas = SasIssuer(blobs, settings.sas_ttl_minutes, identity_based=settings.outputs_storage.identity_based)
        return cls(settings, store, indexer, query, blobs, sas)

    async def close(self) -> None:
        await self.store.close()
        await self.blobs.close()


class ServiceHolder:
    """Creates the ``Service`` once, on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._service: Service | None = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Service:
        if self._service is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._service is None:
                    self._service = await Service.create(self._settings or Settings.load())
        return self._service

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service = None
