"""Job maintenance routes: ``POST /api/jobs/{jobId}/reindex``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from . import models
from .api import ApiError, JobId, check_job
from .api import _errors as error_statuses
from .conventions import container_name
from .reindex import JobNotFoundError, Reindexer
from .service import Service


def job_router(service: Callable[[], Awaitable[Service]]) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/api/jobs/{job_id}/reindex",
        tags=["jobs"],
        responses={200: {"model": models.ReindexResult}, **error_statuses(400, 401, 404, 429, 503)},
    )
    async def reindex(job_id: JobId) -> JSONResponse:
        """Rebuilds the job's index from a listing of its container; reports what it added, fixed and removed."""
        check_job(job_id)
        svc = await service()
        container = container_name(job_id)
        try:
            report = await Reindexer(svc.store, svc.indexer, svc.blobs).reindex(container)
        except JobNotFoundError as exc:
            raise ApiError(404, "JobNotFound", f"Job {job_id!r} has no container and nothing indexed.") from exc
        return JSONResponse({"jobId": job_id, "container": container, **report.as_dict()})

    return router
