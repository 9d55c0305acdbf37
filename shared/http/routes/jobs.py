"""Jobs: list, register, summary, tasks, reindex."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.domain.conventions import container_name
from shared.domain.layout import LayoutError
from shared.ingest.layouts import LayoutFixedError
from shared.ingest.operations import OperationStatus
from shared.ingest.reindex import JobNotFoundError

from ..dependencies import DEFAULT_PAGE_SIZE, Access, JobId, PageSize, ServiceDep, Token, next_link, unless_client_leaves
from ..errors import ApiError, error_statuses
from ..schemas import JobLayout, JobList, JobSummary, OperationState, ReindexResult, TaskList

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


@router.put("/api/jobs/{job_id}/layout", tags=["jobs"], response_model=JobLayout, responses=error_statuses(400, 401, 409))
async def put_layout(job_id: JobId, layout: JobLayout, svc: ServiceDep) -> JobLayout:
    """Registers a job with its index spread over ``partitions`` Table partitions (by task), for a
    job whose outputs arrive faster than one partition takes. Only before anything registers the
    job (its first output, a quota, ``PUT /api/jobs/{jobId}``): a layout never changes (409)."""
    try:
        chosen = await svc.layouts.set(container_name(job_id), job_id, layout.partitions)
    except LayoutFixedError as exc:
        raise ApiError(409, "LayoutFixed", str(exc)) from exc
    except LayoutError as exc:
        raise ApiError(400, "InvalidRequest", str(exc)) from exc
    return JobLayout(partitions=chosen.partitions)


@router.get("/api/jobs/{job_id}/layout", tags=["jobs"], response_model=JobLayout, responses=error_statuses(400, 401))
async def get_layout(job_id: JobId, svc: ServiceDep) -> JobLayout:
    """How many partitions the job's index is spread over (1 for a job never given a layout)."""
    return JobLayout(partitions=(await svc.layouts.get(container_name(job_id))).partitions)


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
             responses={**error_statuses(400, 401, 404, 429, 503),
                        202: {"model": OperationState, "description": "still running: poll Operation-Location"}})
async def reindex(request: Request, job_id: JobId, svc: ServiceDep) -> ReindexResult | JSONResponse:
    """Rebuilds the job's index from a listing of its container; reports what it added, fixed and removed.
    A reindex that cannot finish within ``REINDEX_REQUEST_SECONDS`` answers ``202 Accepted`` with
    ``Operation-Location: /api/operations/{id}`` and goes on as a long-running operation."""
    container = container_name(job_id)
    try:
        operation = await svc.operations.start(job_id, container)
    except JobNotFoundError as exc:
        raise ApiError(404, "JobNotFound", f"Job {job_id!r} has no container and nothing indexed.") from exc
    operation = await svc.operations.run_within(operation, svc.settings.reconcile.reindex_request_seconds)
    if operation.status is OperationStatus.SUCCEEDED:
        return ReindexResult(**operation.result())
    access: Access = request.app.state.access.load()
    location = f"{access.public_base_url or ''}/api/operations/{operation.id}"
    return JSONResponse(OperationState.model_validate(operation.as_wire()).model_dump(exclude_none=True), status_code=202,
                        headers={"Operation-Location": location, "Retry-After": "5"})
