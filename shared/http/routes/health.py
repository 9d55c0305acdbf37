"""``GET /api/health``: liveness, anonymous, reveals nothing."""

from __future__ import annotations

from fastapi import APIRouter

from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/api/health", response_model=Health)
async def health() -> Health:
    """Liveness; anonymous; reveals nothing."""
    return Health(status="ok")
