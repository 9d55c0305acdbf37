"""A forwarding HTTP proxy in front of one of Azurite's endpoints, on its own thread and loop.

Test and benchmark tools put it between the app and Azurite's Table endpoint to see (or
disturb) what the app really sends; subclasses decide what to do with each request in
``_handle`` and call ``forward`` to pass it on unchanged.
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web
from yarl import URL

#: How long Azurite (Node's http server) keeps an idle connection open.
AZURITE_KEEPALIVE_SECONDS = 5
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class TableProxy:
    #: Whether a request's handler is cancelled when the app closes its connection (a subclass
    #: that holds requests sees the app give up).
    handler_cancellation = False

    def __init__(self, target: str) -> None:
        self.target = target  # e.g. http://127.0.0.1:10002

    def start(self) -> TableProxy:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
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
        # Azurite closes an idle keep-alive connection after 5 s (it answers "Keep-Alive:
        # timeout=5", Node's default); aiohttp keeps one for 15 s, and re-using one Azurite has
        # just closed is a "Connection reset by peer" the app sees as a 500 and retries: noise in
        # the counts. Idle ones are dropped before Azurite drops them.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=AZURITE_KEEPALIVE_SECONDS - 2)
        self._session = aiohttp.ClientSession(auto_decompress=False, connector=connector)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=self.handler_cancellation)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        status, headers, payload = await self.forward(request, await request.read())
        return web.Response(status=status, body=payload, headers=headers)

    async def forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send the request on unchanged: the raw path and no added headers (Shared Key signs
        the path and the content type). The answer's status, headers and body."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, URL(f"{self.target}{request.raw_path}", encoded=True), headers=headers, data=body,
            allow_redirects=False, skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
        ) as upstream:
            payload = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            return upstream.status, out_headers, payload

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
