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

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devtools.table_proxy import TableProxy

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
        kind = "batch" if request.path.endswith("$batch") else "entity"
        label = f"{request.method} {kind} {status}"
        self.failures[label] = self.failures.get(label, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "reads": self.reads, "entities": self.entities, "failed_tx": self.failed_tx,
                "failures": dict(self.failures)}


class CountingProxy(TableProxy):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.counts = Counts()
        self._lock = threading.Lock()

    def take(self) -> Counts:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counts()
        return counts

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, headers, payload = await self.forward(request, body)
        self._count(request, body, status, payload)
        return web.Response(status=status, body=payload, headers=headers)

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
