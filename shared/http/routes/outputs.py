"""Outputs: listings by job, task and kind; one output by its ID with a read-only ``downloadUrl``;
the tail of a log output.

``{path}`` is the rest of the URL, percent-decoded: an output path may hold ``/`` (nested
folders), and ``%``, ``#``, ``?`` or spaces arrive percent-encoded.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.convertors import PathConvertor, register_url_convertor

from shared.read.query import iso
from shared.service import Service
from shared.store.log_tail import DEFAULT_TAIL_BYTES, MAX_TAIL_BYTES, TailChangingError, read_tail
from shared.store.sas import SasError

from ..dependencies import (
    DEFAULT_PAGE_SIZE,
    JobId,
    KindFilter,
    PageSize,
    Prefix,
    ServiceDep,
    SpreadPageSize,
    TaskId,
    Token,
    check_kind,
    next_link,
)
from ..errors import ApiError, error_statuses
from ..schemas import Output, OutputList, OutputTail

router = APIRouter(tags=["outputs"])


class OutputPathConvertor(PathConvertor):
    """The rest of the URL, whatever it holds: Starlette's ``path`` is ``.*``, which stops at a
    newline, and a blob name may hold one (a listing shows it; its URL carries ``%0A``)."""

    regex = "(?s:.*)"


register_url_convertor("outputpath", OutputPathConvertor())

OutputKind = Annotated[str, Path(description="output kind, e.g. TaskPreview", max_length=1024, examples=["TaskPreview"])]
OutputPathParam = Annotated[str, Path(description="the output's path within its kind (may hold '/')", max_length=1024,
                                      examples=["thumb.png"])]
TailBytes = Annotated[int, Query(alias="maxBytes", ge=1, le=MAX_TAIL_BYTES, description="read at most this many bytes from the end")]
#: Bulk downloads (the client's ``download_outputs``) ask the links with the listing: one request
#: a page instead of one a file.
DownloadUrls = Annotated[bool, Query(alias="downloadUrls", description="add each item's read-only downloadUrl and downloadUrlExpiresAt")]
_LIST: dict[str, Any] = {"response_model": OutputList, "response_model_exclude_unset": True, "responses": error_statuses(400, 401)}
_ONE: dict[str, Any] = {"response_model_exclude_unset": True, "responses": error_statuses(400, 401, 404)}


@router.get("/api/jobs/{job_id}/outputs", **_LIST)
async def job_outputs(request: Request, job_id: JobId, svc: ServiceDep, kind: KindFilter = None, prefix: Prefix = "",
                      maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None, download_urls: DownloadUrls = False) -> OutputList:
    """The job's own outputs (JobOutput, JobPreview, custom job kinds)."""
    page = await svc.query.job_outputs(job_id, kind, prefix, maxpagesize, token)
    return OutputList.page(await _with_links(svc, page.items, download_urls), next_link(request, page))


@router.get("/api/jobs/{job_id}/tasks/{task_id}/outputs", **_LIST)
async def task_outputs(request: Request, job_id: JobId, task_id: TaskId, svc: ServiceDep, kind: KindFilter = None,
                       prefix: Prefix = "", maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None, download_urls: DownloadUrls = False) -> OutputList:
    """One task's outputs."""
    page = await svc.query.task_outputs(job_id, task_id, kind, prefix, maxpagesize, token)
    return OutputList.page(await _with_links(svc, page.items, download_urls), next_link(request, page))


@router.get("/api/jobs/{job_id}/task-outputs", **_LIST)
async def all_task_outputs(request: Request, job_id: JobId, svc: ServiceDep, kind: KindFilter = None, prefix: Prefix = "",
                           maxpagesize: SpreadPageSize = None, token: Token = None, download_urls: DownloadUrls = False) -> OutputList:
    """Outputs of every task of the job, in one indexed query (e.g. every TaskPreview)."""
    page = await svc.query.all_task_outputs(job_id, kind, prefix, maxpagesize, token)
    return OutputList.page(await _with_links(svc, page.items, download_urls), next_link(request, page))


