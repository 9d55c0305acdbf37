"""The public home of the Batch File Conventions' names (``shared.conventions.container_name``).

The rules live in ``shared.domain.conventions``; this module keeps the documented import path.
"""

from shared.domain.conventions import (
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
