"""A faster wire encoding of Table batch transactions, used by ``shared.table_store``.

``azure-data-tables`` builds a transaction's sub-requests itself (URLs, keys, entity
serialization, conditions: all kept here, built by the SDK), but encodes and decodes the
multipart body with the standard library's e-mail package, which costs several times more CPU
than Table storage spends on the batch: on a small instance that, not storage, caps ingest.
This module writes the same ``multipart/mixed`` body with plain string joins and reads the
answer's status lines and ETags directly.

Plain creates (every output row and every usage delta) are most of what the index writes. The
SDK builds the first create of a transaction; later ones reuse its request line and headers with
their own body: the same bytes, without a request object per row. The body's properties are
typed as the SDK's ``_add_entity_properties`` types them; for the types the index stores (text,
booleans, Int32, Int64, UTC times) ``wire_properties`` does it in one pass, which is most of the
difference in CPU per row, and anything else goes through the SDK's own function.

Answers are read here too. A success gives every operation's ETag. A transaction Table storage
refused answers 202 with a single changeset part, the failed operation's: its status, error code
and a message that starts with the operation's index (``1:The specified entity already
exists.``, as Azure documents for entity group transactions and Azurite writes it), which
``failure`` reads so that a lost race costs one request, not two. Anything else (a throttled or
malformed answer, an error this module does not read) gives neither, and the caller re-sends
through the SDK, which raises its own exceptions: a transaction that failed committed nothing,
so sending it again is safe.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from wsgiref.handlers import format_date_time

from azure.core.rest import HttpRequest
from azure.core.serialization import AzureJSONEncoder
from azure.data.tables import EdmType, EntityProperty

try:  # the SDK's own sub-request builder and serializer (private: pinned azure-data-tables==12.7.0)
    from azure.data.tables._serialize import _add_entity_properties
    from azure.data.tables._table_batch import TableBatchOperations
except Exception:  # pragma: no cover - another SDK version: every batch takes the SDK path (see ``decide``)
    TableBatchOperations = None  # type: ignore[misc, assignment]
from azure.data.tables.aio import TableClient

log = logging.getLogger(__name__)

_STATUS = re.compile(rb"\nHTTP/1\.1 (\d{3})")
_BOUNDARY = re.compile(rb"boundary=(changesetresponse_[A-Za-z0-9_\-]+)")
#: A header line (names are case-insensitive), without a backtracking pattern: this runs per row.
_ETAG = re.compile(rb"\n[Ee][Tt][Aa][Gg]:[ \t]*([^\r\n]*)")


@dataclass(frozen=True, slots=True)
class SubRequest:
    """One operation of a transaction as it goes on the wire."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(cls, request: HttpRequest) -> SubRequest:
        body = request.content
        if isinstance(body, str):
            body = body.encode("utf-8")
        return cls(request.method, request.url, tuple(request.headers.items()), body or b"")

    def with_body(self, body: bytes) -> SubRequest:
        """The same request line and headers with another body (``_part`` sets its length)."""
        return SubRequest(self.method, self.url, self.headers, body)


_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)


def wire_properties(entity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The entity's JSON properties exactly as ``_add_entity_properties`` writes them, for
    text, booleans, Int32, ``EntityProperty`` Int64 and UTC times; None when it holds anything
    else (the caller then uses the SDK's function)."""
    properties: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str:
            properties[name] = value
            properties[name + "@odata.type"] = "Edm.String"
        elif kind is bool or (kind is int and value in _INT32):
            properties[name] = value
        elif kind is datetime and value.tzinfo is timezone.utc:
            properties[name] = value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            properties[name + "@odata.type"] = "Edm.DateTime"
        elif kind is EntityProperty and value.edm_type is EdmType.INT64 and type(value.value) is int and value.value in _INT64:
            properties[name] = str(value.value)
            properties[name + "@odata.type"] = "Edm.Int64"
        elif value is not None:
            return None
    return properties


def _body(entity: Mapping[str, Any]) -> bytes:
    """A create's JSON body, byte for byte the SDK's."""
    properties = wire_properties(entity)
    if properties is not None:  # JSON-native values only: the standard encoder writes the same
        return json.dumps(properties).encode("utf-8")
    return json.dumps(_add_entity_properties(entity), cls=AzureJSONEncoder).encode("utf-8")


def _is_plain_create(operation: Sequence[Any]) -> bool:
    kind = operation[0]
    return str(getattr(kind, "value", kind)).lower() == "create" and (len(operation) < 3 or not operation[2])


def sub_requests(client: TableClient, operations: Sequence[Any]) -> list[SubRequest]:
    """The operations as the SDK's ``TableBatchOperations`` would send them (it checks them
    too: one partition, keys present, supported types)."""
    builder = TableBatchOperations(
        config=client._client._config,
        endpoint=f"{client.scheme}://{client._primary_hostname}",
        table_name=client.table_name,
        is_cosmos_endpoint=client._cosmos_endpoint,
    )
    template: SubRequest | None = None
    built: list[SubRequest] = []
    for operation in operations:
        if template is not None and _is_plain_create(operation):
            entity = operation[1]
            builder._verify_partition_key(entity)
            built.append(template.with_body(_body(entity)))
            continue
        builder.add_operation(operation)
        request = SubRequest.of(builder.requests[-1])
        if _is_plain_create(operation):
            template = request
        built.append(request)
    return built


def _part(index: int, request: SubRequest, date: str) -> bytes:
    lines = [f"{request.method} {request.url} HTTP/1.1"]
    headers = {**dict(request.headers), "x-ms-date": date, "Date": date}
    if request.body:
        headers["Content-Length"] = str(len(request.body))
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {index}\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    )
    return head.encode("utf-8") + request.body


def encode(requests: Sequence[SubRequest]) -> tuple[bytes, str]:
    """The batch body and its boundary, as the SDK would write it."""
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    date = format_date_time(time.time())
    pieces = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode("ascii")]
    for index, request in enumerate(requests):
        pieces.append(f"--{changeset}\r\n".encode("ascii") + _part(index, request, date) + b"\r\n")
    pieces.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode("ascii"))
    return b"".join(pieces), batch


