"""Operations (issue 15) against a real Azurite over real HTTP: a misconfigured index told apart
from a busy one, the job summary's lag and its counts of events that wrote no output."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite
from devtools.worker_binding import trigger_argument
from functions import blob_events
from shared.conventions import container_name
from shared.domain import keys
from shared.domain.events import EventBatch
from shared.service import Service, ServiceHolder
from shared.store.envelopes import parse_events
from shared.store.errors import StorageAccessError

from ..helpers import blob_event, eventually
from ..support.faultproxy import FaultProxy
from ..support.stack import TEST_KEY, RunningApp, settings_for

#: A key Azurite rejects: what an index identity without its role looks like from the app.
WRONG_KEY = "QUJD" * 22


def wrong_key_settings(azurite: Azurite):
    good = azurite.connection_string
    start = good.index("AccountKey=") + len("AccountKey=")
    end = good.index(";", start)
    return settings_for(azurite, INDEX_STORAGE=good[:start] + WRONG_KEY + "==" + good[end:])


def misconfiguration_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and "misconfigured" in r.getMessage()]


def test_an_index_that_refuses_the_app_is_told_once_and_answered_500(
    azurite: Azurite, serve: Callable[..., RunningApp], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = serve(wrong_key_settings(azurite))
    events = [blob_event("job-denied", "t1/$TaskOutput/a.txt", sequencer=1)]
    for _ in range(3):
        response = app.post_events(events)
        # Not 503 "busy": Event Grid retries a 500 and then dead-letters, and replay recovers it.
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert error["code"] == "IndexStorageMisconfigured"
        assert "INDEX_STORAGE" in error["message"] and "Storage Table Data Contributor" in error["message"]
        assert "retry-after" not in response.headers
    assert app.get("/api/jobs").status_code == 500  # the API says the same, not "busy"

    (line,) = misconfiguration_records(caplog)  # one line, however many requests failed
    message = line.getMessage()
    assert "\n" not in message and "AuthorizationFailure" in message
    assert "Storage Table Data Contributor" in message and "INDEX_STORAGE" in message

    assert app.get("/api/health", headers={"x-functions-key": "nope"}).json() == {"status": "ok"}  # anonymous, minimal
    assert app.get("/api/health?detail=true", headers={"x-functions-key": "wrong"}).status_code == 401
    for path in ("/api/health?detail=true", "/api/admin/health"):
        detail = app.get(path).json()
        assert detail["status"] == "misconfigured"
        index = detail["index"]
        assert index["error"]["cause"] == "authorization" and index["error"]["code"] == "AuthorizationFailure"
        assert index["error"]["setting"] == "INDEX_STORAGE" and index["error"]["status"] == 403
        assert "Storage Table Data Contributor" in index["error"]["fix"]
    assert len(misconfiguration_records(caplog)) == 1


def test_a_deleted_index_table_names_the_table_setting(azurite: Azurite, serve: Callable[..., RunningApp]) -> None:
    settings = settings_for(azurite)
    app = serve(settings)
    assert app.post_events([blob_event("job-gone-table", "t1/$TaskOutput/a", sequencer=1)]).status_code == 200
    assert app.get("/api/health?detail=true").json()["index"] == {"status": "ok", "table": settings.index_table}
    TableServiceClient.from_connection_string(azurite.connection_string).delete_table(settings.index_table)

    response = app.post_events([blob_event("job-gone-table", "t1/$TaskOutput/b", sequencer=2)])
    assert response.status_code == 500 and "INDEX_TABLE" in response.json()["error"]["message"]
    error = app.get("/api/health?detail=true").json()["index"]["error"]
    assert (error["cause"], error["code"], error["setting"]) == ("table-not-found", "TableNotFound", "INDEX_TABLE")


def test_throttling_stays_503_with_retry_after(azurite: Azurite, serve: Callable[..., RunningApp]) -> None:
    proxy = FaultProxy(f"http://127.0.0.1:{azurite.table_port}", faults=("busy",), seed=2).start()
    try:
        settings = settings_for(azurite, INDEX_STORAGE=proxy.connection_string(azurite.connection_string, azurite.table_port))
        app = serve(settings)
        job = f"job-busy-{uuid.uuid4().hex[:6]}"
        assert app.post_events([blob_event(job, "t1/$TaskOutput/a", sequencer=1)]).status_code == 200
        proxy.rate = 1.0
        events = [blob_event(job, f"t{i}/$TaskOutput/b", sequencer=10 + i) for i in range(4)]
        response = app.post_events(events)
        assert response.status_code == 503 and response.headers["retry-after"]
        assert app.get("/api/health?detail=true").json()["index"]["status"] == "unavailable"
        proxy.rate = 0.0
        # The job counts what it handed back (flushed a moment later, without a write per event).
        assert eventually(lambda: app.get(f"/api/jobs/{job[4:]}").json()["handedBack"] >= len(events))
        assert app.post_events(events).status_code == 200
        assert app.get(f"/api/jobs/{job[4:]}").json()["usage"]["outputs"] == 5
    finally:
        proxy.stop()


@pytest.fixture
def lagged_app(serve: Callable[..., RunningApp], azurite: Azurite) -> Iterator[RunningApp]:
    yield serve(settings_for(azurite))


def unfolded_deltas(azurite: Azurite, app: RunningApp, container: str) -> list[str]:
    with TableServiceClient.from_connection_string(azurite.connection_string) as tables:
        rows = tables.get_table_client(app.settings.index_table).query_entities(
            "PartitionKey eq @p", parameters={"p": container}, select=["RowKey"])
        return [row["RowKey"] for row in rows if row["RowKey"].startswith(keys.delta_prefix())]


def test_the_summary_shows_the_lag_of_the_last_hour_folded_or_not(lagged_app: RunningApp, azurite: Azurite) -> None:
    app, job = lagged_app, f"lag-{uuid.uuid4().hex[:8]}"
    container = container_name(job)
    now = datetime.now(timezone.utc)
    ages = {"t1/$TaskOutput/a": 30.0, "t2/$TaskOutput/b": 120.0, "t3/$TaskOutput/c": 600.0, "t4/$TaskOutput/d": 7200.0}
    events = []
    for sequencer, (name, age) in enumerate(ages.items(), start=1):
        event = blob_event(container, name, sequencer=sequencer)
        event["eventTime"] = (now - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
        events.append(event)
    events.append(blob_event(container, "t1/not-a-convention-path", sequencer=9))
    assert app.post_events(events).status_code == 200
    indexed_by = datetime.now(timezone.utc)
    # A duplicate delivery is no new indexing: it adds no lag.
    assert app.post_events(events[:2]).json()["unchanged"] == 2

    def lag() -> dict:
        return app.get(f"/api/jobs/{job}").json()["lag"]

    elapsed = (indexed_by - now).total_seconds()
    for moment in ("unfolded", "folded"):
        figures = lag()
        assert figures["events"] == 4, moment  # every indexed change of the hour, however old its event
        assert figures["windowSeconds"] == 3600
        assert 7200 <= figures["max"] <= 7200 + elapsed, moment  # exact: the oldest event's age when indexed
        assert 30 <= figures["p50"] <= figures["p95"] <= figures["max"], moment
        assert figures["p50"] <= 1.25 * (120 + elapsed)  # the median event was 120 s old (buckets: +25% at most)
        assert figures["p95"] >= 7200 / 1.25
        if moment == "unfolded":  # the writer folds the job's deltas a moment later (FOLD_DELAY)
            assert eventually(lambda: not unfolded_deltas(azurite, app, container))
    summary = app.get(f"/api/jobs/{job}").json()
    assert eventually(lambda: app.get(f"/api/jobs/{job}").json()["skippedByReason"] == {"not-a-convention-path": 1})
    assert summary["handedBack"] == 0


def test_reindex_repairs_add_no_lag(lagged_app: RunningApp, azurite: Azurite) -> None:
    app, job = lagged_app, f"relag-{uuid.uuid4().hex[:8]}"
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = blobs.get_container_client(container_name(job))
    container.create_container()
    for i in range(3):
        container.upload_blob(f"t{i}/$TaskOutput/x", b"abc")
    response = app.client.post(f"/api/jobs/{job}/reindex")
    assert response.status_code == 200 and response.json()["added"] == 3
    summary = app.get(f"/api/jobs/{job}").json()
    assert summary["usage"]["outputs"] == 3 and summary["lag"]["events"] == 0
    blobs.close()


def test_the_plain_health_reveals_nothing_and_detail_needs_a_key(lagged_app: RunningApp) -> None:
    assert httpx.get(f"{lagged_app.url}/api/health").json() == {"status": "ok"}
    assert httpx.get(f"{lagged_app.url}/api/health?detail=true").status_code == 401
    assert httpx.get(f"{lagged_app.url}/api/admin/health").status_code == 401
    detail = httpx.get(f"{lagged_app.url}/api/health?detail=true", headers={"x-functions-key": TEST_KEY}).json()
    assert detail["status"] == "ok" and detail["deadLetterContainer"] == "eventgrid-deadletter"


def test_the_trigger_raises_when_the_index_refuses_the_app(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trigger cannot choose a status: it raises, so Event Grid retries and then dead-letters."""
    holder = ServiceHolder(wrong_key_settings(azurite))
    monkeypatch.setattr(blob_events, "services", holder)
    event = trigger_argument(blob_events.index_blob_event, blob_event("job-denied", "t1/$TaskLog/out.txt", sequencer=1, size=5))

    async def run() -> None:
        try:
            await blob_events.index_blob_event(event)
        finally:
            await holder.close()

    with pytest.raises(StorageAccessError) as raised:
        asyncio.run(run())
    assert raised.value.setting == "INDEX_STORAGE" and holder.access.problem is not None


