"""Operator routes, under the API key: replay dead letters, and the detailed health (under the
Functions host ``/api/health`` is an anonymous function of its own, so the detail is here)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query, Request

from shared.ingest.replay import DEFAULT_MAX_BLOBS, MAX_BLOBS

from ..dependencies import ServiceDep
from ..errors import ApiError, error_statuses
from ..schemas import Health, ReplayResult
from .health import detailed_health

router = APIRouter(tags=["admin"])


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "InvalidSince", "since is an ISO 8601 date or time, e.g. 2026-11-23T08:00:00Z.") from exc
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@router.post("/api/admin/replay-deadletters", response_model=ReplayResult, response_model_exclude_unset=True,
             responses=error_statuses(400, 401, 429, 500, 503))
async def replay_dead_letters(
    svc: ServiceDep,
    since: Annotated[str | None, Query(max_length=64, description="only blobs dead-lettered at or after this (ISO 8601)")] = None,
    dry_run: Annotated[bool, Query(alias="dryRun", description="read and count; index and mark nothing")] = False,
    max_blobs: Annotated[int, Query(alias="maxBlobs", ge=1, le=MAX_BLOBS, description="blobs read at most by this call")] = DEFAULT_MAX_BLOBS,
    marker: Annotated[str | None, Query(max_length=4096, description="nextMarker of the previous call")] = None,
) -> ReplayResult:
    """Re-ingests the events Event Grid dead-lettered and marks each blob replayed; per dead-letter reason,
    what was indexed, unchanged or skipped. Idempotent: a second run skips marked blobs, and re-ingesting
    an event changes nothing."""
    report = await svc.replay_dead_letters(since=_since(since), dry_run=dry_run, max_blobs=max_blobs, marker=marker)
    return ReplayResult.model_validate({**report.as_dict(), "container": svc.settings.deadletter_container})


@router.get("/api/admin/health", response_model=Health, response_model_exclude_unset=True, responses=error_statuses(401))
async def admin_health(request: Request) -> Health:
    """The detailed health (as ``GET /api/health?detail=true``)."""
    return await detailed_health(request)
