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


class StorageAccessError(IndexStoreError):
    """Index storage refused the app's identity or lacks the table: a misconfiguration.

    Retrying cannot help until someone fixes what ``fix`` says (a role assignment, a setting),
    so it is not a ``StorageBusyError``: the webhook answers 500 (Event Grid retries, then
    dead-letters, and ``replay-deadletters`` recovers the events once it is fixed), the trigger
    raises, and ``GET /api/health?detail=true`` shows it.
    """

    def __init__(self, message: str, *, status: int | None, code: str, setting: str, fix: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.setting = setting
        self.fix = fix

    @property
    def cause(self) -> str:
        return "table-not-found" if isinstance(self, TableNotFoundError) else "authorization"


class TableNotFoundError(StorageAccessError):
    """The index table does not exist (deleted, or ``INDEX_TABLE`` names another table)."""
