"""The one module that speaks Table storage.

It translates: entities in and out, OData filters built only from parameters (never by pasting
input), batch transactions, and the SDK's exceptions mapped to the project's own errors. It
decides nothing; ``shared.ingest`` and ``shared.read`` do. Every request takes a slot of the instance's
``AdaptiveLimiter`` so concurrency against storage stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.domain.planning import MAX_BATCH_OPERATIONS, Op, Operation
from shared.domain.rows import Entity, Int64

from .batch_encoder import submit_fast
from .errors import ConflictError, InvalidEntityError, StorageBusyError, StorageUnavailableError
from .throttle import AdaptiveLimiter

__all__ = ["ConflictError", "Entity", "Op", "Operation", "StorageBusyError", "StorageUnavailableError", "TableStore"]

#: Table storage returns at most 1,000 entities per query page.
MAX_QUERY_PAGE = 1000
_BUSY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def etag_of(entity: Mapping[str, Any]) -> str | None:
    metadata = getattr(entity, "metadata", None) or {}
    return metadata.get("etag")


def _plain(entity: Any) -> Entity:
    """An SDK entity as the core sees it: Int64 values as ``Int64``, the ETag under ``__etag``."""
    plain = {
        name: Int64(value.value) if isinstance(value, EntityProperty) and value.edm_type == EdmType.INT64 else value
        for name, value in entity.items()
    }
    plain["__etag"] = etag_of(entity)
    return plain


def sdk_entity(entity: Entity) -> dict[str, Any]:
    """A core entity for the SDK: ``Int64`` values typed Edm.Int64, the ETag key left out."""
    return {
        name: EntityProperty(int(value), EdmType.INT64) if isinstance(value, Int64) else value
        for name, value in entity.items()
        if name != "__etag"
    }


def _busy(exc: HttpResponseError) -> StorageBusyError:
    return StorageBusyError(f"storage answered {exc.status_code}: {exc.reason}", exc.status_code)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Map what the SDK raises once its retries are spent to the index store's errors."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailableError(f"index storage unreachable: {exc}") from exc
    except HttpResponseError as exc:
        raise _busy(exc) from exc


class TableStore:
    """Async adapter over one table."""

    def __init__(self, client: TableClient, limiter: AdaptiveLimiter) -> None:
        self._client = client
        self._limiter = limiter

    @property
    def limiter(self) -> AdaptiveLimiter:
        return self._limiter

    async def close(self) -> None:
        await self._client.close()

    async def ensure_table(self) -> None:
        with _translated():
            try:
                async with self._limiter:
                    await self._client.create_table()
            except ResourceExistsError:
                pass

    async def get(self, partition: str, row: str) -> Entity | None:
        with _translated():
            try:
                async with self._limiter:
                    entity = await self._client.get_entity(partition, row)
            except ResourceNotFoundError:
                return None
        return _plain(entity)

    async def get_many(self, partition: str, rows: Iterable[str]) -> dict[str, Entity]:
        """Point reads of several rows at once (absent rows are left out)."""
        keys = list(dict.fromkeys(rows))
        found = await asyncio.gather(*(self.get(partition, row) for row in keys))
        return {row: entity for row, entity in zip(keys, found, strict=True) if entity is not None}

    async def get_rows(
        self, partition: str, rows: Iterable[str], *, select: Sequence[str] | None = None
    ) -> dict[str, Entity]:
        """Read several rows of one partition (absent rows are left out).

        Keys that differ only in their last segment (one task's outputs of one kind) are read
        with one key-range query each, instead of a point read per row.
        """
        wanted = sorted(set(rows))
        groups: dict[str, list[str]] = {}
        for row in wanted:
            groups.setdefault(row.rsplit("|", 1)[0], []).append(row)
        found: dict[str, Entity] = {}

        async def read(group: list[str]) -> None:
            if len(group) <= 2:
                found.update(await self.get_many(partition, group))
                return
            members = set(group)
            # No key lies between k and k + " ": keys hold no control characters.
            async for entity in self.query_range(partition, group[0], group[-1] + " ", select=select):
                if entity["RowKey"] in members:
                    found[entity["RowKey"]] = entity

        await asyncio.gather(*(read(group) for group in groups.values()))
        return found

    def query_partition(self, partition: str, *, select: Sequence[str] | None = None) -> AsyncIterator[Entity]:
        """Every entity of ``partition``, in key order."""
        return self.query_range(partition, None, None, select=select)

    async def query_range(
        self,
        partition: str,
        low: str | None,
        high: str | None,
        *,
        after: str | None = None,
        where: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Entity]:
        """Entities of ``partition`` with ``low <= RowKey < high`` (and ``> after``), key order.

        ``where`` adds equality conditions on properties; every value is a query parameter.
        """
        clauses = ["PartitionKey eq @pk"]
        params: dict[str, Any] = {"pk": partition}
        if high is not None:
            clauses.append("RowKey lt @hi")
            params["hi"] = high
        if after is not None and (low is None or after >= low):
            clauses.append("RowKey gt @after")
            params["after"] = after
        elif low is not None:
            clauses.append("RowKey ge @lo")
            params["lo"] = low
        for index, (name, value) in enumerate((where or {}).items()):
            if not name.isidentifier():
                raise ValueError(f"not a property name: {name!r}")
            clauses.append(f"{name} eq @w{index}")
            params[f"w{index}"] = value
        page_size = min(MAX_QUERY_PAGE, limit) if limit else MAX_QUERY_PAGE
        pages = self._client.query_entities(
            " and ".join(clauses),
            parameters=params,
            select=list(select) if select else None,
            results_per_page=page_size,
        ).by_page()
        returned = 0
        while True:
            with _translated():
                try:
                    async with self._limiter:
                        page = await pages.__anext__()
                        entities = [_plain(entity) async for entity in page]
                except StopAsyncIteration:
                    return
            for entity in entities:
                yield entity
                returned += 1
                if limit is not None and returned >= limit:
                    return

    async def submit(self, partition: str, operations: Sequence[Operation]) -> list[str | None]:
        """Run a batch transaction; return the new ETag of every operation, in order.

        A failed condition raises ``ConflictError`` (nothing was written: a transaction is
        atomic). A dropped connection raises ``StorageUnavailableError`` and the caller cannot
        know whether it committed: it must re-read before retrying, which the ETag and
        create conditions make safe.
        """
        if not operations:
            return []
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"{len(operations)} operations exceed a batch of {MAX_BATCH_OPERATIONS}")
        batch: list[Any] = []
        for item in operations:
            entity = sdk_entity(item.entity)
            entity["PartitionKey"] = partition
            if item.op is Op.CREATE:
                batch.append(("create", entity))
            elif item.op is Op.REPLACE:
                batch.append(
                    ("update", entity, {"mode": UpdateMode.REPLACE, "etag": item.etag,
                                        "match_condition": MatchConditions.IfNotModified})
                )
            elif item.op is Op.UPSERT:
                batch.append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
            else:
                batch.append(("delete", entity, {"etag": item.etag,
                                                 "match_condition": MatchConditions.IfNotModified}))
        try:
            async with self._limiter:
                status, etags = await submit_fast(self._client, batch)
                if etags is not None:
                    return etags
                if status in _BUSY_STATUSES:  # the pipeline already spent the retry budget
                    raise StorageBusyError(f"storage answered {status} to a batch", status)
                # Not a full success: nothing was committed, so the SDK may send it again
                # and raise its own, detailed error (which operation failed, and why).
                results = await self._client.submit_transaction(batch)
        except TableTransactionError as exc:
            if exc.status_code in (404, 409, 412):
                raise ConflictError(f"batch condition failed: {exc.message}", exc.index) from exc
            if exc.status_code == 400:
                raise InvalidEntityError(f"row refused: {exc.message}", exc.index) from exc
            if exc.status_code in _BUSY_STATUSES:
                raise _busy(exc) from exc
            raise
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise StorageUnavailableError(f"batch outcome unknown, connection failed: {exc}") from exc
        except HttpResponseError as exc:
            if exc.status_code in (404, 409, 412):
                raise ConflictError(f"batch condition failed: {exc.message}") from exc
            if exc.status_code == 400:
                raise InvalidEntityError(f"batch refused: {exc.message}") from exc
            raise _busy(exc) from exc
        return [result.get("etag") for result in results]

    async def insert_if_absent(self, entity: Entity) -> bool:
        """Create a row unless it exists; True when this call created it."""
        with _translated():
            try:
                async with self._limiter:
                    await self._client.create_entity(sdk_entity(entity))
            except ResourceExistsError:
                return False
        return True

    async def merge(self, entity: Entity) -> None:
        """Upsert-merge one row (properties not given are kept)."""
        with _translated():
            async with self._limiter:
                await self._client.upsert_entity(sdk_entity(entity), mode=UpdateMode.MERGE)
