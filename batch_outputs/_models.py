"""The index's answers as small read-only models (``OutputIndexClient`` returns these).

Each model is a frozen dataclass built from the API's JSON; ``as_dict()`` gives that JSON back
exactly as the API sent it (the CLI prints it for ``--output json``). A field the API did not
send is ``None`` (or 0 for counts): older or newer servers never break a listing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "DownloadReport",
    "JobItem",
    "JobSummary",
    "OutputChange",
    "OutputChangeBatch",
    "OutputItem",
    "Quota",
    "ReindexResult",
    "TaskItem",
]


def _int(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    return int(value) if isinstance(value, (int, float)) else 0


@dataclass(frozen=True)
class _Model:
    _raw: dict[str, Any] = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The model as the API's JSON (camelCase names), a copy."""
        return dict(self._raw)


@dataclass(frozen=True)
class OutputItem(_Model):
    """One indexed output: a blob saved under the Batch File Conventions."""

    job_id: Optional[str]
    task_id: Optional[str]
    kind: str
    path: str
    blob_name: str
    container: str
    url: str
    size: int
    content_type: Optional[str]
    etag: Optional[str]
    created_at: Optional[str]
    indexed_at: Optional[str]
    #: The quota limit crossed (rejections only).
    reason: Optional[str] = None
    #: Read-only SAS URL of the blob (single outputs only, from ``get_output``).
    download_url: Optional[str] = None
    download_url_expires_at: Optional[str] = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OutputItem:
        """The model of an output item of the API."""
        return cls(
            _raw=raw, job_id=raw.get("jobId"), task_id=raw.get("taskId"), kind=str(raw.get("kind") or ""),
            path=str(raw.get("path") or ""), blob_name=str(raw.get("blobName") or ""), container=str(raw.get("container") or ""),
            url=str(raw.get("url") or ""), size=_int(raw, "size"), content_type=raw.get("contentType"), etag=raw.get("etag"),
            created_at=raw.get("createdAt"), indexed_at=raw.get("indexedAt"), reason=raw.get("reason"),
            download_url=raw.get("downloadUrl"), download_url_expires_at=raw.get("downloadUrlExpiresAt"),
        )


@dataclass(frozen=True)
class JobItem(_Model):
    """A job of ``list_jobs``: its counts and when it was last indexed."""

    job_id: Optional[str]
    container: str
    tasks: int
    outputs: int
    bytes: int
    rejections: int
    last_indexed_at: Optional[str]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobItem:
        """The model of a job item of the API."""
        return cls(_raw=raw, job_id=raw.get("jobId"), container=str(raw.get("container") or ""), tasks=_int(raw, "tasks"),
                   outputs=_int(raw, "outputs"), bytes=_int(raw, "bytes"), rejections=_int(raw, "rejections"),
                   last_indexed_at=raw.get("lastIndexedAt"))


@dataclass(frozen=True)
class Quota(_Model):
    """A job's limits; 0 means no limit."""

    max_outputs: int
    max_bytes: int
    max_outputs_per_task: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Quota:
        """The model of the API's quota."""
        return cls(_raw=raw, max_outputs=_int(raw, "maxOutputs"), max_bytes=_int(raw, "maxBytes"),
                   max_outputs_per_task=_int(raw, "maxOutputsPerTask"))


@dataclass(frozen=True)
class JobSummary(_Model):
    """A job's summary: outputs and bytes per kind, tasks, quota, usage and rejections."""

    job_id: Optional[str]
    container: str
    tasks: int
    #: ``{kind: {"outputs": n, "bytes": b}}``
    kinds: dict[str, dict[str, int]]
    #: ``{"outputs": n, "bytes": b}``
    usage: dict[str, int]
    quota: Quota
    #: ``{"outputs": n, "bytes": b}``
    rejections: dict[str, int]
    last_indexed_at: Optional[str]
    last_reconciled_at: Optional[str]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobSummary:
        """The model of the API's job summary."""
        return cls(_raw=raw, job_id=raw.get("jobId"), container=str(raw.get("container") or ""), tasks=_int(raw, "tasks"),
                   kinds={k: dict(v) for k, v in (raw.get("kinds") or {}).items()}, usage=dict(raw.get("usage") or {}),
                   quota=Quota.from_dict(raw.get("quota") or {}), rejections=dict(raw.get("rejections") or {}),
                   last_indexed_at=raw.get("lastIndexedAt"), last_reconciled_at=raw.get("lastReconciledAt"))


@dataclass(frozen=True)
class TaskItem(_Model):
    """A task that has outputs, with its counts per kind."""

    job_id: Optional[str]
    task_id: Optional[str]
    outputs: int
    bytes: int
    kinds: dict[str, dict[str, int]]
    last_indexed_at: Optional[str]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TaskItem:
        """The model of a task item of the API."""
        return cls(_raw=raw, job_id=raw.get("jobId"), task_id=raw.get("taskId"), outputs=_int(raw, "outputs"),
                   bytes=_int(raw, "bytes"), kinds={k: dict(v) for k, v in (raw.get("kinds") or {}).items()},
                   last_indexed_at=raw.get("lastIndexedAt"))


@dataclass(frozen=True)
class ReindexResult(_Model):
    """What a reindex added, fixed, removed and left unchanged."""

    job_id: Optional[str]
    container: str
    added: int
    fixed: int
    removed: int
    unchanged: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReindexResult:
        """The model of the API's reindex result."""
        return cls(_raw=raw, job_id=raw.get("jobId"), container=str(raw.get("container") or ""), added=_int(raw, "added"),
                   fixed=_int(raw, "fixed"), removed=_int(raw, "removed"), unchanged=_int(raw, "unchanged"))


@dataclass(frozen=True)
class OutputChange(_Model):
    """One change of the feed: ``created``, ``updated``, ``deleted``, ``rejected`` or ``admitted``."""

    change: str
    at: Optional[str]
    output: OutputItem

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OutputChange:
        """The model of a change of the API's feed."""
        return cls(_raw=raw, change=str(raw.get("change") or ""), at=raw.get("at"), output=OutputItem.from_dict(raw.get("output") or {}))


@dataclass(frozen=True)
class OutputChangeBatch:
    """One read of the change feed: the changes, and the cursor to read on from.

    ``more`` is true when the feed holds more changes right now (read again with ``cursor``
    without waiting)."""

    changes: tuple[OutputChange, ...]
    cursor: str
    more: bool


@dataclass(frozen=True)
class DownloadReport:
    """What ``download_outputs`` did, path by path (relative to the destination, ``/``-separated)."""

    #: Files written.
    downloaded: tuple[str, ...]
    #: Files already there with the same size and ETag: nothing transferred.
    skipped: tuple[str, ...]
    #: Outputs whose path would escape the destination (or is not a legal file name here): never written.
    refused: tuple[str, ...]
    #: Outputs that failed, with the reason.
    failed: tuple[tuple[str, str], ...]
    #: Bytes transferred.
    bytes: int

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON (for the CLI's ``--output json``)."""
        return {"downloaded": list(self.downloaded), "skipped": list(self.skipped), "refused": list(self.refused),
                "failed": [{"path": path, "error": error} for path, error in self.failed], "bytes": self.bytes}
