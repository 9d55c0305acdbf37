"""Quota arithmetic (pure): effective limits and the admission decision (SPEC §4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

#: Where a job's limit overrides live on its counter rows (absent = the settings' default).
OVERRIDE_PROPERTIES = {
    "max_outputs": "MaxOutputs",
    "max_bytes": "MaxBytes",
    "max_outputs_per_task": "MaxOutputsPerTask",
}


@dataclass(frozen=True)
class QuotaDefaults:
    """Default per-job limits from the settings; ``0`` means no limit."""

    max_outputs_per_job: int = 0
    max_bytes_per_job: int = 0
    max_outputs_per_task: int = 0


class RejectReason(str, Enum):
    """The limit an output would have crossed; values are the API's quota field names."""

    MAX_OUTPUTS = "maxOutputs"
    MAX_BYTES = "maxBytes"
    MAX_OUTPUTS_PER_TASK = "maxOutputsPerTask"


@dataclass(frozen=True, slots=True)
class Limits:
    """A job's limits; ``0`` means no limit."""

    max_outputs: int = 0
    max_bytes: int = 0
    max_outputs_per_task: int = 0

    @property
    def limits_job(self) -> bool:
        """Job-wide limits need one consistent view of the job's usage to be exact."""
        return self.max_outputs > 0 or self.max_bytes > 0

    def as_wire(self) -> dict[str, int]:
        """The limits under the API's field names (the ``RejectReason`` values)."""
        return {
            RejectReason.MAX_OUTPUTS.value: self.max_outputs,
            RejectReason.MAX_BYTES.value: self.max_bytes,
            RejectReason.MAX_OUTPUTS_PER_TASK.value: self.max_outputs_per_task,
        }

    @classmethod
    def effective(cls, row: Mapping[str, Any] | None, defaults: QuotaDefaults) -> Limits:
        """A job's limits: its overrides where set on ``row``, the settings' defaults elsewhere."""
        row = row or {}

        def pick(field: str, default: int) -> int:
            value = row.get(OVERRIDE_PROPERTIES[field])
            value = getattr(value, "value", value)
            return int(value) if value is not None else default

        return cls(
            max_outputs=pick("max_outputs", defaults.max_outputs_per_job),
            max_bytes=pick("max_bytes", defaults.max_bytes_per_job),
            max_outputs_per_task=pick("max_outputs_per_task", defaults.max_outputs_per_task),
        )


def admission(
    limits: Limits,
    *,
    job_outputs: int,
    job_bytes: int,
    task_outputs: int | None,
    size: int,
) -> RejectReason | None:
    """Whether one more output of ``size`` bytes fits; the crossed limit if it does not.

    ``job_*`` and ``task_outputs`` are the usage *without* this blob (an overwrite has had
    its old version taken out); ``task_outputs`` is ``None`` for a job output.
    """
    if limits.max_outputs and job_outputs + 1 > limits.max_outputs:
        return RejectReason.MAX_OUTPUTS
    if limits.max_bytes and job_bytes + size > limits.max_bytes:
        return RejectReason.MAX_BYTES
    if task_outputs is not None and limits.max_outputs_per_task and task_outputs + 1 > limits.max_outputs_per_task:
        return RejectReason.MAX_OUTPUTS_PER_TASK
    return None


@dataclass(frozen=True, slots=True)
class QuotaCrossing:
    """A job crossed a limit for the first time: what ``Batch.Outputs.QuotaExceeded`` says.

    ``event_id`` is fixed when the crossing is first recorded, so every attempt to publish
    it carries the same CloudEvent ID.
    """

    container: str
    reason: RejectReason
    limits: Limits
    event_id: str
    detected_at: datetime
    blob_name: str | None = None
