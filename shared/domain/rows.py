"""What an index row holds: output states, usage counters, and the output entity's properties.

Each property name of a stored row is written here once (see ``shared.domain.keys`` for the
row keys). Values are plain Python; ``Int64`` marks integers Table storage must store as
64-bit (sizes, byte counts), which the store adapter translates for the SDK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import keys
from .conventions import OutputPath, OutputScope
from .events import BlobAction, BlobEvent
from .quotas import RejectReason

LIVE, DELETED, REJECTED = "live", "deleted", "rejected"
#: What planning needs of an existing output row (its ETag comes with it).
ROW_STATE = ("RowKey", "State", "Seq", "Size", "Kind")
#: The output properties a listing returns.
OUTPUT_FIELDS = (
    "RowKey", "TaskId", "Kind", "Path", "BlobName", "Size", "ContentType",
    "BlobETag", "EventTime", "IndexedAt", "State", "Reason", "Seq",
)

Entity = dict[str, Any]

#: Table storage holds at most 32K UTF-16 units (64 KiB) in one string property; a longer text
#: (JSON, ASCII: one unit a character) is split over properties of at most this many characters.
TEXT_PART_CHARS = 30_000
#: A usage row's outputs and bytes per kind (JSON): ``Kinds``, then ``Kinds1``, ``Kinds2``... when long.
KINDS = "Kinds"


def split_text(name: str, text: str) -> Entity:
    """``text`` as properties ``name``, ``name1``, ``name2``... of at most ``TEXT_PART_CHARS``."""
    pieces = [text[start : start + TEXT_PART_CHARS] for start in range(0, len(text), TEXT_PART_CHARS)] or [""]
    return {name if index == 0 else f"{name}{index}": piece for index, piece in enumerate(pieces)}


def joined_text(row: Mapping[str, Any], name: str) -> str:
    """The text ``split_text`` wrote under ``name`` (``""`` when absent)."""
    pieces = [row.get(name) or ""]
    while f"{name}{len(pieces)}" in row:
        pieces.append(row[f"{name}{len(pieces)}"])
    return "".join(pieces)


def is_text_part(name: str, prop: str) -> bool:
    """Whether ``prop`` is one of the properties ``split_text`` writes for ``name``."""
    return prop == name or (prop.startswith(name) and prop[len(name):].isdigit())


class Int64(int):
    """An integer stored as Edm.Int64 (a plain ``int`` is stored as Edm.Int32)."""


def as_int(value: Any) -> int:
    """A stored integer, whichever wrapper it was read back in (absent = 0)."""
    value = getattr(value, "value", value)
    return int(value) if value is not None else 0


@dataclass(frozen=True, slots=True)
class Change:
    """The newest known event of one blob (or a re-admission of a rejected output)."""

    container: str
    row_key: str
    output: OutputPath
    action: BlobAction
    sequencer: str
    event_time: datetime
    size: int = 0
    url: str | None = None
    content_type: str | None = None
    etag: str | None = None
    blob_type: str | None = None
    readmit: bool = False
    #: Whether its lag (event time to indexed) is measured: not for a re-admission or a
    #: reindex, whose event times are the blob's, not a delivery's.
    timed: bool = True
    #: A repair from storage: the row's sequencer (as read before storage was listed) it
    #: replaces whatever the order; see ``BlobEvent.supersedes``.
    supersedes: str | None = None

    @property
    def task_row(self) -> str | None:
        return keys.task_usage_key(self.output.task_id) if self.output.task_id else None

    @classmethod
    def from_event(cls, event: BlobEvent, output: OutputPath, *, timed: bool = True) -> Change:
        return cls(
            container=event.container,
            row_key=keys.output_key(output.kind, output.path, output.task_id),
            output=output,
            action=event.action,
            sequencer=event.sequencer,
            event_time=event.event_time,
            size=event.size or 0,
            url=event.url,
            content_type=event.content_type,
            etag=event.etag,
            blob_type=event.blob_type,
            timed=timed,
            supersedes=event.supersedes,
        )

    @classmethod
    def from_row(cls, container: str, row: Mapping[str, Any], *, now: datetime, readmit: bool = False) -> Change:
        """The change a stored output row came from (for re-admission)."""
        task_id = row.get("TaskId") or None
        output = OutputPath(OutputScope.TASK if task_id else OutputScope.JOB, row["Kind"], row["Path"], task_id=task_id)
        return cls(
            container=container,
            row_key=row["RowKey"],
            output=output,
            action=BlobAction.CREATED,
            sequencer=row["Seq"],
            event_time=row.get("EventTime") or now,
            size=as_int(row.get("Size")),
            url=row.get("Url"),
            content_type=row.get("ContentType"),
            etag=row.get("BlobETag"),
            blob_type=row.get("BlobType"),
            readmit=readmit,
            timed=False,
        )


def output_entity(change: Change, state: str, reason: RejectReason | None, now: datetime) -> Entity:
    """The stored row of one output in ``state``."""
    out = change.output
    entity: Entity = {
        "RowKey": change.row_key,
        "State": state,
        "Seq": change.sequencer,
        "Scope": out.scope.value,
        "TaskId": out.task_id or "",
        "Kind": out.kind,
        "Path": out.path,
        "BlobName": out.blob_name,
        "Size": Int64(change.size),
        "EventTime": change.event_time,
        "IndexedAt": now,
    }
    for name, value in (
        ("Url", change.url),
        ("ContentType", change.content_type),
        ("BlobETag", change.etag),
        ("BlobType", change.blob_type),
        ("Reason", reason.value if reason else None),
    ):
        if value is not None:
            entity[name] = value
    return entity


@dataclass(slots=True)
class Usage:
    """Counts held by a counter shard or a task row (or their sum)."""

    outputs: int = 0
    bytes: int = 0
    rejected_outputs: int = 0
    rejected_bytes: int = 0
    tasks: int = 0
    kinds: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Usage:
        if not row:
            return cls()
        return cls(
            outputs=as_int(row.get("Outputs")),
            bytes=as_int(row.get("Bytes")),
            rejected_outputs=as_int(row.get("RejOutputs")),
            rejected_bytes=as_int(row.get("RejBytes")),
            tasks=as_int(row.get("Tasks")),
            kinds={k: list(v) for k, v in json.loads(joined_text(row, KINDS) or "{}").items()},
        )

    @staticmethod
    def kinds_of(row: Mapping[str, Any] | None) -> list[str]:
        """The kinds a task row counts outputs of, sorted."""
        return sorted(json.loads(joined_text(row or {}, KINDS) or "{}"))

    def kinds_wire(self) -> dict[str, dict[str, int]]:
        """Outputs and bytes per kind, sorted by kind, under the API's field names."""
        return {k: {"outputs": n, "bytes": b} for k, (n, b) in sorted(self.kinds.items())}

    def add_live(self, kind: str, size: int, sign: int) -> None:
        self.outputs += sign
        self.bytes += sign * size
        counts = self.kinds.setdefault(kind, [0, 0])
        counts[0] += sign
        counts[1] += sign * size
        if counts == [0, 0]:
            del self.kinds[kind]

    def add_rejected(self, size: int, sign: int) -> None:
        self.rejected_outputs += sign
        self.rejected_bytes += sign * size

    def count(self, state: str | None, kind: str, size: int, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) one output in ``state``; deletes count nothing."""
        if state == LIVE:
            self.add_live(kind, size, sign)
        elif state == REJECTED:
            self.add_rejected(size, sign)

    def plus(self, other: Usage) -> Usage:
        total = Usage(
            self.outputs + other.outputs,
            self.bytes + other.bytes,
            self.rejected_outputs + other.rejected_outputs,
            self.rejected_bytes + other.rejected_bytes,
            self.tasks + other.tasks,
            {k: list(v) for k, v in self.kinds.items()},
        )
        for kind, (n, b) in other.kinds.items():
            counts = total.kinds.setdefault(kind, [0, 0])
            counts[0] += n
            counts[1] += b
            if counts == [0, 0]:
                del total.kinds[kind]
        return total

    def properties(self) -> Entity:
        """The row's usage properties; a row rewritten from an old one drops the old one's
        ``Kinds`` parts first (see ``is_text_part``): a shorter text writes fewer."""
        return {
            "Outputs": self.outputs,
            "Bytes": Int64(self.bytes),
            "RejOutputs": self.rejected_outputs,
            "RejBytes": Int64(self.rejected_bytes),
            "Tasks": self.tasks,
            **split_text(KINDS, json.dumps(self.kinds, separators=(",", ":"), sort_keys=True)),
        }
