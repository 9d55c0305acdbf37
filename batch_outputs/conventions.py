"""The Azure Batch File Conventions: container names, blob paths, ID and kind rules.

Byte-for-byte the rules of the .NET library ``Microsoft.Azure.Batch.Conventions.Files``:
every output of job ``J`` lives in the container ``container_name(J)``; a job output of kind
``K`` is the blob ``$K/{path}``; a task output is ``{taskId}/$K/{path}``.

This module is the one home of those rules: the indexer (``shared.conventions``) imports them
from here. It imports nothing but the standard library, so the server can use it without the
client's dependencies, and it runs on Python 3.9.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from typing import Optional

_VALID_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SEPARATOR_RUNS = re.compile(r"[-_:]+")
_HASHED_CONTAINER = re.compile(r"^job-[a-z0-9-]{1,15}-[0-9a-f]{40}$")
#: Batch IDs: 1-64 letters, digits, hyphens, underscores; a job made by a job schedule is
#: named ``{scheduleId}:job-{n}``.
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}(?::[jJ][oO][bB]-[0-9]{1,19})?$")
#: A Windows drive (``C:``), which .NET's ``Path.IsPathRooted`` counts as rooted.
_DRIVE = re.compile(r"^[A-Za-z]:")


class ConventionError(ValueError):
    """An ID, kind or path that the conventions do not allow."""


class OutputScope(str, Enum):
    JOB = "job"
    TASK = "task"


@dataclass(frozen=True)
class OutputPath:
    """A blob name decoded by the conventions."""

    scope: OutputScope
    kind: str
    path: str
    task_id: Optional[str] = None

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


def job_id_from_container(name: str) -> Optional[str]:
    """The (lower-cased) job ID of a plain container name; ``None`` when hashed or foreign.

    A hashed name cannot be reversed: its job ID is known only once a client registers it.
    """
    if not is_convention_container(name) or _HASHED_CONTAINER.fullmatch(name):
        return None
    candidate = name[len("job-") :]
    if is_valid_job_id(candidate) and container_name(candidate) == name:
        return candidate
    return None


def kind_prefix(kind: str, task_id: Optional[str] = None) -> str:
    """Where outputs of ``kind`` live, without a trailing slash (``GetOutputStoragePath``):
    ``{taskId}/${kind}`` for a task, ``${kind}`` for the job."""
    if not is_valid_kind(kind):
        raise ConventionError(f"invalid output kind {kind!r}")
    if task_id is None:
        return f"${kind}"
    if not is_valid_task_id(task_id):
        raise ConventionError(f"invalid task ID {task_id!r}")
    return f"{task_id}/${kind}"


def blob_name(kind: str, path: str, task_id: Optional[str] = None) -> str:
    """The blob name of an output, as ``TaskOutputStorage`` / ``JobOutputStorage`` write it."""
    prefix = kind_prefix(kind, task_id)
    if not path:
        raise ConventionError("an output path must not be empty")
    return f"{prefix}/{path}"


def parse_blob_path(name: str) -> Optional[OutputPath]:
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


def is_rooted(path: str) -> bool:
    """A path .NET's ``Path.IsPathRooted`` calls rooted: ``/x``, ``\\x`` or a drive (``C:x``)."""
    return path.startswith(("/", "\\")) or bool(_DRIVE.match(path))


def destination_path(relative_path: str) -> str:
    """The path under its kind of a file saved by its relative path (.NET's ``GetDestinationBlobPath``).

    Backslashes become ``/``; leading ``..`` segments are dropped and the folders below them
    kept, so ``..\\logs\\a.txt`` is saved as ``logs/a.txt`` and ``../stdout.txt`` as
    ``stdout.txt`` (files above the task's working directory); ``.`` segments and empty ones go.
    A rooted path (``/tmp/a``, ``\\a``, ``C:\\a``) is refused: give a destination instead.
    """
    if not relative_path:
        raise ConventionError("an output path must not be empty")
    if is_rooted(relative_path):
        raise ConventionError(f"{relative_path!r} is a rooted path: save it under an explicit destination")
    normalized = posixpath.normpath(relative_path.replace("\\", "/"))
    segments = normalized.split("/")
    while segments and segments[0] in ("..", "."):
        segments.pop(0)
    if not segments:
        raise ConventionError(f"{relative_path!r} names no file")
    return "/".join(segments)


def node_path(node_id: str, path: str) -> str:
    """``path`` in the folder of one compute node, for tasks whose ID Batch shares across nodes."""
    if not node_id or "/" in node_id or "\\" in node_id or not node_id.isprintable() or node_id in (".", ".."):
        raise ConventionError(f"invalid node ID {node_id!r}")
    return f"{node_id}/{path}"
