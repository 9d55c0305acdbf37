"""A job's quota: its limits, overriding them, and the outputs they rejected (SPEC §4)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared.domain.conventions import container_name

from ..dependencies import JobId, ServiceDep, SpreadPageSize, Token, next_link
from ..errors import error_statuses
from ..schemas import OutputList, Quota, QuotaUpdate

router = APIRouter(tags=["quota"])


@router.get("/api/jobs/{job_id}/rejections", response_model=OutputList, response_model_exclude_unset=True,
            responses=error_statuses(400, 401))
async def rejections(request: Request, job_id: JobId, svc: ServiceDep,
                     maxpagesize: SpreadPageSize = None, token: Token = None) -> OutputList:
    """Outputs rejected by quota, with the limit each would have crossed."""
    page = await svc.query.rejections(job_id, maxpagesize, token)
    return OutputList.page(page.items, next_link(request, page))


@router.get("/api/jobs/{job_id}/quota", response_model=Quota, responses=error_statuses(400, 401))
async def get_quota(job_id: JobId, svc: ServiceDep) -> Quota:
    """The job's limits (its overrides, else the settings' defaults); 0 = no limit."""
    return Quota.model_validate((await svc.query.limits(job_id)).as_wire())


@router.put("/api/jobs/{job_id}/quota", response_model=Quota, responses=error_statuses(400, 401, 429, 503))
async def put_quota(job_id: JobId, update: QuotaUpdate, svc: ServiceDep) -> Quota:
    """Overrides the job's limits; raising one admits rejected outputs at once."""
    given = {
        field: value
        for field, value in (
            ("max_outputs", update.maxOutputs),
            ("max_bytes", update.maxBytes),
            ("max_outputs_per_task", update.maxOutputsPerTask),
        )
        if value is not None
    }
    await svc.quotas.set_limits(container_name(job_id), given)
    return Quota.model_validate((await svc.query.limits(job_id)).as_wire())
