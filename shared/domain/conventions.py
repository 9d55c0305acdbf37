"""The Azure Batch File Conventions: container names and blob paths.

The rules live once, in the client package (``batch_outputs.conventions``), which compute
nodes install on their own; the indexer uses exactly the same code. That module imports only
the standard library, so the domain still does no I/O.
"""

from __future__ import annotations

from batch_outputs.conventions import (
    ConventionError,
    OutputPath,
    OutputScope,
    blob_name,
    container_name,
    is_convention_container,
    is_valid_job_id,
    is_valid_kind,
    is_valid_task_id,
    job_id_from_container,
    parse_blob_path,
)

__all__ = [
    "ConventionError",
    "OutputPath",
    "OutputScope",
    "blob_name",
    "container_name",
    "is_convention_container",
    "is_valid_job_id",
    "is_valid_kind",
    "is_valid_task_id",
    "job_id_from_container",
    "parse_blob_path",
]
