"""A counting HTTP proxy in front of Azurite's Table endpoint: the benchmarks' transport meter.

Every process under test talks to Table storage through it, so the figures are what the
deployed app would be billed and throttled for, whatever process or path sent them:

* ``requests``        every HTTP request (reads, writes, batch transactions)
* ``entities``        entity operations written: each operation of a committed batch, each
                      committed single write
* ``failed_tx``       writes refused as a whole: a batch answered with an error part (its
                      condition failed, so nothing of it was written) or a single write
                      answered 4xx/5xx
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}
_OPERATION = re.compile(rb"^(POST|PUT|MERGE|PATCH|DELETE) https?://", re.MULTILINE)
_FAILED_PART = re.compile(rb"^HTTP/1\.1 [45]\d\d", re.MULTILINE)


@dataclass
class Counts:
    requests: int = 0
    reads: int = 0
    entities: int = 0
    failed_tx: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # "METHOD path-kind status" -> count

    def failed(self, request: web.Request, status: int) -> None:
        self.failed_tx += 1
        kind = "batch" if request.path.endswith("$batch") else ("entity" if "(" in request.path else "table")
        label = f"{request.method} {kind} {status}"
        self.failures[label] = self.failures.get(label, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "reads": self.reads, "entities": self.entities, "failed_tx": self.failed_tx,
                "failures": dict(self.failures)}


@dataclass
class CountingProxy:
    target: str  # Azurite's table endpoint, e.g. http://127.0.0.1:10002
    counts: Counts = field(default_factory=Counts)

    def start(self) -> CountingProxy:
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("counting proxy did not start")
        return self

    @property
    def port(self) -> int:
        return self._port

    def take(self) -> Counts:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counts()
        return counts

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        # The raw path and no added headers: Shared Key signs the path and the content type.
        async with self._session.request(
            request.method, URL(f"{self.target}{request.raw_path}", encoded=True), headers=headers, data=body,
            allow_redirects=False, skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        self._count(request, body, status, payload)
        return web.Response(status=status, body=payload, headers=out_headers)

    def _count(self, request: web.Request, body: bytes, status: int, payload: bytes) -> None:
        with self._lock:
            counts = self.counts
            counts.requests += 1
            if request.path.endswith("$batch"):
                failed = _FAILED_PART.search(payload)
                if status >= 400 or failed:
                    counts.failed(request, int(failed.group(0)[-3:]) if failed else status)
                else:
                    counts.entities += len(_OPERATION.findall(body))
            elif request.method == "GET":
                counts.reads += 1
            elif request.path.rstrip("/").endswith("Tables") or "Tables(" in request.path:
                pass  # creating or checking the table itself
            elif status >= 400:
                counts.failed(request, status)
            else:
                counts.entities += 1

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
