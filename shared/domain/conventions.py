"""The Azure Batch File Conventions: container names and blob paths.

Byte-for-byte the rules of the .NET library ``Microsoft.Azure.Batch.Conventions.Files``:
every output of job ``J`` lives in the container ``container_name(J)``; a job output of kind
``K`` is the blob ``$K/{path}``; a task output is ``{taskId}/$K/{path}``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

_VALID_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SEPARATOR_RUNS = re.compile(r"[-_:]+")
_HASHED_CONTAINER = re.compile(r"^job-[a-z0-9-]{1,15}-[0-9a-f]{40}$")
#: Batch IDs: 1-64 letters, digits, hyphens, underscores; a job made by a job schedule is
#: named ``{scheduleId}:job-{n}``.
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}(?::[jJ][oO][bB]-[0-9]{1,19})?$")


class ConventionError(ValueError):
    """An ID or kind that the conventions do not allow."""


class OutputScope(str, Enum):
    JOB = "job"
    TASK = "task"


@dataclass(frozen=True, slots=True)
class OutputPath:
    """A blob name decoded by the conventions."""

    scope: OutputScope
    kind: str
    path: str
    task_id: str | None = None

    @property
    def blob_name(self) -> str:
        return blob_name(self.kind, self.path, self.task_id)


def is_valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.fullmatch(job_id))


def is_valid_task_id(task_id: str) -> bool:
    return bool(_TASK_ID.fullmatch(task_id))


def is_valid_kind(kind: str) -> bool:
    """A kind is any non-empty text that fits in one path segment."""
    return bool(kind) and "/" not in kind and "\\" not in kind and kind.isprintable()


def _is_valid_container(name: str) -> bool:
    return 3 <= len(name) <= 63 and bool(_VALID_CONTAINER.fullmatch(name))


def container_name(job_id: str) -> str:
    """The container holding every output of ``job_id`` (SPEC §2, the .NET library's rule)."""
    lowered = job_id.lower()
    plain = "job-" + lowered
    if _is_valid_container(plain):
        return plain
    digest = hashlib.sha1(lowered.encode("utf-8")).hexdigest()
    safe = _SEPARATOR_RUNS.sub("-", lowered).strip("-") or "job"
    if len(safe) > 15:
        safe = safe[:15].rstrip("-")
    return f"job-{safe}-{digest}"


def is_convention_container(name: str) -> bool:
    """True for a name ``container_name`` can produce (plain or hashed)."""
    return name.startswith("job-") and _is_valid_container(name)


def job_id_from_container(name: str) -> str | None:
    """The (lower-cased) job ID of a plain container name; ``None`` when hashed or foreign.

    A hashed name cannot be reversed: its job ID is known only once a client registers it.
    """
    if not is_convention_container(name) or _HASHED_CONTAINER.fullmatch(name):
        return None
    candidate = name[len("job-") :]
    if is_valid_job_id(candidate) and container_name(candidate) == name:
        return candidate
    return None


def blob_name(kind: str, path: str, task_id: str | None = None) -> str:
    """The blob name of an output, as ``TaskOutputStorage`` / ``JobOutputStorage`` write it."""
    if not is_valid_kind(kind):
        raise ConventionError(f"invalid output kind {kind!r}")
    if not path:
        raise ConventionError("an output path must not be empty")
    if task_id is None:
        return f"${kind}/{path}"
    if not is_valid_task_id(task_id):
        raise ConventionError(f"invalid task ID {task_id!r}")
    return f"{task_id}/${kind}/{path}"


def parse_blob_path(name: str) -> OutputPath | None:
    """Decode a blob name into a job or task output; ``None`` when it follows no convention."""
    first, sep, rest = name.partition("/")
    if not sep:
        return None
    if first.startswith("$"):
        kind, path = first[1:], rest
        if is_valid_kind(kind) and path:
            return OutputPath(OutputScope.JOB, kind, path)
        return None
    if not is_valid_task_id(first):
        return None
    second, sep, path = rest.partition("/")
    if not sep or not second.startswith("$"):
        return None
    kind = second[1:]
    if is_valid_kind(kind) and path:
        return OutputPath(OutputScope.TASK, kind, path, task_id=first)
    return None