@dataclass(frozen=True)
class Failure:
    """The operation a refused transaction names: its HTTP status, error code and message."""

    status: int
    code: str
    message: str
    index: int | None  # None when the message names no operation


@dataclass(frozen=True)
class Answer:
    """What a transaction got: the status, every ETag on success, the failure on refusal."""

    status: int
    etags: list[str | None] | None = None
    failure: Failure | None = None


def failure(body: bytes) -> Failure | None:
    """The failed operation of a refused transaction's answer (one changeset part), else None."""
    found = _BOUNDARY.search(body)
    if found is None:
        return None
    parts = body.split(b"--" + found.group(1))[1:-1]
    if len(parts) != 1:
        return None
    status = _STATUS.search(parts[0])
    if status is None or 200 <= int(status.group(1)) < 300:
        return None
    start = parts[0].find(b"{", status.end())
    if start < 0:
        return None
    try:
        error = json.loads(parts[0][start:])
        code, message = error["odata.error"]["code"], error["odata.error"]["message"]["value"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    named, colon, _ = message.partition(":")
    index = int(named) if colon and named.isdigit() and len(named) < 4 else None
    return Failure(int(status.group(1)), code, message, index)


def decode(body: bytes, expected: int) -> list[str | None] | None:
    """The ETag of every operation of a fully successful answer, else ``None``."""
    found = _BOUNDARY.search(body)
    if found is None:
        return None
    delimiter = b"--" + found.group(1)
    parts = body.split(delimiter)[1:-1]
    if len(parts) != expected:
        return None
    etags: list[str | None] = []
    for part in parts:
        status = _STATUS.search(part)
        if status is None or not 200 <= int(status.group(1)) < 300:
            return None
        etag = _ETAG.search(part)
        etags.append(etag.group(1).strip().decode("utf-8") if etag else None)
    return etags


@dataclass(slots=True)
class FastPath:
    """Whether this process encodes batches itself, decided once (``decide``): the private SDK
    attributes it builds on (``TableBatchOperations``, the client's ``_client``, ``_config``,
    ``_primary_hostname``, ``_cosmos_endpoint``) may change in another SDK version, and then
    every batch goes through ``submit_transaction`` instead: slower, never failing."""

    decided: bool = False
    usable: bool = False
    reason: str = ""

    def disable(self, reason: str) -> None:
        if self.usable or not self.decided:
            log.warning("Table batches go through the SDK's submit_transaction: %s", reason)
        self.decided, self.usable, self.reason = True, False, reason


FAST_PATH = FastPath()
_PROBE: list[Any] = [("create", {"PartitionKey": "probe", "RowKey": "probe", "Text": "x", "Count": 1,
                                 "Size": EntityProperty(2**40, EdmType.INT64), "At": datetime(2026, 1, 1, tzinfo=timezone.utc)}),
                     ("create", {"PartitionKey": "probe", "RowKey": "probe2"})]


def decide(client: TableClient) -> bool:
    """Decide, once per process, whether batches are encoded here: build a probe transaction
    (no I/O) and look up what ``submit_fast`` uses; any failure means the SDK's path, logged."""
    if FAST_PATH.decided:
        return FAST_PATH.usable
    try:
        if TableBatchOperations is None:
            raise ImportError("azure.data.tables._table_batch.TableBatchOperations is not importable")
        sub_requests(client, _PROBE)
        if not callable(client._client.send_request) or not isinstance(client._primary_hostname, str):
            raise TypeError("the client's pipeline is not the one the encoder sends through")
    except Exception as exc:  # any change of the private SDK surface: the SDK's own path
        FAST_PATH.disable(f"this azure-data-tables does not offer what the fast encoder uses ({type(exc).__name__}: {exc})")
        return False
    FAST_PATH.decided, FAST_PATH.usable = True, True
    return True


async def submit_fast(client: TableClient, operations: Sequence[Any]) -> Answer:
    """Send a transaction: the answer's status, every new ETag on full success, or the failed
    operation when Table storage refused it (see the module).

    ``Answer(0)`` when this SDK version offers no usable request builder (``decide``), or the
    builder refused an operation: the caller sends the transaction through
    ``submit_transaction`` as usual.
    """
    if not decide(client):
        return Answer(0)
    try:
        requests = sub_requests(client, operations)
    except AttributeError as exc:  # the private builder changed under us: the SDK's path from now on
        FAST_PATH.disable(f"the SDK's batch builder failed ({exc})")
        return Answer(0)
    except Exception:  # an operation the SDK refuses: its own path raises its own, precise error
        return Answer(0)
    body, boundary = encode(requests)
    request = HttpRequest(
        "POST",
        f"{client.scheme}://{client._primary_hostname}/$batch",
        headers={
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={boundary}",
            "Accept": "application/json",
        },
        content=body,
    )
    # Streamed, as the SDK does it: the pipeline must not try to deserialize multipart.
    response = await client._client.send_request(request, stream=True)
    await response.read()
    if response.status_code != 202:
        return Answer(response.status_code)
    etags = decode(response.content, len(operations))
    if etags is not None:
        return Answer(202, etags)
    return Answer(202, failure=failure(response.content))
