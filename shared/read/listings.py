"""What a listing is: its key ranges and row checks, its page, and how its times are written."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shared.domain import keys
from shared.domain.rows import Entity

from .paging import Scope


def iso(value: Any) -> str | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def key_range(
    key_prefix: str, kind: str | None, prefix: str, *, task_id: str | None = None, exact: bool = True
) -> tuple[tuple[str, str], Callable[[Entity], bool] | None]:
    """The key range of a listing and, when the keys cannot say it all, a check of each row.

    Keys cannot say it all when the filter is not a key prefix (``exact=False``) or when the
    key prefix is too long to match hashed keys and had to be clipped (``keys.clip_prefix``).
    """
    clipped, was_clipped = keys.clip_prefix(key_prefix)
    if exact and not was_clipped:
        return keys.prefix_range(clipped), None
    task = task_id.lower() if task_id else None

    def keep(row: Entity) -> bool:
        return (
            (kind is None or row.get("Kind") == kind)
            and str(row.get("Path", "")).startswith(prefix)
            and (task is None or str(row.get("TaskId", "")).lower() == task)
        )

    return keys.prefix_range(clipped), keep


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A listing: one or more key ranges read in order, with optional filters."""

    scope: Scope
    parts: Sequence[tuple[str, str]]
    where: Mapping[str, Any] | None = None
    keep: Callable[[Entity], bool] | None = None
    select: Sequence[str] | None = None
