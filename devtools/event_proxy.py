"""The local event source: a proxy in front of Azurite's blob endpoint that emits what Azure emits.

Azurite emits no events. Every client of the local blob endpoint (the SDK, the CLI, the app,
Azurite's own loopback reads for copies) goes through this proxy, so it sees each operation and
its answer, and publishes exactly the events Azure Storage raises for it (Event Grid schema,
see ``devtools.event_feed``), by construction and without polling:

=====================================================  ====================================
operation (REST)                                       event
=====================================================  ====================================
Put Blob (block blob)                                  BlobCreated, api PutBlob, its size
Put Blob (``x-ms-blob-type: AppendBlob``)              BlobCreated, api PutBlob, size 0
Put Blob (``x-ms-blob-type: PageBlob``)                BlobCreated, api PutBlob, declared size
Put Block List                                         BlobCreated, api PutBlockList
Copy Blob, Copy Blob From URL (sync copy)              BlobCreated, api CopyBlob (on completion)
Put Blob From URL                                      BlobCreated, api PutBlobFromUrl
Delete Blob (also inside a Blob Batch)                 BlobDeleted, api DeleteBlob
Put Block, Put Block From URL                          nothing (until Put Block List)
Append Block, Append Block From URL, Put Page(s)       nothing
Set Blob Properties (incl. resize), Metadata, Tags     nothing
Lease, Snapshot, Set Blob Tier, Undelete, Abort Copy   nothing
Delete Blob of a snapshot or version only              nothing (the blob itself stays)
Create / Delete Container, any read, any failure       nothing
=====================================================  ====================================

Only successful (2xx) operations emit. Events carry ``contentLength``, ``contentType``,
``blobType`` and ``eTag`` as Azure does; the proxy reads the blob's properties from Azurite right
after a create (and before a delete, for ``contentType``/``blobType``) while it holds that blob's
lock, so the figures are those of the operation itself. Mutations of one blob through the proxy
are serialized, and each event's sequencer is taken when its operation completes: per blob,
sequencers increase in the order Azurite applied the operations.

The proxy forwards the request line (method, path and query, byte for byte), every header
(``Host`` as the client sent it: Shared Key signatures cover the canonicalized resource, SAS
tokens the query) and streams bodies both ways, so uploads and downloads of any size pass
through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from devtools.event_feed import BLOB_CREATED, BLOB_DELETED, EventFeed, blob_event
from shared.store.clients import DEVSTORE_ACCOUNT, DEVSTORE_KEY

log = logging.getLogger("event-proxy")

#: Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the request's; ``Expect`` is
#: answered by the proxy itself. Everything else is forwarded as the client sent it.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "expect",
})
#: Blob names are up to 1,024 characters, percent-encoded up to 9 bytes each, plus a SAS.
_MAX_LINE = 64 * 1024
_CHUNK = 256 * 1024
_BLOB_TYPES = {"blockblob": "BlockBlob", "appendblob": "AppendBlob", "pageblob": "PageBlob"}


# --- what Azure emits for an operation --------------------------------------------------------


@dataclass(frozen=True)
class BlobAddress:
    account: str
    container: str
    blob: str


@dataclass(frozen=True)
class Emission:
    """The event an operation raises when it succeeds."""

    event_type: str
    api: str
    address: BlobAddress


def blob_address(host: str, raw_path: str) -> BlobAddress | None:
    """Account, container and blob name of a request path (path-style or host-style URL)."""
    path = raw_path.split("?", 1)[0]
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    labels = hostname.split(".")
    if len(labels) > 2 and labels[1] == "blob":  # account.blob.localhost[:port]/container/blob
        account, rest = labels[0], path.lstrip("/")
    else:  # 127.0.0.1:10000/account/container/blob
        parts = path.lstrip("/").split("/", 1)
        if len(parts) < 2:
            return None
        account, rest = parts
    container, _, blob = rest.partition("/")
    if not account or not container or not blob:
        return None
    return BlobAddress(unquote(account), unquote(container), unquote(blob))


def _query(raw_path: str) -> dict[str, str]:
    query = raw_path.split("?", 1)[1] if "?" in raw_path else ""
    return {k.lower(): v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


def classify(method: str, host: str, raw_path: str, headers: Mapping[str, str]) -> Emission | None:
    """The event Azure Storage raises for this request when it succeeds, or None.

    ``headers`` must look up case-insensitively (a ``CIMultiDict``, or lower-case keys).
    """
    address = blob_address(host, raw_path)
    if address is None:
        return None  # service or container operation (Delete Container included): nothing
    query = _query(raw_path)
    if "restype" in query:
        return None
    comp = query.get("comp")
    method = method.upper()
    if method == "PUT" and comp is None:
        if headers.get("x-ms-copy-source"):
            # Put Blob From URL names the blob type; Copy Blob (async or sync) does not.
            api = "PutBlobFromUrl" if headers.get("x-ms-blob-type") else "CopyBlob"
            return Emission(BLOB_CREATED, api, address)
        if headers.get("x-ms-blob-type"):
            return Emission(BLOB_CREATED, "PutBlob", address)
        return None
    if method == "PUT" and comp == "blocklist":
        return Emission(BLOB_CREATED, "PutBlockList", address)
    if method == "DELETE" and comp is None:
        if "snapshot" in query or "versionid" in query or "deletetype" in query:
            return None  # a snapshot or version goes; the blob stays
        if (headers.get("x-ms-delete-snapshots") or "").lower() == "only":
            return None
        return Emission(BLOB_DELETED, "DeleteBlob", address)
    return None


# --- Blob Batch (multipart/mixed) -------------------------------------------------------------


@dataclass(frozen=True)
class SubRequest:
    content_id: str | None
    method: str
    raw_path: str
    headers: CIMultiDict[str]


def _boundary(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def _parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)[1:]  # [0] is the preamble
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        parts.append(chunk.strip(b"\r\n"))
    return parts


def _split_head(block: bytes) -> tuple[list[str], bytes]:
    head, _, rest = block.replace(b"\r\n", b"\n").partition(b"\n\n")
    return head.decode("utf-8", "replace").split("\n"), rest


def _headers(lines: Iterable[str]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return headers


def batch_subrequests(body: bytes, content_type: str) -> list[SubRequest]:
    boundary = _boundary(content_type)
    if boundary is None:
        return []
    requests = []
    for part in _parts(body, boundary):
        mime_lines, inner = _split_head(part)
        mime = _headers(mime_lines)
        lines, _ = _split_head(inner)
        request_line = lines[0].split(" ") if lines else []
        if len(request_line) < 2:
            continue
        requests.append(SubRequest(mime.get("Content-ID"), request_line[0], request_line[1], _headers(lines[1:])))
    return requests


def batch_statuses(body: bytes, content_type: str) -> list[tuple[str | None, int, CIMultiDict[str]]]:
    boundary = _boundary(content_type)
    if boundary is None:
        return []
    answers = []
    for part in _parts(body, boundary):
        mime_lines, inner = _split_head(part)
        lines, _ = _split_head(inner)
        status_line = lines[0].split(" ") if lines else []
        if len(status_line) < 2 or not status_line[1].isdigit():
            continue
        answers.append((_headers(mime_lines).get("Content-ID"), int(status_line[1]), _headers(lines[1:])))
    return answers


# --- the proxy ---------------------------------------------------------------------------------


def azurite_accounts(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Azurite's accounts and keys: the well-known dev account, plus ``AZURITE_ACCOUNTS``."""
    accounts = {DEVSTORE_ACCOUNT: DEVSTORE_KEY}
    for entry in (environ.get("AZURITE_ACCOUNTS") or "").split(";"):
        name, _, keys = entry.partition(":")
        if name and keys:
            accounts[name] = keys.split(":")[0]
    return accounts


