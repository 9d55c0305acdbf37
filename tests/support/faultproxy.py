"""A fault-injecting HTTP proxy in front of Azurite's Table endpoint (test code).

A configurable share of requests is answered with a fault instead of (or after) being
forwarded:

* ``busy``      503 ServerBusy, not forwarded (what a throttled account answers)
* ``timeout``   500 OperationTimedOut, not forwarded
* ``drop``      the connection is closed before forwarding (the request never arrived)
* ``drop_after`` the request IS forwarded (a batch commits) and then the connection is
  closed: the client never learns the outcome and must re-read, not count twice
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from yarl import URL

FAULTS = ("busy", "timeout", "drop", "drop_after")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


def _table_error(status: int, code: str, message: str) -> web.Response:
    body = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}}
    return web.json_response(body, status=status, headers={"x-ms-error-code": code})


@dataclass
class FaultProxy:
    target: str  # e.g. http://127.0.0.1:10002
    rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    seed: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    forwarded: int = 0

    def start(self) -> FaultProxy:
        self._rng = random.Random(self.seed)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    @property
    def port(self) -> int:
        return self._port

    def connection_string(self, azurite_connection_string: str, table_port: int) -> str:
        """Azurite's connection string with the Table endpoint pointed at this proxy."""
        return azurite_connection_string.replace(f":{table_port}/", f":{self._port}/")

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]
        self._ready.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._rng.choice(self.faults) if self._rng.random() < self.rate else None
        if fault:
            self.injected[fault] += 1
        if fault == "busy":
            return _table_error(503, "ServerBusy", "The server is busy (injected).")
        if fault == "timeout":
            return _table_error(500, "OperationTimedOut", "Operation could not be completed within the specified time (injected).")
        if fault == "drop":
            return self._drop(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, URL(f"{self.target}{request.raw_path}", encoded=True), headers=headers, data=body,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
        ) as upstream:
            payload = await upstream.read()
            self.forwarded += 1
            if fault == "drop_after":
                return self._drop(request)
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            return web.Response(status=upstream.status, body=payload, headers=out_headers)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # aiohttp ends the handler without writing a response

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
