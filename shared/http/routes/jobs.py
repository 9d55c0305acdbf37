"""Jobs: list, register, summary, tasks, reindex."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared.domain.conventions import container_name
from shared.ingest.reindex import JobNotFoundError

from ..dependencies import DEFAULT_PAGE_SIZE, JobId, PageSize, ServiceDep, Token, next_link, unless_client_leaves
from ..errors import ApiError, error_statuses
from ..schemas import JobList, JobSummary, ReindexResult, TaskList

router = APIRouter()


@router.get("/api/jobs", tags=["jobs"], response_model=JobList, response_model_exclude_unset=True,
            responses=error_statuses(400, 401))
async def list_jobs(request: Request, svc: ServiceDep, maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None) -> JobList:
    """Indexed jobs: job ID (when known), container, counts (as of each job's last fold), last indexed time."""
    page = await unless_client_leaves(request, svc.query.list_jobs(maxpagesize, token))
    return JobList.page(page.items, next_link(request, page))


@router.put("/api/jobs/{job_id}", tags=["jobs"], response_model=JobSummary, responses=error_statuses(400, 401))
async def register_job(job_id: JobId, svc: ServiceDep) -> JobSummary:
    """Registers a job ID, so a hashed container shows its job ID."""
    await svc.indexer.registry.register(container_name(job_id), job_id)
    return JobSummary.model_validate(await svc.query.job_summary(job_id))


@router.get("/api/jobs/{job_id}", tags=["jobs"], response_model=JobSummary, responses=error_statuses(400, 401, 404))
async def job_summary(job_id: JobId, svc: ServiceDep) -> JobSummary:
    """Outputs and bytes per kind, task count, quota limits and usage, rejections."""
    summary = await svc.query.job_summary(job_id)
    if summary is None:
        raise ApiError(404, "JobNotFound", f"No output of job {job_id!r} was ever indexed.")
    return JobSummary.model_validate(summary)


@router.get("/api/jobs/{job_id}/tasks", tags=["tasks"], response_model=TaskList, response_model_exclude_unset=True,
            responses=error_statuses(400, 401))
async def tasks(request: Request, job_id: JobId, svc: ServiceDep,
                maxpagesize: PageSize = DEFAULT_PAGE_SIZE, token: Token = None) -> TaskList:
    """Tasks that have outputs, with counts per kind."""
    page = await svc.query.tasks(job_id, maxpagesize, token)
    return TaskList.page(page.items, next_link(request, page))


@router.post("/api/jobs/{job_id}/reindex", tags=["jobs"], response_model=ReindexResult,
             responses=error_statuses(400, 401, 404, 429, 503))
async def reindex(job_id: JobId, svc: ServiceDep) -> ReindexResult:
    """Rebuilds the job's index from a listing of its container; reports what it added, fixed and removed."""
    container = container_name(job_id)
    try:
        report = await svc.reindexer().reindex(container)
    except JobNotFoundError as exc:
        raise ApiError(404, "JobNotFound", f"Job {job_id!r} has no container and nothing indexed.") from exc
    return ReindexResult(jobId=job_id, container=container, **report.as_dict())
