"""What route handlers get through ``Depends``: the service, the key check, checked IDs, paging.

The key check (``require_key``) guards every router but health and the browser page. Served
directly, it checks ``x-functions-key`` / ``?code=`` against ``API_KEYS``; under the Functions
host the app is built with ``check_keys=False`` and the host checks function keys itself.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Path, Query, Request

from shared.domain.conventions import is_valid_job_id, is_valid_kind, is_valid_task_id
from shared.read.query import Page
from shared.service import Service, ServiceHolder

from .errors import ApiError

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000


async def service(request: Request) -> Service:
    """The process's one ``Service``, created on first use."""
    holder: ServiceHolder = request.app.state.services
    return await holder.get()


def _presented_keys(request: Request) -> list[bytes]:
    presented = [v for k, v in request.scope.get("headers", []) if k == b"x-functions-key"]
    presented += [v.encode("utf-8") for k, v in request.query_params.multi_items() if k == "code"]
    return presented


async def require_key(request: Request) -> None:
    """401 unless the request presents one of the app's keys (no-op under the Functions host)."""
    keys: tuple[bytes, ...] | None = request.app.state.api_keys
    if keys is None:
        return
    if any(hmac.compare_digest(p, key) for p in _presented_keys(request) for key in keys):
        return
    log.warning("401 for %s %s: missing or wrong key", request.method, request.url.path)
    raise ApiError(401, "Unauthorized", "A valid key is required.")


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
    """The URL of the next page (this request's query, with the new token and without the key)."""
    if not page.next_token:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("continuationToken", "code")]
    params.append(("continuationToken", page.next_token))
    return str(request.url.replace(query=urlencode(params)))