async def _with_links(svc: Service, items: list[dict[str, Any]], wanted: bool) -> list[dict[str, Any]]:
    """The items, each with its read-only ``downloadUrl`` when ``wanted``."""
    if not wanted:
        return items
    try:
        links = await asyncio.gather(*(svc.sas.read_link(i["container"], i["blobName"], i.get("contentType")) for i in items))
    except SasError as exc:
        raise ApiError(503, "DownloadLinkUnavailable", str(exc)) from exc
    return [{**item, "downloadUrl": link.url, "downloadUrlExpiresAt": iso(link.expires_at)} for item, link in zip(items, links, strict=True)]


async def _indexed_output(svc: Service, job_id: str, task_id: str | None, kind: str, path: str) -> dict[str, Any]:
    check_kind(kind)
    if not path:
        raise ApiError(400, "InvalidPath", "An output path must not be empty.")
    item = await svc.query.output(job_id, task_id, kind, path)
    if item is None:
        owner = f"task {task_id!r} of job {job_id!r}" if task_id else f"job {job_id!r}"
        raise ApiError(404, "OutputNotFound", f"{owner} has no indexed {kind} output {path!r}.")
    return item


async def _one_output(svc: Service, job_id: str, task_id: str | None, kind: str, path: str) -> Output:
    item = await _indexed_output(svc, job_id, task_id, kind, path)
    try:
        link = await svc.sas.read_link(item["container"], item["blobName"], item.get("contentType"))
    except SasError as exc:
        raise ApiError(503, "DownloadLinkUnavailable", str(exc)) from exc
    return Output.model_validate({**item, "downloadUrl": link.url, "downloadUrlExpiresAt": iso(link.expires_at)})


@router.get("/api/jobs/{job_id}/outputs/{kind}/{path:outputpath}", response_model=Output, **_ONE)
async def job_output(job_id: JobId, kind: OutputKind, path: OutputPathParam, svc: ServiceDep) -> Output:
    """One job output, with a read-only `downloadUrl` for its blob."""
    return await _one_output(svc, job_id, None, kind, path)


@router.get("/api/jobs/{job_id}/tasks/{task_id}/outputs/{kind}/{path:outputpath}", response_model=Output, **_ONE)
async def task_output(job_id: JobId, task_id: TaskId, kind: OutputKind, path: OutputPathParam, svc: ServiceDep) -> Output:
    """One task output, with a read-only `downloadUrl` for its blob."""
    return await _one_output(svc, job_id, task_id, kind, path)


async def _output_tail(svc: Service, job_id: str, task_id: str | None, kind: str, path: str, max_bytes: int) -> OutputTail:
    item = await _indexed_output(svc, job_id, task_id, kind, path)
    try:
        tail = await read_tail(svc.blobs, item["container"], item["blobName"], max_bytes)
    except TailChangingError as exc:
        raise ApiError(503, "OutputChanging", str(exc), {"Retry-After": "1"}) from exc
    if tail is None:
        raise ApiError(404, "OutputNotFound", f"The blob of {kind} output {path!r} is gone.")
    return OutputTail(jobId=job_id, taskId=task_id, kind=kind, path=path, size=tail.size, start=tail.start,
                      truncated=tail.truncated, etag=tail.etag, text=tail.text)


@router.get("/api/jobs/{job_id}/tail/{kind}/{path:outputpath}", response_model=OutputTail, **_ONE)
async def job_output_tail(job_id: JobId, kind: OutputKind, path: OutputPathParam, svc: ServiceDep,
                          max_bytes: TailBytes = DEFAULT_TAIL_BYTES) -> OutputTail:
    """The last lines of one job output (at most `maxBytes`, default 8 KiB, at most 64 KiB)."""
    return await _output_tail(svc, job_id, None, kind, path, max_bytes)


@router.get("/api/jobs/{job_id}/tasks/{task_id}/tail/{kind}/{path:outputpath}", response_model=OutputTail, **_ONE)
async def task_output_tail(job_id: JobId, task_id: TaskId, kind: OutputKind, path: OutputPathParam, svc: ServiceDep,
                           max_bytes: TailBytes = DEFAULT_TAIL_BYTES) -> OutputTail:
    """The last lines of one task output, e.g. a TaskLog (at most `maxBytes`, default 8 KiB)."""
    return await _output_tail(svc, job_id, task_id, kind, path, max_bytes)
