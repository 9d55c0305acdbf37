"""What the index store last learned about its access, for operators.

A misconfiguration (``StorageAccessError``: the identity lacks its role, a wrong key, the table
is gone) fails every request the same way; logging each one would bury the cause under
thousands of identical lines. The adapter reports every outcome here: the first failure of a
kind is logged once at error level, on one line, with what to fix; the next success logs that
access is back. ``GET /api/health?detail=true`` shows the current state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import StorageAccessError

log = logging.getLogger(__name__)


@dataclass
class IndexAccess:
    """The index store's access: ``problem`` is the misconfiguration in force, if any."""

    problem: StorageAccessError | None = None
    since: datetime | None = None
    last_ok: datetime | None = None

    def failed(self, error: StorageAccessError) -> None:
        before = self.problem
        self.problem = error
        if before is not None and (before.code, before.cause) == (error.code, error.cause):
            return
        self.since = datetime.now(timezone.utc)
        log.error("index storage misconfigured (%s, %s): %s. Fix: %s", error.cause, error.code, error, error.fix)

    def succeeded(self) -> None:
        self.last_ok = datetime.now(timezone.utc)
        if self.problem is not None:
            log.warning("index storage access restored (it failed with %s since %s)", self.problem.code,
                        self.since.isoformat() if self.since else "?")
            self.problem, self.since = None, None

    def as_wire(self) -> dict[str, Any]:
        if self.problem is None:
            return {"status": "ok"}
        problem = self.problem
        return {
            "status": "misconfigured",
            "error": {"cause": problem.cause, "code": problem.code, "status": problem.status,
                      "message": str(problem), "setting": problem.setting, "fix": problem.fix},
            "since": self.since.isoformat().replace("+00:00", "Z") if self.since else None,
        }
