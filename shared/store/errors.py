"""The index store's own errors: what the Table adapter maps the SDK's exceptions to.

The core catches these, never an SDK exception: a failed condition (``ConflictError``)
means re-read and re-plan; storage that stays busy after the retry budget
(``StorageBusyError``) means hand the events back.
"""

from __future__ import annotations


class IndexStoreError(Exception):
    """Base of the index store's errors."""


class ConflictError(IndexStoreError):
    """An ETag or existence condition failed: someone changed the rows first."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InvalidEntityError(IndexStoreError):
    """Table storage refused a row as invalid (400): retrying the same row can never succeed."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class StorageBusyError(IndexStoreError):
    """Storage stayed throttled or failing after the retry budget was spent."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StorageUnavailableError(StorageBusyError):
    """The connection failed (dropped, refused, timed out) after the retry budget."""
