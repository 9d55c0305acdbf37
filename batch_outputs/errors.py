"""The client's errors. ``ConventionError`` (an invalid ID, kind or path) is in ``conventions``."""

from __future__ import annotations


class OutputStorageError(Exception):
    """An output could not be saved, listed or read."""


class OutputNotFoundError(OutputStorageError, LookupError):
    """No output of that kind and path."""


class WriterConflictError(OutputStorageError):
    """Another writer holds the blob a tracked save would write: it is left untouched."""


class ContainerNotFoundError(OutputStorageError):
    """The job's output container does not exist: the job was not prepared."""
