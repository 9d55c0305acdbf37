"""The API's JSON shapes, as pydantic models: the one wire schema.

Handlers return these models, and the OpenAPI document is generated from them. Routes are
declared with ``response_model_exclude_unset``: a field a handler did not set (``nextLink``
on the last page, ``reason`` outside rejections) is left out, not sent as null. Items of a
large page are built with ``model_construct`` from rows the index already validated: it
skips per-item validation, which would cost more than the query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Model):
    code: str = Field(description="A machine-readable error code, e.g. InvalidJobId.")
    message: str


class ErrorBody(_Model):
    error: ErrorDetail


class OutputItem(_Model):
    jobId: str | None
    taskId: str | None = Field(description="null for job outputs")
    kind: str
    path: str
    blobName: str
    container: str
    url: str
    size: int
    contentType: str | None
    etag: str | None
    createdAt: str | None = Field(description="when the blob event happened (ISO 8601)")
    indexedAt: str | None
    reason: str | None = Field(default=None, description="the limit crossed (rejections only)")
    downloadUrl: str | None = Field(default=None, description="read-only SAS for this blob (single outputs, and listings asked with downloadUrls=true)")
    downloadUrlExpiresAt: str | None = Field(default=None, description="when downloadUrl expires (ISO 8601)")


class Output(OutputItem):
    """One output, with a link to read it."""

    downloadUrl: str = Field(description="read-only SAS URL for this one blob, expiring within SAS_TTL_MINUTES")
    downloadUrlExpiresAt: str = Field(description="when downloadUrl expires (ISO 8601)")


class OutputList(_Model):
    value: list[OutputItem]
    nextLink: str | None = None

    @classmethod
    def page(cls, items: Iterable[dict[str, Any]], next_link: str | None) -> OutputList:
        values = [OutputItem.model_construct(**item) for item in items]
        if next_link:
            return cls.model_construct(value=values, nextLink=next_link)
        return cls.model_construct(value=values)


class KindCount(_Model):
    outputs: int
    bytes: int


class Counts(_Model):
    outputs: int
    bytes: int


class Quota(_Model):
    maxOutputs: int = Field(ge=0, description="0 = no limit")
    maxBytes: int = Field(ge=0, description="0 = no limit")
    maxOutputsPerTask: int = Field(ge=0, description="0 = no limit")


class Lag(_Model):
    """How long events took from their eventTime to indexed, over the last hour."""

    windowSeconds: int = Field(description="the span measured: the last hour (in 5-minute windows, so up to 65 minutes)")
    events: int = Field(description="events measured: each indexed or rejected output change, not duplicates or reindex repairs")
    p50: float | None = Field(description="median seconds (bucketed: at most 25% above the true value, never above max); null when none")
    p95: float | None = Field(description="95th percentile seconds; null when none")
    max: float | None = Field(description="the longest, exact, in seconds; null when none")


class JobSummary(_Model):
    jobId: str | None
    container: str
    tasks: int
    kinds: dict[str, KindCount]
    usage: Counts
    quota: Quota
    rejections: Counts
    lastIndexedAt: str | None
    lastReconciledAt: str | None = Field(default=None, description="when the reconciler last checked the job against its container")
    lag: Lag | None = Field(default=None, description="seconds from eventTime to indexed over the last hour")
    skippedByReason: dict[str, int] = Field(
        default_factory=dict, description="events of the job's container skipped since it was first indexed, by reason")
    handedBack: int = Field(default=0, description="events of the job handed back for redelivery (storage busy or misconfigured)")


class JobItem(_Model):
    jobId: str | None
    container: str
    tasks: int
    outputs: int
    bytes: int
    rejections: int
    lastIndexedAt: str | None


class JobList(_Model):
    value: list[JobItem]
    nextLink: str | None = None

    @classmethod
    def page(cls, items: Iterable[dict[str, Any]], next_link: str | None) -> JobList:
        return cls.model_validate({"value": list(items), **({"nextLink": next_link} if next_link else {})})


class TaskItem(_Model):
    jobId: str
    taskId: str | None
    outputs: int
    bytes: int
    kinds: dict[str, KindCount]
    lastIndexedAt: str | None


class TaskList(_Model):
    value: list[TaskItem]
    nextLink: str | None = None

    @classmethod
    def page(cls, items: Iterable[dict[str, Any]], next_link: str | None) -> TaskList:
        return cls.model_validate({"value": list(items), **({"nextLink": next_link} if next_link else {})})


class ReindexResult(_Model):
    jobId: str
    container: str
    added: int = Field(description="convention blobs the index lacked")
    fixed: int = Field(description="rows whose size, ETag or name differed from the blob")
    removed: int = Field(description="rows whose blob is gone")
    unchanged: int


class OperationProgress(_Model):
    percentComplete: int = Field(description="an estimate, 0-100: blobs listed and rows checked against twice the outputs indexed at start")
    phase: str = Field(description="blobs (the listing against the index), rows (the index against storage), done")
    blobsListed: int
    rowsChecked: int
    outputsIndexedAtStart: int


class OperationState(_Model):
    """A long-running operation's status monitor (Azure REST API guidelines)."""

    id: str
    status: str = Field(description="running, succeeded or failed")
    progress: OperationProgress
    createdDateTime: str
    lastActionDateTime: str
    result: ReindexResult | None = Field(default=None, description="what the reindex changed, once succeeded")
    error: ErrorDetail | None = Field(default=None, description="why it failed, once failed")


