"""Routes for one output by its ID (job, task, kind, path), each with a read-only ``downloadUrl``.

``{path}`` is the rest of the URL, percent-decoded: an output path may hold ``/`` (nested
folders), and ``%``, ``#``, ``?`` or spaces arrive percent-encoded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from . import models
from .api import ApiError, JobId, TaskId, check_job, check_kind, check_task
from .api import _errors as error_statuses
from .query import iso
from .sas import SasError
from .service import Service

OutputKind = Annotated[str, Path(description="output kind, e.g. TaskPreview", max_length=256)]
OutputPathParam = Annotated[str, Path(description="the output's path within its kind (may hold '/')", max_length=1024)]


def output_router(service: Callable[[], Awaitable[Service]]) -> APIRouter:
    router = APIRouter()

    async def one_output(job_id: str, task_id: str | None, kind: str, path: str) -> dict[str, Any]:
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

    return router
