"""What route handlers get through ``Depends``: the service, the key checks, checked IDs, paging.

Keys have roles (SPEC §10): ``API_KEYS`` read and administer (every router but health, the
browser page and the webhook: ``require_api_key``); ``EVENTS_KEYS`` post events and nothing
else (the webhook: ``require_events_key``). Served directly, the app checks both. Under the
Functions host the host checks function keys on the API's routes (the app is built with
``check_keys=False``, and still refuses an events key there), while the webhook is its own
function whose events key the app checks (see ``functions/http_app.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Awaitable
from typing import Annotated, TypeVar
from urllib.parse import quote, urlencode

from fastapi import Depends, Path, Query, Request

from shared.domain.conventions import is_valid_job_id, is_valid_kind, is_valid_task_id
from shared.read.query import Page
from shared.service import Service, ServiceHolder
from shared.settings import Settings

from . import logs
from .errors import ApiError

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000

T = TypeVar("T")


async def _client_left(request: Request) -> None:
    """Return once the client has gone (ASGI ``http.disconnect``).

    After the request's body, the server's ``receive`` waits until the connection closes
    (uvicorn); under the Functions host it waits until the answer is sent, so there it never
    cuts work short."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or its storage requests cancelled as soon as the client goes away
    (a listing of thousands of jobs is many requests nobody would read); then ``499``."""
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(request))
    finished = False
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finished = job.done()
    finally:
        watcher.cancel()
        if not job.done():
            job.cancel()
    if not finished:
        log.info("%s %s: the client went away, its storage work stopped", request.method, request.url.path)
        raise ApiError(499, "ClientClosedRequest", "The client closed the request.")
    return job.result()


class Access:
    """Who may call what (the keys by role), and where clients reach the app (``PUBLIC_BASE_URL``).

    Read from settings on first use: under the Functions host the app is built at import time,
    before a request proves the settings are there.
    """

    def __init__(self, settings: Settings | None, *, check_api_keys: bool) -> None:
        self._settings = settings
        self._check_api_keys = check_api_keys
        self._lock = threading.Lock()
        self._loaded = False
        self.api_keys: tuple[bytes, ...] | None = None
        self.events_keys: tuple[bytes, ...] = ()
        self.public_base_url: str | None = None

    def load(self) -> Access:
        with self._lock:
            if not self._loaded:
                settings = self._settings or Settings.load()
                if self._check_api_keys:
                    self.api_keys = tuple(k.encode("utf-8") for k in settings.api_keys)
                    if not settings.api_keys:
                        log.warning("API_KEYS is empty: every route but /api/health and the webhook answers 401")
                self.events_keys = tuple(k.encode("utf-8") for k in settings.events_keys)
                if not settings.events_keys:
                    log.warning("EVENTS_KEYS is empty: POST /api/events answers 401")
                self.public_base_url = settings.public_base_url
                logs.protect([*settings.api_keys, *settings.events_keys])
                self._loaded = True
        return self


async def service(request: Request) -> Service:
    """The process's one ``Service``, created on first use."""
    holder: ServiceHolder = request.app.state.services
    return await holder.get()


def _presented_keys(request: Request) -> list[bytes]:
    presented = [v for k, v in request.scope.get("headers", []) if k == b"x-functions-key"]
    presented += [v.encode("utf-8") for k, v in request.query_params.multi_items() if k == "code"]
    return presented


def _matches(presented: list[bytes], keys: tuple[bytes, ...]) -> bool:
    return any(hmac.compare_digest(p, key) for p in presented for key in keys)


def _unauthorized(request: Request, why: str) -> ApiError:
    log.warning("401 for %s %s: %s", request.method, request.url.path, why)
    return ApiError(401, "Unauthorized", "A valid key is required.")


async def require_api_key(request: Request) -> None:
    """401 unless the request presents an ``API_KEYS`` key (under the host: a function key,
    which the host checked, and never an events key)."""
    access: Access = request.app.state.access.load()
    presented = _presented_keys(request)
    if access.api_keys is None:
        if _matches(presented, access.events_keys):
            raise _unauthorized(request, "an events key on an API route")
        return
    if not _matches(presented, access.api_keys):
        raise _unauthorized(request, "missing or wrong key")


async def require_events_key(request: Request) -> None:
    """401 unless the request presents an ``EVENTS_KEYS`` key (served directly and under the host)."""
    access: Access = request.app.state.access.load()
    if not _matches(_presented_keys(request), access.events_keys):
        raise _unauthorized(request, "missing or wrong events key")


def _job_id(job_id: Annotated[str, Path(description="Batch job ID (schedule jobs: {scheduleId}:job-{n})",
                                        max_length=200, examples=["nightly:job-7"])]) -> str:
    if not is_valid_job_id(job_id):
        raise ApiError(400, "InvalidJobId", "A job ID is 1-64 letters, digits, '-' or '_' ({scheduleId}:job-{n} for schedule jobs).")
    return job_id


def _task_id(task_id: Annotated[str, Path(description="Batch task ID", max_length=200, examples=["t1"])]) -> str:
    if not is_valid_task_id(task_id):
        raise ApiError(400, "InvalidTaskId", "A task ID is 1-64 letters, digits, '-' or '_'.")
    return task_id


def check_kind(kind: str | None) -> str | None:
    if kind is not None and not is_valid_kind(kind):
        raise ApiError(400, "InvalidKind", "An output kind is non-empty printable text without '/' or '\\'.")
    return kind


def _kind_filter(kind: Annotated[str | None, Query(description="output kind, e.g. TaskPreview", max_length=1024)] = None) -> str | None:
    return check_kind(kind)


ServiceDep = Annotated[Service, Depends(service)]
JobId = Annotated[str, Depends(_job_id)]
TaskId = Annotated[str, Depends(_task_id)]
KindFilter = Annotated[str | None, Depends(_kind_filter)]
Prefix = Annotated[str, Query(description="path prefix", max_length=1024)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page (1-5000)")]
Token = Annotated[str | None, Query(alias="continuationToken", max_length=4096, description="from nextLink")]


def next_link(request: Request, page: Page) -> str | None:
    """The URL of the next page: this request's path and query, with the new token and without
    the key. Built on ``PUBLIC_BASE_URL`` when set, else relative (``/api/...``): never from the
    request's ``Host`` header, which the caller chooses."""
    if not page.next_token:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("continuationToken", "code")]
    params.append(("continuationToken", page.next_token))
    access: Access = request.app.state.access.load()
    path = quote(request.scope["path"], safe="/:@!$&'()*+,;=-._~")
    return f"{access.public_base_url or ''}{path}?{urlencode(params)}"
