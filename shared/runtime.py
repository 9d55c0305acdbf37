"""The process the app serves from: its garbage collector set for bursts of events.

CPython frees objects by reference counting; the cyclic collector runs besides, a young pass
every 700 net container allocations and older passes every tenth of those, each re-scanning every
object it tracks (https://docs.python.org/3/library/gc.html). A delivery of 500 events makes tens
of thousands of dicts, and the imports (azure-core, the SDKs, FastAPI, pydantic) leave ~100,000
long-lived objects, so by default ingest spent 10–15% of its CPU in the collector (measured with
``gc.callbacks`` over 12,000 events: 19 µs an event; 3 µs after this).

``gc.freeze()`` moves everything alive at start to a permanent generation that collections skip
(the use the documentation gives it), and a larger first threshold makes young passes rarer.
Nothing that is not in a cycle waits for the collector, so memory stays bounded: the app's RSS
is a ``make bench`` figure.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

#: Net container allocations between young-generation passes (CPython's default: 700).
YOUNG_THRESHOLD = 10_000

_settled = False


def settle_collector() -> None:
    """Freeze what the imports made and space out young passes; once per process."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    log.debug("collector settled: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())
