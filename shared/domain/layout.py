"""A job's layout: the Table partitions its index is spread over (pure, no I/O).

A job of one partition keeps everything in the partition named after its container. A hot job
of ``N`` partitions writes each task's outputs, with that task's usage row, its deltas, its
fold rounds, its escrow and its feed, to one of ``N`` partitions chosen by a hash of the task
(``keys.task_slot``): each partition is a whole ledger of its own, so a batch transaction still
holds outputs and the delta that counts them. Job outputs (``J|``), quota overrides and
crossings and the job's own rows stay in the first partition, the container's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import keys


class LayoutError(ValueError):
    """A layout that cannot be set (out of range, or the job already has one)."""


@dataclass(frozen=True, slots=True)
class Layout:
    container: str
    partitions: int = 1

    @property
    def spread(self) -> bool:
        """More than one partition (job-wide limits are then kept by allotments: ``docs/quotas.md``)."""
        return self.partitions > 1

    @property
    def base(self) -> str:
        """The container's own partition: job outputs, quota overrides, the job's rows."""
        return self.container

    def all(self) -> list[str]:
        """Every partition of the job, the container's first."""
        return [keys.partition_of(self.container, i) for i in range(self.partitions)]

    def for_task(self, task_id: str | None) -> str:
        """The partition of a task's outputs (the container's for a job output)."""
        if not task_id or self.partitions <= 1:
            return self.container
        return keys.partition_of(self.container, keys.task_slot(keys.task_key(task_id), self.partitions))

    @classmethod
    def of(cls, container: str, job_row: Mapping[str, Any] | None) -> Layout:
        value = (job_row or {}).get(keys.PARTITIONS)
        value = getattr(value, "value", value)
        return cls(container, int(value) if value else 1)


def check_partitions(partitions: int) -> int:
    if not 1 <= partitions <= keys.MAX_PARTITIONS:
        raise LayoutError(f"partitions must be 1 to {keys.MAX_PARTITIONS}")
    return partitions
