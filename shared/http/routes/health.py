"""``GET /api/health``: liveness, anonymous, reveals nothing. With ``detail=true`` (and an admin
key or token) it says whether index storage is reachable and rightly configured, and what to fix."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from shared.service import ServiceHolder

from ..dependencies import require_admin
from ..errors import error_statuses
from ..schemas import Health

router = APIRouter(tags=["health"])


async def detailed_health(request: Request) -> Health:
    holder: ServiceHolder = request.app.state.services
    return Health.model_validate(await holder.health())


@router.get("/api/health", response_model=Health, response_model_exclude_unset=True, responses=error_statuses(401))
async def health(request: Request, detail: Annotated[bool, Query(description="index storage status; needs an admin key or token")] = False) -> Health:
    """Liveness; anonymous; reveals nothing. ``detail=true``: the index's status, an admin's (API_KEYS or Outputs.Admin)."""
    if not detail:
        return Health(status="ok")
    await require_admin(request)
    return await detailed_health(request)