def test_the_metrics_record_carries_what_ingest_did(azurite: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    """The per-instance ``ingest metrics`` log record (what the host sends to Application Insights)."""
    caplog.set_level(logging.INFO, logger="shared.ingest.telemetry")
    job = f"metrics-{uuid.uuid4().hex[:8]}"
    events = [blob_event(container_name(job), f"t{i}/$TaskOutput/x", sequencer=i + 1) for i in range(3)]
    events.append(blob_event(container_name(job), "stray.txt", sequencer=9))

    async def run() -> None:
        service = await Service.create(settings_for(azurite))
        try:
            batch: EventBatch = parse_events(events)
            await service.ingest(batch)
            await service.ingest(parse_events(events[:1]))  # a duplicate: unchanged
        finally:
            await service.close()  # drains: the period's record is written

    asyncio.run(run())
    (record,) = [r for r in caplog.records if r.getMessage().startswith("ingest metrics over")]
    assert (record.ingest_indexed, record.ingest_unchanged, record.ingest_skipped) == (3, 1, 1)  # type: ignore[attr-defined]
    assert record.ingest_lagEvents == 3 and record.ingest_lagMax >= record.ingest_lagP50 >= 0  # type: ignore[attr-defined]
    assert '"skippedByReason":{"not-a-convention-path":1}' in record.getMessage()
