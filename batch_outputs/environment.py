"""What Batch tells a task about itself through environment variables, and what follows.

Batch sets ``AZ_BATCH_JOB_ID``, ``AZ_BATCH_TASK_ID`` and ``AZ_BATCH_NODE_ID`` for every task.
Some tasks share one task ID across nodes: the job preparation and job release tasks
(``jobpreparation`` and ``jobrelease`` unless the job names them otherwise) run once on every
node of the job, and the primary and subtasks of a multi-instance task all carry the task's ID.
Saved under ``{taskId}/${kind}/{path}``, their files would overwrite each other, so by default
they save one file per node: ``{taskId}/${kind}/{AZ_BATCH_NODE_ID}/{path}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional

JOB_ID_VARIABLE = "AZ_BATCH_JOB_ID"
TASK_ID_VARIABLE = "AZ_BATCH_TASK_ID"
NODE_ID_VARIABLE = "AZ_BATCH_NODE_ID"
STORAGE_VARIABLE = "BATCH_OUTPUTS_STORAGE"
#: The default IDs Batch gives a job's preparation and release tasks.
SHARED_TASK_IDS = frozenset({"jobpreparation", "jobrelease"})
#: Set by Batch for the primary and every subtask of a multi-instance task, and for no other.
MULTI_INSTANCE_VARIABLES = ("AZ_BATCH_IS_CURRENT_NODE_MASTER", "AZ_BATCH_HOST_LIST", "AZ_BATCH_MASTER_NODE")


class NodeIdMissingError(LookupError):
    """One file per node was asked for, and no node ID is known."""


def _environ(environ: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def is_multi_instance(environ: Optional[Mapping[str, str]] = None) -> bool:
    values = _environ(environ)
    return any(values.get(name) for name in MULTI_INSTANCE_VARIABLES)


def shares_task_id(task_id: Optional[str], environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when Batch runs ``task_id`` on several nodes at once under the same ID: the job
    preparation or release task, or a multi-instance task."""
    if task_id is None:
        return False
    return task_id in SHARED_TASK_IDS or is_multi_instance(environ)


def node_for(task_id: Optional[str], per_node: Optional[bool], environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The node folder a task's saves go into, or ``None`` for the plain convention path.

    ``per_node`` forces the choice (``True``/``False``); ``None`` decides from the environment
    (``shares_task_id``). One file per node needs ``AZ_BATCH_NODE_ID``.
    """
    wanted = shares_task_id(task_id, environ) if per_node is None else per_node
    if not wanted or task_id is None:
        return None
    node_id = _environ(environ).get(NODE_ID_VARIABLE, "")
    if not node_id:
        raise NodeIdMissingError(f"one file per node needs {NODE_ID_VARIABLE} (set by Batch on every node)")
    return node_id
