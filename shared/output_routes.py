"""Routes for one output by its ID (job, task, kind, path), each with a read-only ``downloadUrl``.

``{path}`` is the rest of the URL, percent-decoded: an output path may hold ``/`` (nested
folders), and ``%``, ``#``, ``?`` or spaces arrive percent-encoded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from . import models
from .api import ApiError, JobId, TaskId, check_job, check_kind, check_task
from .api import _errors as error_statuses
from .log_tail import DEFAULT_TAIL_BYTES, MAX_TAIL_BYTES, TailChangingError, read_tail
from .query import iso
from .sas import SasError
from .service import Service

OutputKind = Annotated[str, Path(description="output kind, e.g. TaskPreview", max_length=256, examples=["TaskPreview"])]
OutputPathParam = Annotated[str, Path(description="the output's path within its kind (may hold '/')", max_length=1024,
                                             examples=["thumb.png"])]
TailBytes = Annotated[int, Query(alias="maxBytes", ge=1, le=MAX_TAIL_BYTES, description="read at most this many bytes from the end")]


def output_router(service: Callable[[], Awaitable[Service]]) -> APIRouter:
    router = APIRouter()

    async def indexed_output(job_id: str, task_id: str | None, kind: str, path: str) -> tuple[Service, dict[str, Any]]:
        check_job(job_id)
        if task_id is not None:
            check_task(task_id)
        check_kind(kind)
        if not path:
            raise ApiError(400, "InvalidPath", "An output path must not be empty.")
        svc = await service()
        item = await svc.query.output(job_id, task_id, kind, path)
        if item is None:
            owner = f"task {task_id!r} of job {job_id!r}" if task_id else f"job {job_id!r}"
            raise ApiError(404, "OutputNotFound", f"{owner} has no indexed {kind} output {path!r}.")
        return svc, item

    async def one_output(job_id: str, task_id: str | None, kind: str, path: str) -> dict[str, Any]:
        svc, item = await indexed_output(job_id, task_id, kind, path)
        try:
            link = await svc.sas.read_link(item["container"], item["blobName"])
        except SasError as exc:
            raise ApiError(503, "DownloadLinkUnavailable", str(exc)) from exc
        item["downloadUrl"] = link.url
        item["downloadUrlExpiresAt"] = iso(link.expires_at)
        return item

    @router.get(
        "/api/jobs/{job_id}/outputs/{kind}/{path:path}",
        tags=["outputs"],
        responses={200: {"model": models.Output}, **error_statuses(400, 401, 404)},
    )
    async def job_output(job_id: JobId, kind: OutputKind, path: OutputPathParam) -> JSONResponse:
        """One job output, with a read-only `downloadUrl` for its blob."""
        return JSONResponse(await one_output(job_id, None, kind, path))

    @router.get(
        "/api/jobs/{job_id}/tasks/{task_id}/outputs/{kind}/{path:path}",
        tags=["outputs"],
        responses={200: {"model": models.Output}, **error_statuses(400, 401, 404)},
    )
    async def task_output(job_id: JobId, task_id: TaskId, kind: OutputKind, path: OutputPathParam) -> JSONResponse:
        """One task output, with a read-only `downloadUrl` for its blob."""
        return JSONResponse(await one_output(job_id, task_id, kind, path))

    async def output_tail(job_id: str, task_id: str | None, kind: str, path: str, max_bytes: int) -> dict[str, Any]:
        svc, item = await indexed_output(job_id, task_id, kind, path)
        try:
            tail = await read_tail(svc.blobs, item["container"], item["blobName"], max_bytes)
        except TailChangingError as exc:
            raise ApiError(503, "OutputChanging", str(exc), {"Retry-After": "1"}) from exc
        if tail is None:
            raise ApiError(404, "OutputNotFound", f"The blob of {kind} output {path!r} is gone.")
        return {"jobId": job_id, "taskId": task_id, "kind": kind, "path": path, "size": tail.size,
                "start": tail.start, "truncated": tail.truncated, "etag": tail.etag, "text": tail.text}

    @router.get(
        "/api/jobs/{job_id}/tail/{kind}/{path:path}",
        tags=["outputs"],
        responses={200: {"model": models.OutputTail}, **error_statuses(400, 401, 404)},
    )
    async def job_output_tail(job_id: JobId, kind: OutputKind, path: OutputPathParam,
                              max_bytes: TailBytes = DEFAULT_TAIL_BYTES) -> JSONResponse:
        """The last lines of one job output (at most `maxBytes`, default 8 KiB, at most 64 KiB)."""
        return JSONResponse(await output_tail(job_id, None, kind, path, max_bytes))

    @router.get(
        "/api/jobs/{job_id}/tasks/{task_id}/tail/{kind}/{path:path}",
        tags=["outputs"],
        responses={200: {"model": models.OutputTail}, **error_statuses(400, 401, 404)},
    )
    async def task_output_tail(job_id: JobId, task_id: TaskId, kind: OutputKind, path: OutputPathParam,
                               max_bytes: TailBytes = DEFAULT_TAIL_BYTES) -> JSONResponse:
        """The last lines of one task output, e.g. a TaskLog (at most `maxBytes`, default 8 KiB)."""
        return JSONResponse(await output_tail(job_id, task_id, kind, path, max_bytes))

    return router
