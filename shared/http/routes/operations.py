"""Long-running operations: where a reindex answered ``202`` stands (``Operation-Location``)."""

from __future__ import annotations

from fastapi import APIRouter

from shared.ingest.operations import is_operation_id

from ..dependencies import ServiceDep
from ..errors import ApiError, error_statuses
from ..schemas import OperationState

router = APIRouter(tags=["admin"])


@router.get("/api/operations/{operation_id}", response_model=OperationState, response_model_exclude_none=True,
            responses=error_statuses(400, 401, 404))
async def operation(operation_id: str, svc: ServiceDep) -> OperationState:
    """A long-running reindex: ``running``, ``succeeded`` (with its ``result``) or ``failed`` (with its
    ``error``), and its ``progress``. Any instance answers: the state is in the index table."""
    if not is_operation_id(operation_id):
        raise ApiError(400, "InvalidOperationId", "An operation ID is the 32 hex digits an Operation-Location names.")
    found = await svc.operations.get(operation_id)
    if found is None:
        raise ApiError(404, "OperationNotFound", f"No operation {operation_id!r} (finished ones are kept 7 days).")
    return OperationState.model_validate(found.as_wire())
