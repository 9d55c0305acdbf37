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
from collections import Counter

from aiohttp import web

from devtools.table_proxy import TableProxy

FAULTS = ("busy", "timeout", "drop", "drop_after")


def _table_error(status: int, code: str, message: str) -> web.Response:
    body = {"odata.error": {"code": code, "message": {"lang": "en-US", "value": message}}}
    return web.json_response(body, status=status, headers={"x-ms-error-code": code})


class FaultProxy(TableProxy):
    def __init__(self, target: str, rate: float = 0.0, faults: tuple[str, ...] = FAULTS, seed: int = 0) -> None:
        super().__init__(target)
        self.rate = rate
        self.faults = faults
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._rng = random.Random(seed)

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
        status, headers, payload = await self.forward(request, body)
        self.forwarded += 1
        if fault == "drop_after":
            return self._drop(request)
        return web.Response(status=status, body=payload, headers=headers)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # aiohttp ends the handler without writing a response