class IngestResult(_Model):
    received: int
    indexed: int
    unchanged: int
    rejected: int
    skipped: int
    skippedByReason: dict[str, int]
    validationResponse: str | None = Field(
        default=None, description="the subscription validation code, when a validation event came with the events")


class JobLayout(_Model):
    """How many Table partitions a job's index is spread over (its tasks' outputs, by task)."""

    partitions: int = Field(ge=1, le=16, strict=True, description="1 (the default) to 16; set before the job's first output")


class QuotaUpdate(_Model):
    # strict: JSON's ``false`` (or ``true``, or ``1.0``) is no limit, and must not read as 0 (= none).
    maxOutputs: int | None = Field(default=None, ge=0, le=2**53, strict=True, description="0 = no limit")
    maxBytes: int | None = Field(default=None, ge=0, le=2**53, strict=True, description="0 = no limit")
    maxOutputsPerTask: int | None = Field(default=None, ge=0, le=2**53, strict=True, description="0 = no limit")


class ValidationResponse(_Model):
    validationResponse: str


class IndexStorageError(_Model):
    cause: str = Field(description="authorization or table-not-found")
    code: str = Field(description="the storage error code, e.g. AuthorizationFailure, AuthorizationPermissionMismatch, TableNotFound")
    status: int | None
    message: str
    setting: str = Field(description="the app setting to fix, e.g. INDEX_STORAGE or INDEX_TABLE")
    fix: str


class IndexStorageHealth(_Model):
    status: str = Field(description="ok, misconfigured (see error) or unavailable (unreachable or busy)")
    table: str
    error: IndexStorageError | None = None
    message: str | None = None
    since: str | None = None


class Health(_Model):
    status: str = Field(description="ok; with detail=true the index's status")
    index: IndexStorageHealth | None = Field(default=None, description="detail=true only")
    deadLetterContainer: str | None = Field(default=None, description="detail=true only")


class ReplayBlobs(_Model):
    listed: int
    replayed: int = Field(description="blobs whose events were re-ingested and that are now marked replayedAt (dry run: would be)")
    alreadyReplayed: int = Field(description="blobs a previous replay marked: skipped")
    beforeSince: int = Field(description="blobs dead-lettered before since: skipped")
    unreadable: int = Field(description="blobs that are not a JSON array of events: left as they are")


class ReplayOutcome(_Model):
    events: int
    indexed: int
    unchanged: int = Field(description="already indexed, or overtaken by a newer event of the same blob")
    rejected: int
    skipped: int
    skippedByReason: dict[str, int]


class ReplayResult(_Model):
    dryRun: bool
    container: str
    blobs: ReplayBlobs
    events: int
    byReason: dict[str, ReplayOutcome] = Field(description="per deadLetterReason, what its events did")
    nextMarker: str | None = Field(default=None, description="more blobs to look at: call again with marker=nextMarker")


class OutputTail(_Model):
    """The end of one output (e.g. a TaskLog), cut to whole lines."""

    jobId: str
    taskId: str | None
    kind: str
    path: str
    size: int = Field(description="the blob's size in bytes when read")
    start: int = Field(description="byte offset of the first character of text")
    truncated: bool = Field(description="true when text starts after the blob's beginning")
    etag: str | None
    text: str = Field(description="UTF-8 text; undecodable bytes are replaced")


class ChangeOutput(_Model):
    """An output as listings show it (no ``downloadUrl``); a deleted one keeps what identified it."""

    jobId: str | None
    taskId: str | None = Field(description="null for job outputs")
    kind: str
    path: str
    blobName: str
    container: str
    url: str
    size: int = Field(description="the blob's size (a deleted output: its last size)")
    contentType: str | None
    etag: str | None
    createdAt: str | None = Field(description="when the blob event happened (ISO 8601); null for a delete")
    indexedAt: str | None
    reason: str | None = Field(default=None, description="the limit crossed (rejected changes only)")


class Change(_Model):
    change: Literal["created", "updated", "deleted", "rejected", "admitted"] = Field(
        description="created: now listed; updated: listed, overwritten; deleted: no longer listed; "
                    "rejected: refused by a quota (not listed, under rejections); admitted: a rejected output now listed")
    at: str | None = Field(description="when the change was indexed (ISO 8601)")
    output: ChangeOutput


class ChangeList(_Model):
    value: list[Change]
    cursor: str = Field(description="opaque: send it back as ?cursor= for the changes after these")
    nextLink: str | None = Field(default=None, description="more changes are ready now (absent: wait, or poll with ?wait=)")

    @classmethod
    def page(cls, items: Iterable[dict[str, Any]], cursor: str, next_link: str | None) -> ChangeList:
        changes = [Change.model_construct(change=i["change"], at=i["at"],
                                          output=ChangeOutput.model_construct(**i["output"])) for i in items]
        if next_link is None:
            return cls.model_construct(value=changes, cursor=cursor)
        return cls.model_construct(value=changes, cursor=cursor, nextLink=next_link)