@dataclass(frozen=True)
class _BlobState:
    blob_type: str
    content_type: str | None
    size: int | None
    etag: str | None
    copy_status: str | None = None


class _KeyedLocks:
    """One asyncio lock per blob, alive while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[BlobAddress, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, addresses: Iterable[BlobAddress]) -> AsyncIterator[None]:
        keys = sorted(set(addresses), key=lambda a: (a.account, a.container, a.blob))  # no deadlocks
        for key in keys:
            lock, users = self._locks.get(key, (asyncio.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        acquired = []
        try:
            for key in keys:
                await self._locks[key][0].acquire()
                acquired.append(key)
            yield
        finally:
            for key in acquired:
                self._locks[key][0].release()
            for key in keys:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class EventProxy:
    """Serves the blob endpoint on ``host:port``, forwards to Azurite at ``upstream``, and
    publishes to ``feed`` the events Azure would raise. Runs in a thread of its own
    (``start``/``stop``) with its own event loop, which also runs the feed's delivery."""

    def __init__(
        self,
        upstream: str,
        feed: EventFeed,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.feed = feed
        self.host = host
        self._port = port
        self.accounts = dict(accounts) if accounts is not None else azurite_accounts()
        self.emitted = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle

    def start(self, timeout: float = 10.0) -> EventProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # e.g. the port is taken
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="event-proxy")
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the event proxy did not start")
        if failure:
            raise RuntimeError(f"the event proxy could not listen on {self.host}:{self._port}: {failure[0]}")
        return self

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def connection_string(self, account: str = DEVSTORE_ACCOUNT) -> str:
        """A blob-only connection string for the proxied endpoint."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={self.accounts[account]};"
            f"BlobEndpoint={self.url}/{account};"
        )

    def call(self, coroutine: Any, timeout: float | None = None) -> Any:
        """Run a coroutine in the proxy's loop from another thread (tests, shutdown)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every event published so far is delivered."""
        return bool(self.call(self.feed.drain(timeout), timeout + 1))

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self.call(self._close(), 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            max_line_size=_MAX_LINE, max_field_size=_MAX_LINE,
            connector=aiohttp.TCPConnector(limit=256),
        )
        self._locks = _KeyedLocks()
        self._clients: dict[str, Any] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=False,  # an applied operation still raises its event
            max_line_size=_MAX_LINE, max_field_size=_MAX_LINE, auto_decompress=False,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            await self._session.close()
            raise
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._delivery = asyncio.get_running_loop().create_task(self.feed.run())

    async def _close(self) -> None:
        for task in [self._delivery, *self._watchers]:
            task.cancel()
        await asyncio.gather(self._delivery, *self._watchers, return_exceptions=True)
        await self._runner.cleanup()
        await self._session.close()
        for client in self._clients.values():
            await client.close()
        for target in (self.feed.deliver, self.feed.dead_letters):
            close = getattr(target, "close", None)
            if close is not None:
                await close()

    # forwarding

    def _upstream_headers(self, request: web.Request) -> CIMultiDict[str]:
        return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)

    async def _send(self, request: web.Request, body: Any) -> aiohttp.ClientResponse:
        return await self._session.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),
            headers=self._upstream_headers(request),
            data=body,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            allow_redirects=False,
            auto_decompress=False,
        )

    @staticmethod
    def _response_headers(upstream: aiohttp.ClientResponse, *, keep_length: bool) -> CIMultiDict[str]:
        drop = _HOP_BY_HOP if keep_length else _HOP_BY_HOP | {"content-length"}
        return CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in drop)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Forward a request that raises no event, streaming both bodies."""
        async with await self._send(request, request.content if request.body_exists else None) as upstream:
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason,
                headers=self._response_headers(upstream, keep_length=True),
            )
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response

    async def _buffered(self, request: web.Request, body: Any) -> tuple[aiohttp.ClientResponse, bytes]:
        async with await self._send(request, body) as upstream:
            return upstream, await upstream.read()

    @staticmethod
    def _answer(upstream: aiohttp.ClientResponse, payload: bytes) -> web.Response:
        return web.Response(
            status=upstream.status, reason=upstream.reason, body=payload,
            headers=EventProxy._response_headers(upstream, keep_length=False),
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        try:
            if request.method == "POST" and _query(request.raw_path).get("comp") == "batch":
                return await self._batch(request)
            emission = classify(request.method, host, request.raw_path, request.headers)
            if emission is None:
                return await self._stream(request)
            return await self._emitting(request, emission)
        except aiohttp.ClientConnectionError as exc:
            log.warning("Azurite at %s unreachable: %s", self.upstream, exc)
            return web.Response(status=502, text=f"Azurite unreachable: {exc}")

    async def _emitting(self, request: web.Request, emission: Emission) -> web.StreamResponse:
        address = emission.address
        async with self._locks.hold([address]):
            before = await self._state(address) if emission.event_type == BLOB_DELETED else None
            upstream, payload = await self._buffered(request, request.content if request.body_exists else None)
            if 200 <= upstream.status < 300:
                await self._emit(emission, request.headers, upstream.headers, self._url(request, request.raw_path), before)
            return self._answer(upstream, payload)

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        subrequests = batch_subrequests(body, request.headers.get("Content-Type", ""))
        host = request.headers.get("Host", "")
        # Of the sub-requests a batch may hold (Delete Blob, Set Blob Tier), deletes raise events.
        emissions: list[tuple[int, SubRequest, Emission]] = []
        for position, sub in enumerate(subrequests):
            emission = classify(sub.method, host, sub.raw_path, sub.headers)
            if emission is not None and emission.event_type == BLOB_DELETED:
                emissions.append((position, sub, emission))
        async with self._locks.hold(e.address for _, _, e in emissions):
            befores = await asyncio.gather(*(self._state(e.address) for _, _, e in emissions))
            upstream, payload = await self._buffered(request, body)
            if 200 <= upstream.status < 300 and emissions:
                answers = batch_statuses(payload, upstream.headers.get("Content-Type", ""))
                by_id = {cid: (status, headers) for cid, status, headers in answers if cid is not None}
                for (position, sub, emission), before in zip(emissions, befores, strict=True):
                    if sub.content_id is not None and sub.content_id in by_id:
                        status, headers = by_id[sub.content_id]
                    elif position < len(answers):
                        _, status, headers = answers[position]
                    else:
                        continue
                    if 200 <= status < 300:
                        await self._emit(emission, sub.headers, headers, self._url(request, sub.raw_path), before)
            return self._answer(upstream, payload)

    @staticmethod
    def _url(request: web.Request, raw_path: str) -> str:
        return f"{request.scheme}://{request.headers.get('Host', request.host)}{raw_path.split('?', 1)[0]}"

    # the events

    def _client(self, account: str) -> Any:
        from azure.storage.blob.aio import BlobServiceClient

        if account not in self._clients:
            self._clients[account] = BlobServiceClient(
                f"{self.upstream}/{account}",
                credential={"account_name": account, "account_key": self.accounts[account]},
                retry_total=2,
            )
        return self._clients[account]

    async def _state(self, address: BlobAddress) -> _BlobState | None:
        """The blob's properties as Azurite has them now, or None (absent, or no key for it)."""
        if address.account not in self.accounts:
            return None
        try:
            props = await self._client(address.account).get_blob_client(address.container, address.blob).get_blob_properties()
        except Exception as exc:
            log.debug("properties of %s: %s", address, exc)
            return None
        blob_type = getattr(props.blob_type, "value", props.blob_type)
        return _BlobState(
            blob_type=str(blob_type), content_type=props.content_settings.content_type,
            size=props.size, etag=props.etag, copy_status=getattr(props.copy, "status", None),
        )

    async def _emit(
        self,
        emission: Emission,
        request_headers: Mapping[str, str],
        response_headers: Mapping[str, str],
        url: str,
        before: _BlobState | None,
    ) -> None:
        address = emission.address
        if emission.event_type == BLOB_DELETED:
            state = before
            blob_type = state.blob_type if state else "BlockBlob"
        else:
            state = await self._state(address)
            if emission.api == "CopyBlob" and (response_headers.get("x-ms-copy-status") or "").lower() == "pending":
                self._watch_copy(emission, request_headers, response_headers, url)
                return
            declared = (request_headers.get("x-ms-blob-type") or "").lower()
            blob_type = state.blob_type if state else _BLOB_TYPES.get(declared, "BlockBlob")
        size = state.size if state else None
        if state is None and emission.event_type == BLOB_CREATED and emission.api == "PutBlob":
            size = _declared_size(request_headers)
        content_type = state.content_type if state else (
            request_headers.get("x-ms-blob-content-type") or request_headers.get("Content-Type")
        )
        self._publish(
            emission, url=url, blob_type=blob_type, content_type=content_type, size=size,
            etag=response_headers.get("ETag") or (state.etag if state else None),
            request_id=response_headers.get("x-ms-request-id"),
            client_request_id=request_headers.get("x-ms-client-request-id") or response_headers.get("x-ms-client-request-id"),
        )

    def _publish(self, emission: Emission, *, url: str, blob_type: str, content_type: str | None, size: int | None,
                 etag: str | None, request_id: str | None, client_request_id: str | None) -> None:
        address = emission.address
        event = blob_event(
            emission.event_type, account=address.account, container=address.container, blob=address.blob,
            api=emission.api, url=url, sequencer=self.feed.sequencer.next(), blob_type=blob_type,
            content_type=content_type, request_id=request_id, client_request_id=client_request_id,
            etag=etag if emission.event_type == BLOB_CREATED else None,
            content_length=size if emission.event_type == BLOB_CREATED else None,
        )
        self.emitted += 1
        self.feed.publish(event)

    def _watch_copy(self, emission: Emission, request_headers: Mapping[str, str],
                    response_headers: Mapping[str, str], url: str) -> None:
        """An asynchronous copy raises BlobCreated when the blob is completely committed."""
        request_headers = CIMultiDict(request_headers)
        response_headers = CIMultiDictProxy(CIMultiDict(response_headers))
        copy_id = response_headers.get("x-ms-copy-id")

        async def watch() -> None:
            for _ in range(3000):  # up to ~10 minutes
                await asyncio.sleep(0.2)
                async with self._locks.hold([emission.address]):
                    state = await self._state(emission.address)
                    if state is None or state.copy_status != "pending":
                        if state is not None and state.copy_status == "success":
                            self._publish(
                                emission, url=url, blob_type=state.blob_type, content_type=state.content_type,
                                size=state.size, etag=state.etag, request_id=response_headers.get("x-ms-request-id"),
                                client_request_id=request_headers.get("x-ms-client-request-id"),
                            )
                        return
            log.warning("copy %s to %s still pending after 10 minutes: no event", copy_id, emission.address)

        task = asyncio.get_running_loop().create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)


def _declared_size(headers: Mapping[str, str]) -> int | None:
    kind = (headers.get("x-ms-blob-type") or "").lower()
    if kind == "appendblob":
        return 0
    value = headers.get("x-ms-blob-content-length") if kind == "pageblob" else headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None
