"""A faster wire encoding of Table batch transactions, used by ``shared.table_store``.

``azure-data-tables`` builds a transaction's sub-requests itself (URLs, keys, entity
serialization, conditions: all kept here, built by the SDK), but encodes and decodes the
multipart body with the standard library's e-mail package, which costs several times more CPU
than Table storage spends on the batch: on a small instance that, not storage, caps ingest.
This module writes the same ``multipart/mixed`` body with plain string joins and reads the
answer's status lines and ETags directly.

Only successes are decoded here. Anything else (a failed condition, a throttled or malformed
answer) returns ``None`` and the caller re-sends through the SDK, which then raises its own
exceptions: a transaction that failed committed nothing, so sending it again is safe.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any
from wsgiref.handlers import format_date_time

from azure.core.rest import HttpRequest

try:  # the SDK's own sub-request builder (private: pinned azure-data-tables==12.7.0)
    from azure.data.tables._table_batch import TableBatchOperations
except ImportError:  # pragma: no cover - another SDK version: every batch takes the SDK path
    TableBatchOperations = None  # type: ignore[misc, assignment]
from azure.data.tables.aio import TableClient

_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)
_BOUNDARY = re.compile(rb"boundary=(changesetresponse_[A-Za-z0-9_\-]+)")
_ETAG = re.compile(rb"^etag:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def _part(index: int, request: Any, date: str) -> bytes:
    body = request.content
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = [f"{request.method} {request.url} HTTP/1.1"]
    headers = {**request.headers, "x-ms-date": date, "Date": date}
    if body:
        headers["Content-Length"] = str(len(body))
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {index}\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    )
    return head.encode("utf-8") + (body or b"")


def encode(requests: Sequence[Any]) -> tuple[bytes, str]:
    """The batch body and its boundary, as the SDK would write it."""
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    date = format_date_time(time.time())
    pieces = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode("ascii")]
    for index, request in enumerate(requests):
        pieces.append(f"--{changeset}\r\n".encode("ascii") + _part(index, request, date) + b"\r\n")
    pieces.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode("ascii"))
    return b"".join(pieces), batch


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
        etags.append(etag.group(1).decode("utf-8") if etag else None)
    return etags


async def submit_fast(client: TableClient, operations: Sequence[Any]) -> tuple[int, list[str | None] | None]:
    """Send a transaction: the answer's status and, on full success, every new ETag.

    ``(0, None)`` when this SDK version offers no request builder: the caller sends the
    transaction through ``submit_transaction`` as usual.
    """
    if TableBatchOperations is None:
        return 0, None
    builder = TableBatchOperations(
        config=client._client._config,
        endpoint=f"{client.scheme}://{client._primary_hostname}",
        table_name=client.table_name,
        is_cosmos_endpoint=client._cosmos_endpoint,
    )
    for operation in operations:
        builder.add_operation(operation)
    body, boundary = encode(builder.requests)
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
        return response.status_code, None
    return response.status_code, decode(response.content, len(operations))
