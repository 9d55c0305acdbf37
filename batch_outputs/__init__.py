"""Azure Batch File Conventions for Python task and client code.

The counterpart of the .NET ``Microsoft.Azure.Batch.Conventions.Files`` library: save a task's
or a job's outputs under the conventional blob names, follow a growing log into a block blob
(each flush committed, so Azure announces it), list or fetch outputs by job, task and kind, and
hand Batch's own OutputFiles a destination under the conventions; and ask the index
(``OutputIndexClient``, ``batch_outputs.aio.OutputIndexClient``) the cross-task questions a
container listing cannot answer, and download outputs in bulk.

    from batch_outputs import TaskOutputStorage, TaskOutputKind

    storage = TaskOutputStorage.from_environment()       # AZ_BATCH_JOB_ID / AZ_BATCH_TASK_ID
    storage.save(TaskOutputKind.PREVIEW, "thumb.png")
    with storage.save_tracked(TaskOutputKind.LOG, "../stdout.txt"):
        run_the_work()

    from azure.core.credentials import AzureKeyCredential
    from batch_outputs import OutputIndexClient

    client = OutputIndexClient("https://myapp.azurewebsites.net", AzureKeyCredential(key))
    previews = list(client.list_outputs("render-42", kind="TaskPreview"))   # every task's
    client.download_outputs("render-42", "out", kind="TaskPreview")         # a re-run skips them

The names below load on first use (PEP 562), so ``batch_outputs.conventions`` imports no
Azure SDK: the indexer shares it without the client's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

_EXPORTS = {
    "ConventionError": "conventions",
    "JobOutputKind": "kinds",
    "TaskOutputKind": "kinds",
    "JobOutputStorage": "storage",
    "TaskOutputStorage": "storage",
    "OutputFile": "storage",
    "OutputNotFoundError": "errors",
    "OutputStorageError": "errors",
    "WriterConflictError": "errors",
    "TrackedFile": "tracked",
    "container_client": "clients",
    "OutputIndexClient": "_client",
    "OutputItem": "_models",
    "JobItem": "_models",
    "JobSummary": "_models",
    "TaskItem": "_models",
    "Quota": "_models",
    "ReindexResult": "_models",
    "OutputChange": "_models",
    "OutputChangeBatch": "_models",
    "DownloadReport": "_models",
}

__all__ = [
    "ConventionError",
    "DownloadReport",
    "JobItem",
    "JobOutputKind",
    "JobOutputStorage",
    "JobSummary",
    "OutputChange",
    "OutputChangeBatch",
    "OutputFile",
    "OutputIndexClient",
    "OutputItem",
    "OutputNotFoundError",
    "OutputStorageError",
    "Quota",
    "ReindexResult",
    "TaskItem",
    "TaskOutputKind",
    "TaskOutputStorage",
    "TrackedFile",
    "WriterConflictError",
    "container_client",
]

if TYPE_CHECKING:
    from ._client import OutputIndexClient
    from ._models import (
        DownloadReport,
        JobItem,
        JobSummary,
        OutputChange,
        OutputChangeBatch,
        OutputItem,
        Quota,
        ReindexResult,
        TaskItem,
    )
    from .clients import container_client
    from .conventions import ConventionError
    from .errors import OutputNotFoundError, OutputStorageError, WriterConflictError
    from .kinds import JobOutputKind, TaskOutputKind
    from .storage import JobOutputStorage, OutputFile, TaskOutputStorage
    from .tracked import TrackedFile


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batch_outputs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
