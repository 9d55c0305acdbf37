"""The deployed path: a delivered batch arrives as concurrent single-event trigger invocations,
which commit together (group commit), each returning only once its own event is durable."""

from __future__ import annotations

import asyncio

import pytest

from devtools.worker_binding import trigger_argument
from shared.domain.conventions import container_name
from shared.settings import Settings

from ..helpers import blob_event
from ..support.stack import RunningApp


def decoded(payload: dict) -> object:
    """What the worker hands ``index_blob_event`` for this event."""
    from functions import blob_events

    return trigger_argument(blob_events.index_blob_event, payload)


def test_100_concurrent_invocations_share_a_few_transactions(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, app: RunningApp
) -> None:
    from functions import blob_events

    container = container_name("group-commit")
    events = [decoded(blob_event(container, f"t{i % 7}/$TaskOutput/f{i}.txt", sequencer=i + 1, size=10))
              for i in range(100)]
    holder = blob_events.services
    monkeypatch.setattr(holder, "_settings", settings)

    async def run() -> int:
        try:
            await asyncio.gather(*(blob_events.index_blob_event(e) for e in events))
            return (await holder.get()).group_commit.commits
        finally:
            await holder.close()

    commits = asyncio.run(run())
    assert 1 <= commits <= 3  # one commit per invocation would be 100
    summary = app.get("/api/jobs/group-commit").json()
    assert summary["usage"] == {"outputs": 100, "bytes": 1000}
    assert summary["tasks"] == 7


def test_an_invocation_raises_when_its_commit_fails(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions import blob_events
    from shared.store.errors import StorageBusyError

    broken = Settings.from_mapping({
        "OUTPUTS_STORAGE": settings.outputs_storage.connection_string or "",
        # Nothing listens on port 9: every table call fails after the (short) retry budget.
        "INDEX_STORAGE": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                         "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                         "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        "STORAGE_RETRY_TOTAL": "1", "STORAGE_RETRY_BACKOFF_SECONDS": "0.01", "STORAGE_RETRY_MAX_BACKOFF_SECONDS": "0.01",
    })
    holder = blob_events.services
    monkeypatch.setattr(holder, "_settings", broken)
    event = decoded(blob_event(container_name("group-fail"), "t1/$TaskOutput/a.txt"))

    async def run() -> None:
        try:
            await blob_events.index_blob_event(event)
        finally:
            await holder.close()

    with pytest.raises(StorageBusyError):
        asyncio.run(run())


def test_back_to_back_invocations_both_return(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, app: RunningApp
) -> None:
    """Invocations one after the other, as a quiet job's last events come: each is awaited once
    the previous returned, so each submit lands as the previous commit's flusher exits."""
    from functions import blob_events

    container = container_name("back-to-back")
    events = [decoded(blob_event(container, f"t1/$TaskOutput/f{i}.txt", sequencer=i + 1, size=10)) for i in range(3)]
    holder = blob_events.services
    monkeypatch.setattr(holder, "_settings", settings)

    async def invocations() -> None:
        for event in events:
            await blob_events.index_blob_event(event)  # awaited in this task, as the worker does

    async def run() -> None:
        try:
            # A hang guard, not a timing: a stranded invocation never returns.
            await asyncio.wait_for(invocations(), timeout=60)
        finally:
            await holder.close()

    asyncio.run(run())
    assert app.get("/api/jobs/back-to-back").json()["usage"] == {"outputs": 3, "bytes": 30}
