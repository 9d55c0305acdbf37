"""Azure Batch File Conventions for Python task and client code.

The counterpart of the .NET ``Microsoft.Azure.Batch.Conventions.Files`` library: save a task's
or a job's outputs under the conventional blob names, follow a growing log into a block blob
(each flush committed, so Azure announces it), and list or fetch outputs by job, task and kind.

    from batch_outputs import TaskOutputStorage, TaskOutputKind

    storage = TaskOutputStorage.from_environment()       # AZ_BATCH_JOB_ID / AZ_BATCH_TASK_ID
    storage.save(TaskOutputKind.PREVIEW, "thumb.png")
    with storage.save_tracked(TaskOutputKind.LOG, "../stdout.txt"):
        run_the_work()
"""

from __future__ import annotations

from .kinds import JobOutputKind, TaskOutputKind
from .storage import (
    JobOutputStorage,
    OutputFile,
    OutputNotFoundError,
    OutputStorageError,
    TaskOutputStorage,
    TrackedFile,
    container_client,
)

__all__ = [
    "JobOutputKind",
    "JobOutputStorage",
    "OutputFile",
    "OutputNotFoundError",
    "OutputStorageError",
    "TaskOutputKind",
    "TaskOutputStorage",
    "TrackedFile",
    "container_client",
]
