"""The registered Event Grid trigger function called the way the worker calls it, against Azurite
(what the host reads from function_app.py is checked in tests/unit/test_function_app.py)."""

from __future__ import annotations

import asyncio

import pytest

from devtools.worker_binding import trigger_argument

from ..helpers import blob_event


def test_trigger_indexes_through_the_shared_service(azurite, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls the registered trigger function the way the worker does, against Azurite."""
    from functions import blob_events
    from shared.service import ServiceHolder

    holder = ServiceHolder(settings)
    monkeypatch.setattr(blob_events, "services", holder)
    event = trigger_argument(blob_events.index_blob_event, blob_event("job-trig", "t1/$TaskLog/out.txt", sequencer=2, size=5))

    async def run() -> tuple:
        await blob_events.index_blob_event(event)
        service = await holder.get()
        page = await service.query.task_outputs("trig", "t1", None, "", 10, None)
        await holder.close()
        return page.items

    (item,) = asyncio.run(run())
    assert (item["kind"], item["path"], item["size"]) == ("TaskLog", "out.txt", 5)
