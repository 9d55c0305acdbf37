"""Every value the index stores reads back (issue 20): an event carrying a value Table storage or
the SDK cannot round-trip (a time before 1601 or after 9999, a lone surrogate, a size Azure never
sends) is a counted skip, through the webhook and the trigger alike, and never a stored row; a
row that somehow holds an unreadable time still lists, reindexes and reconciles."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from azure.data.tables import EdmType, EntityProperty, TableClient, UpdateMode
from azure.storage.blob import BlobServiceClient

from devtools.worker_binding import trigger_argument
from shared.domain import keys
from shared.domain.conventions import container_name
from shared.service import Service
from shared.settings import Settings

from ..helpers import blob_event, real_blob_event
from ..support.stack import RunningApp
from ..support.workload import index_state

JOB = "HostileValues"
C = container_name(JOB)
SENTINEL = "HostileSentinel"
NAME = "t1/$TaskOutput/bad.txt"
FINE = "t1/$TaskOutput/fine.txt"


def _time(value: str) -> Callable[[dict], None]:
    def apply(event: dict) -> None:
        event["eventTime" if "eventTime" in event else "time"] = value
    return apply


def _data(key: str, value: Any) -> Callable[[dict], None]:
    def apply(event: dict) -> None:
        event["data"][key] = value
    return apply


def _subject_suffix(suffix: str) -> Callable[[dict], None]:
    def apply(event: dict) -> None:
        event["subject"] += suffix
    return apply


#: Values an event can carry that Azure never sends and the index could not read back.
HOSTILE: dict[str, Callable[[dict], None]] = {
    "year-1": _time("0001-01-01T00:00:00Z"),
    "year-999": _time("0999-12-31T23:59:59Z"),
    "year-1600": _time("1600-12-31T23:59:59.9999999Z"),
    "before-year-1-by-offset": _time("0001-01-01T00:30:00+01:00"),
    "after-9999-by-offset": _time("9999-12-31T23:30:00-01:00"),
    "year-10000": _time("10000-01-01T00:00:00Z"),
    "not-a-time": _time("yesterday"),
    "lone-surrogate-name": _subject_suffix("\ud800"),
    "lone-surrogate-content-type": _data("contentType", "text/\udfff"),
    "lone-surrogate-etag": _data("eTag", "0x\ud83d"),
    "lone-surrogate-url": _data("url", "http://127.0.0.1:10000/devstoreaccount1/x/\udc00"),
    "negative-size": _data("contentLength", -1),
    "size-beyond-int64": _data("contentLength", 2**64),
    "size-as-float": _data("contentLength", 10.5),
    "size-as-text": _data("contentLength", "10"),
}


def hostile_event(case: str, schema: str = "eventgrid") -> dict:
    event = blob_event(C, NAME, sequencer=7, size=10, schema=schema)
    HOSTILE[case](event)
    return event


def post(app: RunningApp, events: list[dict]) -> Any:
    """Post as Event Grid would, with JSON escapes (a lone surrogate can only travel as one)."""
    return app.client.post("/api/events", content=json.dumps(events).encode(), headers={"content-type": "application/json"})


def listed(app: RunningApp, job: str = JOB) -> dict[str, int]:
    return {i["blobName"]: i["size"] for i in app.all_pages(f"/api/jobs/{job}/task-outputs")}


def reconcile(settings: Settings) -> dict:
    async def run() -> dict:
        service = await Service.create(settings)
        try:
            return (await service.reconciler().run()).as_dict()
        finally:
            await service.close()

    return asyncio.run(run())


def assert_job_reads(app: RunningApp, expected: dict[str, int]) -> None:
    """Every read of the job answers 200 and shows ``expected`` (blob name -> size)."""
    assert listed(app) == expected
    assert {i["blobName"] for i in app.all_pages(f"/api/jobs/{JOB}/tasks/t1/outputs")} == set(expected)
    summary = app.get(f"/api/jobs/{JOB}")
    assert summary.status_code == 200, summary.text
    lag = summary.json().get("lag") or {}
    # No skipped event's time is measured (year 1 gave 6.4e10 s); the samples' 2017 times are measured.
    assert (lag.get("max") or 0) < 50 * 365 * 24 * 3600
    for name in expected:
        one = app.get(f"/api/jobs/{JOB}/tasks/t1/outputs/TaskOutput/{name.rsplit('/', 1)[1]}")
        assert one.status_code == 200, one.text


@pytest.fixture
def seeded(app: RunningApp, blob_service: BlobServiceClient) -> tuple[RunningApp, tuple]:
    container = blob_service.get_container_client(C)
    if not container.exists():
        container.create_container()
    container.upload_blob(FINE, b"0123456789", overwrite=True)
    sentinel = [blob_event(container_name(SENTINEL), "t9/$TaskLog/log.txt", sequencer=5, size=3)]
    assert app.post_events([real_blob_event(blob_service, C, FINE, 5), *sentinel]).json()["indexed"] == 2
    return app, index_state(app, SENTINEL)


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_value_the_index_could_not_read_back_is_a_counted_skip_over_the_webhook(seeded, case: str, schema: str) -> None:
    app, sentinel = seeded
    response = post(app, [hostile_event(case, schema)])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["skipped"] == 1 and body["indexed"] == 0, body
    assert body["skippedByReason"] == {"malformed-event": 1}, body
    assert_job_reads(app, {FINE: 10})
    # Redelivery answers the same, and reindex and the reconciler leave the index equal to the container.
    assert post(app, [hostile_event(case, schema)]).json()["skipped"] == 1
    reindexed = app.client.post(f"/api/jobs/{JOB}/reindex")
    assert reindexed.status_code == 200, reindexed.text
    assert reindexed.json()["added"] == reindexed.json()["removed"] == 0
    assert index_state(app, SENTINEL) == sentinel


@pytest.mark.parametrize("case", ["year-1", "after-9999-by-offset", "lone-surrogate-name", "size-beyond-int64"])
def test_a_value_the_index_could_not_read_back_is_skipped_by_the_trigger(
    seeded, settings: Settings, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from functions import blob_events

    app, sentinel = seeded
    holder = blob_events.services
    monkeypatch.setattr(holder, "_settings", settings)

    async def run() -> None:
        try:
            for schema in ("eventgrid", "cloudevents"):
                # Returns (acknowledged, not raised for a redelivery) and indexes nothing.
                await blob_events.index_blob_event(trigger_argument(blob_events.index_blob_event, hostile_event(case, schema)))
        finally:
            await holder.close()

    asyncio.run(run())
    assert_job_reads(app, {FINE: 10})
    assert index_state(app, SENTINEL) == sentinel


def test_nan_and_infinity_in_a_delivery_are_skipped(seeded) -> None:
    app, _ = seeded
    for literal in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps([hostile_event("year-1")]).replace('"0001-01-01T00:00:00Z"', '"2026-12-05T10:00:00Z"')
        text = text.replace('"contentLength": 10', f'"contentLength": {literal}')
        response = app.client.post("/api/events", content=text.encode(), headers={"content-type": "application/json"})
        assert response.status_code in (200, 400), response.text
        if response.status_code == 200:
            assert response.json()["skipped"] == 1
    assert_job_reads(app, {FINE: 10})


def test_the_earliest_time_table_storage_holds_is_indexed_and_reads_back(seeded) -> None:
    app, _ = seeded
    event = blob_event(C, "t1/$TaskOutput/old.txt", sequencer=7, size=4)
    event["eventTime"] = "1601-01-01T00:00:00Z"
    assert app.post_events([event]).json()["indexed"] == 1
    (item,) = [i for i in app.all_pages(f"/api/jobs/{JOB}/task-outputs") if i["path"] == "old.txt"]
    assert item["createdAt"].startswith("1601-01-01T00:00:00")
    assert app.client.post(f"/api/jobs/{JOB}/reindex").status_code == 200


def _poison(settings: Settings, container: str, name: str, **properties: Any) -> None:
    """Write, bypassing the app, what an unchecked event used to store on the output row of
    ``name`` (e.g. year 1, which Azurite keeps as ``1-01-01T00:00:00.000000Z``)."""
    task, rest = name.split("/$", 1)
    kind, path = rest.split("/", 1)
    row_key = keys.output_key(kind, path, task)
    with TableClient.from_connection_string(settings.index_storage.connection_string, settings.index_table) as table:
        table.update_entity({"PartitionKey": container, "RowKey": row_key, **properties}, mode=UpdateMode.MERGE)
        raw = table.query_entities("PartitionKey eq @pk and RowKey eq @rk", parameters={"pk": container, "rk": row_key},
                                   select=["RowKey"])
        assert [e["RowKey"] for e in raw] == [row_key]


def test_a_row_holding_an_unreadable_time_still_lists_reindexes_and_reconciles(seeded) -> None:
    app, _ = seeded
    _poison(app.settings, C, FINE, EventTime=EntityProperty(datetime(1, 1, 1, tzinfo=timezone.utc), EdmType.DATETIME))
    assert_job_reads(app, {FINE: 10})
    (item,) = app.all_pages(f"/api/jobs/{JOB}/task-outputs")
    assert item["createdAt"].startswith("0001-01-01")
    assert app.client.post(f"/api/jobs/{JOB}/reindex").status_code == 200
    report = reconcile(app.settings)
    assert report["jobs_reconciled"] >= 1
    # A genuine event of the blob still applies on top of the poisoned row.
    assert app.post_events([blob_event(C, FINE, sequencer=9, size=12)]).json()["indexed"] == 1
    assert listed(app) == {FINE: 12}


def test_a_row_holding_a_lone_surrogate_still_lists(seeded) -> None:
    app, _ = seeded
    _poison(app.settings, C, FINE, ContentType="text/\ud800")
    assert_job_reads(app, {FINE: 10})
    (item,) = app.all_pages(f"/api/jobs/{JOB}/task-outputs")
    assert item["contentType"] == "text/\ufffd"
    assert app.client.post(f"/api/jobs/{JOB}/reindex").status_code == 200
