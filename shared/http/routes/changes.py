"""The change feed: ``GET /api/jobs/{jobId}/changes`` (``shared.read.feed``; docs/change-feed.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response

from shared.domain.conventions import container_name, is_valid_task_id
from shared.read.feed import MAX_WAIT_SECONDS, Filter

from ..dependencies import DEFAULT_PAGE_SIZE, Access, JobId, KindFilter, PageSize, ServiceDep
from ..errors import ApiError, error_statuses
from ..schemas import ChangeList

router = APIRouter(tags=["changes"])

Cursor = Annotated[str | None, Query(max_length=8192, description="from the previous answer's cursor (opaque)")]
From = Annotated[Literal["start", "now"], Query(alias="from", description="without a cursor: the oldest change kept, or the current end")]
TaskFilter = Annotated[str | None, Query(alias="taskId", max_length=200, description="only this task's outputs")]
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to hold the request until a change arrives (at most 60)")]


@router.get("/api/jobs/{job_id}/changes", response_model=ChangeList, response_model_exclude_unset=True,
            responses=error_statuses(400, 401, 410))
async def changes(request: Request, job_id: JobId, svc: ServiceDep, cursor: Cursor = None, from_: From = "now",
                  kind: KindFilter = None, task_id: TaskFilter = None, maxpagesize: PageSize = DEFAULT_PAGE_SIZE,
                  wait: Wait = 0) -> Any:
    """The job's changes, in an order that keeps every output's own order: each page answers a
    `cursor` for the next; `wait` long-polls for the next change. An expired cursor is `410`
    `CursorExpired` (list the outputs again, then follow from `now`)."""
    if task_id is not None and not is_valid_task_id(task_id):
        raise ApiError(400, "InvalidTaskId", "A task ID is 1-64 letters, digits, '-' or '_'.")
    assert svc.feed is not None
    container = container_name(job_id)
    layout = await svc.query.layouts.get(container)
    if layout.spread and task_id is None:
        # Every partition's feed, merged (a cursor holds one position per partition).
        answer = await svc.feed.spread.changes(container, job_id, layout.all(), cursor=cursor, start=from_ == "start",
                                               where=Filter(kind, task_id), size=maxpagesize, wait=wait)
    else:
        # A task's changes are all in its partition: that partition's feed alone.
        answer = await svc.feed.changes(container, job_id, cursor=cursor, start=from_ == "start",
                                        where=Filter(kind, task_id), size=maxpagesize, wait=wait,
                                        partition=layout.for_task(task_id) if layout.spread else None)
    link = None
    if answer["more"]:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "code", "from")]
        params.append(("cursor", answer["cursor"]))
        access: Access = request.app.state.access.load()
        path = quote(request.scope["path"], safe="/:@!$&'()*+,;=-._~")
        link = f"{access.public_base_url or ''}{path}?{urlencode(params)}"
    # The answer as JSON, once: waiters woken by one change share their answer (the shape is
    # ChangeList's; a long-poll answering a thousand clients must not build a thousand models).
    rendered: dict[str | None, bytes] = answer.setdefault("rendered", {})
    body = rendered.get(link)
    if body is None:
        wire = {"value": answer["value"], "cursor": answer["cursor"], **({"nextLink": link} if link else {})}
        body = rendered[link] = json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, media_type="application/json")
