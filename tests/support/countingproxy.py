"""A Table proxy that counts the app's requests, and can hold its queries of the job registry
(test code; the benchmarks' transport meter is ``bench/counting_proxy.py``)."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import unquote

from aiohttp import web

from devtools.table_proxy import TableProxy


class CountingProxy(TableProxy):
    """Counts the Table requests the app sends; holds queries of ``~jobs`` while ``hold`` is set,
    and records whether the app gave one up (closed its connection) while held."""

    handler_cancellation = True

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.requests = 0
        #: Each request: its method, its unquoted path and query, and (batches) its body.
        self.seen: list[tuple[str, str, bytes]] = []
        self.hold = False
        self.held = threading.Event()
        self.abandoned = threading.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read() if request.path.endswith("$batch") else b""
        self.seen.append((request.method, unquote(request.path_qs), body))
        if self.hold and "~jobs" in unquote(request.query_string):
            self.held.set()
            try:
                await asyncio.Event().wait()  # until the app gives up
            except asyncio.CancelledError:
                self.abandoned.set()
                raise
        return await super()._handle(request)
