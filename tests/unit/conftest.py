"""The unit tier: no network, no Azurite, no Node.js, no browser; Python only (``make unit``).

When a run holds unit tests only, it fails if one of them imported what starts or drives
something outside the process: such a test belongs in tests/integration/ or tests/e2e/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
#: The app server and Azurite fixtures, Azurite itself, the browser.
OUTSIDE = ("tests.support.stack", "devtools.azurite", "devtools.browser", "selenium", "uvicorn")


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.items or any(UNIT not in Path(item.path).parents for item in session.items):
        return
    loaded = [name for name in OUTSIDE if name in sys.modules]
    if loaded:
        raise pytest.UsageError(f"the unit tier imported {', '.join(loaded)}: move that test to tests/integration/ or tests/e2e/")
