"""The task listing: tasks with live outputs, each with its exact usage, paged.

Read-only: a task whose outputs are all in deltas not folded yet has no row, so it is listed
from the deltas, in key order among the rows (``JobView.rowless_tasks``). A job spread over
several partitions: each partition's page (each tied to its own ledger), merged in key order (a
task is in one partition), resumed after the last task listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from shared.domain import keys
from shared.domain.conventions import container_name
from shared.domain.ledger import JobView
from shared.domain.rows import Entity, as_int
from shared.store.layouts import LayoutBook
from shared.store.table import TableStore

from .listings import Listing, Page, iso
from .paging import Position, TokenCodec

T = TypeVar("T")


class QueryService(Protocol):
    """What the task listing uses of ``query.QueryService``."""

    store: TableStore
    codec: TokenCodec
    layouts: LayoutBook

    async def tied(self, container: str, read: Callable[[JobView], Awaitable[T]]) -> tuple[JobView, T]: ...

    async def page(self, container: str, listing: Listing, page_size: int, token: str | None) -> tuple[list[Entity], str | None]: ...


async def tasks(query: QueryService, job_id: str, page_size: int, token: str | None) -> Page:
    """Tasks with live outputs, each with its exact usage (its row plus unfolded deltas).

    Read-only: a task whose outputs are all in deltas not folded yet has no row, so it is
    listed from the deltas, in key order among the rows (``JobView.rowless_tasks``).
    A job over several partitions: each partition's page (each tied to its own ledger),
    merged in key order (a task is in one partition), resumed after the last task listed.
    """
    container = container_name(job_id)
    layout = await query.layouts.get(container)
    if not layout.spread:
        items, next_token = await _task_page(query, job_id, container, ("tasks", container), page_size, token)
        return Page([item for _, item in items], next_token)
    scope = ("tasks", container, str(layout.partitions))
    after = query.codec.decode(scope, token).after if token else None
    found = await asyncio.gather(*(
        _task_page(query, job_id, p, ("tasks", p), page_size,
                        query.codec.encode(("tasks", p), Position(0, after)) if after is not None else None)
        for p in layout.all()
    ))
    # A partition with more tasks was read up to its token's key only: past the least such
    # key, another partition's tasks may be missing from this page.
    resumes = [query.codec.decode(("tasks", p), t).after for p, (_, t) in zip(layout.all(), found, strict=True) if t]
    bound = min((r for r in resumes if r is not None), default=None)
    merged = sorted((e for items, _ in found for e in items if bound is None or e[0] <= bound), key=lambda e: e[0])
    until: str | None = bound
    if len(merged) > page_size:
        merged, until = merged[:page_size], merged[page_size - 1][0]
    following = query.codec.encode(scope, Position(0, until)) if until is not None else None
    return Page([item for _, item in merged], following)

async def _task_page(query: QueryService, job_id: str, container: str, scope: tuple[str, ...], page_size: int,
                     token: str | None) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """A page of one partition's tasks, as (task row key, item)."""

    async def read(view: JobView) -> tuple[dict[str, Entity], list[Entity], str | None]:
        pending = view.pending_tasks()
        listing = Listing(
            scope=scope,
            parts=[keys.prefix_range(keys.task_usage_prefix())],
            keep=lambda row: as_int(row.get("Outputs")) > 0 or row["RowKey"] in pending,
        )
        pending_rows, (rows, next_token) = await asyncio.gather(
            query.store.get_rows(container, pending) if pending else _nothing(),
            query.page(container, listing, page_size, token),
        )
        return pending_rows, rows, next_token

    # The page's task rows and the pending ones are read tied to the ledger: a fold between
    # them would count a delta twice (in a row and as pending) or not at all.
    view, (pending_rows, rows, next_token) = await query.tied(container, read)
    rowless = view.rowless_tasks(pending_rows)
    if rowless:
        # Those between the previous page's last key and this page's (or the end).
        after = query.codec.decode(scope, token).after if token else None
        until = rows[-1]["RowKey"] if next_token else None
        listed = {row["RowKey"] for row in rows}
        rows = sorted(
            rows + [row for key, row in rowless.items() if key not in listed and (after is None or key > after)
                    and (until is None or key < until) and view.task_usage(key, None).outputs > 0],
            key=lambda row: row["RowKey"],
        )
        if len(rows) > page_size:
            rows = rows[:page_size]
            next_token = query.codec.encode(scope, Position(0, rows[-1]["RowKey"]))
    items = []
    for row in rows:
        usage = view.task_usage(row["RowKey"], row)
        if usage.outputs <= 0:
            continue
        items.append((row["RowKey"],
            {
                "jobId": job_id,
                "taskId": row.get("TaskId"),
                "outputs": usage.outputs,
                "bytes": usage.bytes,
                "kinds": usage.kinds_wire(),
                "lastIndexedAt": iso(view.task_last_indexed(row["RowKey"], row)),
            }
        ))
    return items, next_token


async def _nothing() -> dict[str, Entity]:
    return {}
