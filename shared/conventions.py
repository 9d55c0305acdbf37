"""The public home of the Batch File Conventions' names (``shared.conventions.container_name``).

The rules live in the client package, ``batch_outputs.conventions`` (byte for byte the .NET
library's); this module keeps the documented import path for the server and its users.
"""

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
