"""``GET /api/health``: liveness, anonymous, reveals nothing. With ``detail=true`` (and an API
key) it says whether index storage is reachable and rightly configured, and what to fix."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from shared.service import ServiceHolder

from ..dependencies import require_api_key
from ..errors import error_statuses
from ..schemas import Health

router = APIRouter(tags=["health"])


async def detailed_health(request: Request) -> Health:
    holder: ServiceHolder = request.app.state.services
    return Health.model_validate(await holder.health())


@router.get("/api/health", response_model=Health, response_model_exclude_unset=True, responses=error_statuses(401))
async def health(request: Request, detail: Annotated[bool, Query(description="index storage status; needs an API key")] = False) -> Health:
    """Liveness; anonymous; reveals nothing. ``detail=true``: the index's status, under the API key."""
    if not detail:
        return Health(status="ok")
    await require_api_key(request)
    return await detailed_health(request)
