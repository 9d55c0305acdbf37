"""Output kinds, as the .NET ``TaskOutputKind`` / ``JobOutputKind`` define them.

A kind is plain text (case-sensitive); the predefined ones are constants here and any other
non-empty text without ``/`` is a custom kind (``TaskOutputKind.custom("Metrics")``).
"""

from __future__ import annotations

from .conventions import ConventionError, is_valid_kind


def _custom(name: str) -> str:
    if not is_valid_kind(name):
        raise ConventionError(f"invalid output kind {name!r}: non-empty printable text without '/' or '\\'")
    return name


class TaskOutputKind:
    OUTPUT = "TaskOutput"
    PREVIEW = "TaskPreview"
    LOG = "TaskLog"
    INTERMEDIATE = "TaskIntermediate"

    @staticmethod
    def custom(name: str) -> str:
        return _custom(name)


class JobOutputKind:
    OUTPUT = "JobOutput"
    PREVIEW = "JobPreview"

    @staticmethod
    def custom(name: str) -> str:
        return _custom(name)
