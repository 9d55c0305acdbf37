"""Dead letters end to end, as the engineer on call meets them: the local event source gives up on
events while the index table is unreachable and dead-letters them in Event Grid's format; one
``batch-outputs replay-deadletters`` indexes them all; a second run changes nothing.

Real Azurite, the real event proxy and feed, two real apps over HTTP (one whose index is
unreachable, one healthy), the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite, free_port
from devtools.dead_letters import BlobDeadLetters
from devtools.event_feed import EventFeed, Webhook
from devtools.event_proxy import EventProxy
from shared.conventions import container_name
from shared.domain.deadletters import read_dead_letters
from shared.settings import Settings
from shared.store.clients import DEVSTORE_ACCOUNT

from ..support.stack import EVENTS_KEY, TEST_KEY, RunningApp, settings_for

ROOT = Path(__file__).resolve().parents[2]
JOB = "outage-job"
C = container_name(JOB)


def unreachable_index(azurite: Azurite, settings: Settings) -> Settings:
    """The same settings, with the index table on a port nothing listens on."""
    table = f"http://127.0.0.1:{free_port()}/{DEVSTORE_ACCOUNT}"
    parts = [p for p in azurite.connection_string.split(";") if p and not p.startswith("TableEndpoint=")]
    return settings_for(azurite, INDEX_STORAGE=";".join([*parts, f"TableEndpoint={table}"]) + ";",
                        INDEX_TABLE=settings.index_table, DEADLETTER_CONTAINER=settings.deadletter_container)


@dataclass
class Outage:
    proxy: EventProxy
    feed: EventFeed
    dead_letters: BlobDeadLetters
    blobs: BlobServiceClient
    settings: Settings  # the healthy app's

    def step(self, action: Callable[[], object]) -> None:
        """One operation through the event source, its events delivered (here: dead-lettered)."""
        action()
        assert self.proxy.drain(60), "the feed neither delivered nor dead-lettered"


@pytest.fixture
def outage(azurite: Azurite, serve: Callable[..., RunningApp]) -> Iterator[Outage]:
    settings = settings_for(azurite, DEADLETTER_CONTAINER=f"dl-{uuid.uuid4().hex[:12]}")
    down = serve(unreachable_index(azurite, settings))
    dead_letters = BlobDeadLetters(azurite.connection_string, settings.deadletter_container, DEVSTORE_ACCOUNT)
    feed = EventFeed(Webhook(f"{down.url}/api/events", EVENTS_KEY), linger=0, first_backoff=0.01, max_backoff=0.05,
                     max_attempts=3, dead_letters=dead_letters)
    proxy = EventProxy(f"http://127.0.0.1:{azurite.blob_port}", feed).start()
    blobs = BlobServiceClient.from_connection_string(proxy.connection_string())
    yield Outage(proxy, feed, dead_letters, blobs, settings)
    blobs.close()
    proxy.stop()


def replay(app: RunningApp, *args: str) -> dict:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "BATCH_OUTPUTS_"))},
           "PYTHONPATH": str(ROOT), "BATCH_OUTPUTS_API": app.url, "BATCH_OUTPUTS_KEY": TEST_KEY, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-c", "from batch_outputs.cli import main; main()", "replay-deadletters", *args],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, (result.stdout, result.stderr)
    return json.loads(result.stdout) if "--json" in args else {"text": result.stdout}


def index_state(app: RunningApp) -> tuple[dict, dict]:
    outputs = {(o["taskId"], o["kind"], o["path"]): o["size"] for o in app.all_pages(f"/api/jobs/{JOB}/task-outputs")}
    summary = app.get(f"/api/jobs/{JOB}").json()
    return outputs, {k: summary[k] for k in ("usage", "kinds", "tasks", "rejections")}


def test_events_dead_lettered_in_an_outage_are_all_indexed_by_one_replay(
    outage: Outage, azurite: Azurite, serve: Callable[..., RunningApp]
) -> None:
    container = outage.blobs.get_container_client(C)
    container.create_container()
    outage.step(lambda: [container.upload_blob(f"t{i}/$TaskOutput/frame {i}.png", b"x" * (10 + i)) for i in range(6)])
    outage.step(lambda: container.upload_blob("t1/$TaskOutput/frame 1.png", b"y" * 99, overwrite=True))
    outage.step(lambda: container.delete_blob("t5/$TaskOutput/frame 5.png"))
    assert outage.feed.delivered == 0 and outage.feed.dead_lettered == 8
    blobs = len(outage.dead_letters.written)  # one per batch given up on, as Event Grid writes them
    assert blobs >= 3

    raw = azurite_blobs(azurite).get_container_client(outage.settings.deadletter_container)
    first = read_dead_letters(raw.download_blob(outage.dead_letters.written[0]).readall())
    assert {(d.reason, d.attempts, d.outcome, d.status) for d in first} == {("MaxDeliveryAttemptsExceeded", 3, "Busy", 503)}, first

    app = serve(outage.settings)  # the index is back
    assert app.get(f"/api/jobs/{JOB}").status_code == 404
    dry = replay(app, "--dry-run", "--json")
    assert dry["blobs"]["replayed"] == blobs and dry["events"] == 8, dry
    assert app.get(f"/api/jobs/{JOB}").status_code == 404  # a dry run indexes nothing ...
    assert replay(app, "--dry-run", "--json", "--since", "2999-01-01T00:00:00Z")["blobs"]["beforeSince"] == blobs
    paged = page_through(app, dryRun="true", maxBlobs=1)  # ... and pages like a real one
    assert (paged, replay(app, "--dry-run", "--json")["blobs"]["alreadyReplayed"]) == (blobs, 0)  # ... and marks nothing

    first_run = replay(app, "--json")
    assert first_run["blobs"] == {"listed": blobs, "replayed": blobs, "alreadyReplayed": 0, "beforeSince": 0, "unreadable": 0}
    (reason,) = first_run["byReason"]
    outcome = first_run["byReason"][reason]
    assert reason == "MaxDeliveryAttemptsExceeded" and outcome["events"] == 8, first_run
    assert outcome["indexed"] + outcome["unchanged"] == 8 and outcome["skipped"] == 0, first_run
    live = {(f"t{i}", "TaskOutput", f"frame {i}.png"): 10 + i for i in range(5)} | {("t1", "TaskOutput", "frame 1.png"): 99}
    outputs, summary = index_state(app)
    assert outputs == live
    assert summary["usage"] == {"outputs": 5, "bytes": sum(live.values())}
    assert all(dict(raw.get_blob_client(name).get_blob_properties().metadata).get("replayedAt")
               for name in outage.dead_letters.written)

    second = replay(app, "--json")
    assert second["blobs"]["alreadyReplayed"] == blobs and second["blobs"]["replayed"] == 0
    assert second["events"] == 0 and second["byReason"] == {}, second
    assert index_state(app) == (outputs, summary), (index_state(app), outputs, summary)

    human = replay(app)["text"]
    assert f"{blobs} already replayed" in human, human


def azurite_blobs(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def page_through(app: RunningApp, **params: str) -> int:
    """Follow ``nextMarker`` to the end; the blobs listed."""
    listed, marker = 0, None
    while True:
        response = app.client.post("/api/admin/replay-deadletters", params={**params, **({"marker": marker} if marker else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        listed += body["blobs"]["listed"]
        marker = body.get("nextMarker")
        if not marker:
            return listed
