"""The served process's collector: what the imports made is frozen, young passes spaced out."""

from __future__ import annotations

import subprocess
import sys

from shared.settings import PROJECT_ROOT

PROBE = """
import gc
import function_app  # what the Functions worker does first
print(gc.get_freeze_count(), gc.get_threshold()[0])
from shared.runtime import settle_collector
settle_collector()
print(gc.get_freeze_count(), gc.get_threshold()[0])
"""


def test_importing_the_functions_app_freezes_the_imports_once_and_spaces_young_passes() -> None:
    from shared.runtime import YOUNG_THRESHOLD

    done = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    (frozen, threshold), (again, threshold_again) = (map(int, line.split()) for line in done.stdout.split("\n")[:2])
    assert frozen > 10_000  # the SDKs' and FastAPI's objects, skipped by every collection
    assert threshold == YOUNG_THRESHOLD > 700  # CPython's default
    assert (again, threshold_again) == (frozen, threshold)  # once per process
