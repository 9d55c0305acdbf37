"""The one module that speaks Table storage.

It translates: entities in and out, OData filters built only from parameters (never by pasting
input), batch transactions, and the SDK's exceptions mapped to the project's own errors. It
decides nothing; ``shared.ingest`` and ``shared.read`` do. Every request takes a slot of the instance's
``AdaptiveLimiter`` so concurrency against storage stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
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

from .batch_encoder import decide, submit_fast
from .errors import (
    ConflictError,
    InvalidEntityError,
    StorageAccessError,
    StorageBusyError,
    StorageUnavailableError,
    TableNotFoundError,
)
from .health import IndexAccess
from .throttle import AdaptiveLimiter
from .values import readable

log = logging.getLogger(__name__)

__all__ = ["ConflictError", "Entity", "Op", "Operation", "StorageBusyError", "StorageUnavailableError", "TableStore"]

#: Table storage returns at most 1,000 entities per query page.
MAX_QUERY_PAGE = 1000
_BUSY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


#: A read row's service-assigned ``Timestamp`` (its last commit, by the partition's clock), under
#: a reserved key like ``__etag``: present when the query did not ``select`` properties.
TIMESTAMP = "__timestamp"


def etag_of(entity: Mapping[str, Any]) -> str | None:
    metadata = getattr(entity, "metadata", None) or {}
    return metadata.get("etag")


def _plain(entity: Any) -> Entity:
    """An SDK entity as the core sees it: Int64 values as ``Int64``, the ETag under ``__etag``,
    the service's ``Timestamp`` under ``__timestamp`` (when returned), texts readable
    (``values.readable``)."""
    plain = {
        name: Int64(value.value) if isinstance(value, EntityProperty) and value.edm_type == EdmType.INT64
        else readable(name, value)
        for name, value in entity.items()
    }
    plain["__etag"] = etag_of(entity)
    stamp = (getattr(entity, "metadata", None) or {}).get("timestamp")
    if stamp is not None:
        plain[TIMESTAMP] = stamp
    return plain


def sdk_entity(entity: Entity) -> dict[str, Any]:
    """A core entity for the SDK: ``Int64`` values typed Edm.Int64, the reserved keys (``__etag``,
    ``__timestamp``) left out, so a row read and written back carries neither."""
    return {
        name: EntityProperty(int(value), EdmType.INT64) if isinstance(value, Int64) else value
        for name, value in entity.items()
        if not name.startswith("__")
    }


def _busy(exc: HttpResponseError) -> StorageBusyError:
    return StorageBusyError(f"storage answered {exc.status_code}: {exc.reason}", exc.status_code)


#: What to fix when index storage refuses the app: the role its identity needs, or the key.
AUTHORIZATION_FIX = (
    "grant the app's identity (INDEX_STORAGE__clientId) the 'Storage Table Data Contributor' role on the index "
    "account (INDEX_STORAGE__tableServiceUri); with a connection string, check the account key in INDEX_STORAGE"
)


def _error_code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def access_error(exc: HttpResponseError, table: str) -> StorageAccessError | None:
    """The misconfiguration ``exc`` reveals, if any: refused credentials or a missing table."""
    code = _error_code(exc)
    if isinstance(exc, ClientAuthenticationError) or exc.status_code in (401, 403):
        code = code or ("AuthenticationFailed" if exc.status_code is None else f"HTTP{exc.status_code}")
        reason = (exc.reason or (str(exc).splitlines() or [""])[0])[:200]
        return StorageAccessError(f"index storage refused the app's credentials ({exc.status_code or 'no token'}: {reason})",
                                  status=exc.status_code, code=code, setting="INDEX_STORAGE", fix=AUTHORIZATION_FIX)
    if exc.status_code == 404 and code == "TableNotFound":
        return TableNotFoundError(
            f"the index table {table!r} does not exist", status=404, code=code, setting="INDEX_TABLE",
            fix=f"set INDEX_TABLE to the index table's name, or restart the app to create {table!r} (it creates it at start)")
    return None


def _is_condition(status: int | None, code: str | None) -> bool:
    """Whether a refused operation lost a race: an existence or ETag condition failed
    (409 EntityAlreadyExists, 412 UpdateConditionNotSatisfied, 404 of the entity, not the table)."""
    return status in (409, 412) or (status == 404 and code != "TableNotFound")


class TableStore:
    """Async adapter over one table."""

    #: Rows one query page holds: a range read of fewer rows took one request, hence one moment.
    query_page = MAX_QUERY_PAGE

    def __init__(self, client: TableClient, limiter: AdaptiveLimiter, access: IndexAccess | None = None) -> None:
        self._client = client
        self._limiter = limiter
        decide(client)  # once per process: whether batches are encoded here or by the SDK (logged)
        #: Where a misconfiguration is reported (logged once, shown by the detailed health).
        self.access = access or IndexAccess()

    def _refused(self, exc: HttpResponseError) -> StorageAccessError | None:
        error = access_error(exc, self._client.table_name)
        if error is not None:
            self.access.failed(error)
        return error

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Map what the SDK raises once its retries are spent to the index store's errors."""
        try:
            yield
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise StorageUnavailableError(f"index storage unreachable: {exc}") from exc
        except HttpResponseError as exc:
            raise (self._refused(exc) or _busy(exc)) from exc
        self.access.succeeded()

    @property
    def limiter(self) -> AdaptiveLimiter:
        return self._limiter

    async def close(self) -> None:
        await self._client.close()

    async def ensure_table(self) -> None:
        with self._translated():
            try:
                async with self._limiter:
                    await self._client.create_table()
            except ResourceExistsError:
                pass

    async def get(self, partition: str, row: str) -> Entity | None:
        with self._translated():
            try:
                async with self._limiter:
                    entity = await self._client.get_entity(partition, row)
            except ResourceNotFoundError as exc:
                if self._refused(exc) is None:
                    return None
                raise
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

    def _filter(
        self, partition: str, low: str | None, high: str | None, after: str | None, where: Mapping[str, Any] | None
    ) -> tuple[str, dict[str, Any]]:
        """The OData filter of a key range (every value a query parameter)."""
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
        return " and ".join(clauses), params

    async def read_page(
        self,
        partition: str,
        low: str | None,
        high: str | None,
        *,
        limit: int,
        after: str | None = None,
        where: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
    ) -> tuple[list[Entity], bool]:
        """Up to ``limit`` entities of ``low <= RowKey < high`` (``> after``), in key order, and
        whether the range holds more.

        It reads what it returns and nothing else: each request asks the service for what is
        still wanted (``$top``), and the service's own continuation token says whether more
        rows follow, so no row is read ahead just to learn that a next page exists. (Azure may
        hand back a continuation token with nothing behind it, e.g. at a server boundary: the
        caller's next page is then empty, which the REST guidelines allow; Azurite's is exact.)
        """
        query, params = self._filter(partition, low, high, after, where)
        rows: list[Entity] = []
        continuation: Any = None  # the SDK's own token: the next partition and row key
        while len(rows) < limit:
            pages: Any = self._client.query_entities(
                query, parameters=params, select=list(select) if select else None,
                results_per_page=min(MAX_QUERY_PAGE, limit - len(rows)),
            ).by_page(continuation_token=continuation)
            with self._translated():
                try:
                    async with self._limiter:
                        page = await pages.__anext__()
                        rows.extend([_plain(entity) async for entity in page])
                except StopAsyncIteration:
                    return rows, False
            continuation = pages.continuation_token
            if not continuation:
                return rows, False
        return rows, True

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
        returned = 0
        page_size = min(MAX_QUERY_PAGE, limit) if limit else MAX_QUERY_PAGE
        async for response in self.query_responses(partition, low, high, after=after, where=where, select=select,
                                                   page_size=page_size):
            for entity in response:
                yield entity
                returned += 1
                if limit is not None and returned >= limit:
                    return

    async def query_responses(
        self,
        partition: str,
        low: str | None,
        high: str | None,
        *,
        after: str | None = None,
        where: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        page_size: int = MAX_QUERY_PAGE,
    ) -> AsyncIterator[list[Entity]]:
        """The entities of a range query (as ``query_range``), one list per query response.

        Each response is answered from one snapshot of the partition; the next one, asked with
        the service's continuation, is a new read at a later moment. A caller that orders what
        it read by commit (the fold) needs to know where one snapshot ends.
        """
        query, params = self._filter(partition, low, high, after, where)
        pages = self._client.query_entities(
            query,
            parameters=params,
            select=list(select) if select else None,
            results_per_page=page_size,
        ).by_page()
        while True:
            with self._translated():
                try:
                    async with self._limiter:
                        page = await pages.__anext__()
                        entities = [_plain(entity) async for entity in page]
                except StopAsyncIteration:
                    return
            yield entities

    async def query_response(
        self, partition: str, low: str, high: str, *, select: Sequence[str] | None = None, limit: int = MAX_QUERY_PAGE,
    ) -> tuple[list[Entity], bool]:
        """One response of a range query (``low <= RowKey < high``, key order) and whether it
        held the whole range. Table storage answers one query response from one snapshot of
        the partition (a transaction is in it whole or not at all); rows read over several
        responses may come from different moments."""
        pages = self._client.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            parameters={"pk": partition, "lo": low, "hi": high},
            select=list(select) if select else None,
            results_per_page=min(limit, MAX_QUERY_PAGE),
        ).by_page()
        with self._translated():
            try:
                async with self._limiter:
                    page = await pages.__anext__()
                    entities = [_plain(entity) async for entity in page]
            except StopAsyncIteration:
                return [], True
        return entities, getattr(pages, "continuation_token", None) is None

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
                answer = await submit_fast(self._client, batch)
                if answer.etags is not None:
                    self.access.succeeded()
                    return answer.etags
                lost = answer.failure
                if lost is not None and _is_condition(lost.status, lost.code):
                    # A lost race, read from the answer: nothing was committed.
                    raise ConflictError(f"batch condition failed: {lost.message}", lost.index)
                if answer.status in _BUSY_STATUSES:  # the pipeline already spent the retry budget
                    raise StorageBusyError(f"storage answered {answer.status} to a batch", answer.status)
                # Any other failure: nothing was committed, so the SDK may send it again and
                # raise its own, detailed error (an invalid row, refused credentials, no table).
                results = await self._client.submit_transaction(batch)
        except TableTransactionError as exc:
            refused = self._refused(exc)
            if refused is not None:
                raise refused from exc
            if _is_condition(exc.status_code, _error_code(exc)):
                raise ConflictError(f"batch condition failed: {exc.message}", exc.index) from exc
            if exc.status_code == 400:
                raise InvalidEntityError(f"row refused: {exc.message}", exc.index) from exc
            if exc.status_code in _BUSY_STATUSES:
                raise _busy(exc) from exc
            raise
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise StorageUnavailableError(f"batch outcome unknown, connection failed: {exc}") from exc
        except HttpResponseError as exc:
            refused = self._refused(exc)
            if refused is not None:
                raise refused from exc
            if exc.status_code in (404, 409, 412):
                raise ConflictError(f"batch condition failed: {exc.message}") from exc
            if exc.status_code == 400:
                raise InvalidEntityError(f"batch refused: {exc.message}") from exc
            raise _busy(exc) from exc
        self.access.succeeded()
        return [result.get("etag") for result in results]

    async def insert_if_absent(self, entity: Entity) -> bool:
        """Create a row unless it exists; True when this call created it."""
        with self._translated():
            try:
                async with self._limiter:
                    await self._client.create_entity(sdk_entity(entity))
            except ResourceExistsError:
                return False
        return True

    async def merge(self, entity: Entity) -> None:
        """Upsert-merge one row (properties not given are kept)."""
        with self._translated():
            async with self._limiter:
                await self._client.upsert_entity(sdk_entity(entity), mode=UpdateMode.MERGE)
