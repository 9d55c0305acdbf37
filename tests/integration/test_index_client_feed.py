"""The client on the change feed (issue 22 with issue 21's route): ``changes`` and
``wait_for_output``, sync and aio, against the real app over HTTP. No sleeps: an output
indexed while a wait is under way is posted after the wait started, and must be seen."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from batch_outputs import OutputIndexClient
from batch_outputs import aio as batch_aio

from ..support.stack import TEST_KEY, RunningApp
from .test_index_client import seed

JOB = "feed-client-job"


def test_changes_read_on_from_a_cursor(app: RunningApp, blob_service: BlobServiceClient) -> None:
    with OutputIndexClient(app.url, AzureKeyCredential(TEST_KEY)) as client:
        now = client.changes(JOB)
        assert now.changes == () and now.cursor
        seed(app, blob_service, {"t1/$TaskPreview/a.png": b"a", "t2/$TaskOutput/b.txt": b"bb"}, job=JOB)
        batch = client.changes(JOB, cursor=now.cursor)
        assert [(c.change, c.output.blob_name) for c in batch.changes] == [("created", "t1/$TaskPreview/a.png"),
                                                                           ("created", "t2/$TaskOutput/b.txt")]
        assert batch.changes[0].as_dict()["output"]["path"] == "a.png" and batch.cursor != now.cursor
        previews = client.changes(JOB, start="start", kind="TaskPreview")
        assert [c.output.path for c in previews.changes] == ["a.png"]
        assert client.changes(JOB, cursor=batch.cursor, wait=0.2).changes == ()  # nothing new: the wait ends empty
        with pytest.raises(HttpResponseError) as foreign:
            client.changes("another-job", cursor=batch.cursor)
        assert foreign.value.status_code == 400


def test_wait_for_output_sees_what_is_indexed_before_and_during_the_wait(app: RunningApp, blob_service: BlobServiceClient) -> None:
    seed(app, blob_service, {"t1/$TaskPreview/early.png": b"e"}, job=JOB)
    with OutputIndexClient(app.url, AzureKeyCredential(TEST_KEY)) as client, ThreadPoolExecutor(2) as pool:
        assert client.wait_for_output(JOB, "TaskPreview", "early.png", timeout=30).task_id == "t1"
        assert client.wait_for_output(JOB, "TaskPreview", timeout=30).path == "early.png"  # no path: the first of the kind
        later = pool.submit(client.wait_for_output, JOB, "TaskOutput", "late.txt", task_id="t3", timeout=60)
        seed(app, blob_service, {"t3/$TaskOutput/late.txt": b"late"}, job=JOB, sequencer=50)
        found = later.result(timeout=90)
        assert (found.blob_name, found.size) == ("t3/$TaskOutput/late.txt", 4)
        with pytest.raises(TimeoutError):
            client.wait_for_output(JOB, "TaskOutput", "never.txt", timeout=1)


def test_the_aio_client_waits_and_reads_changes(app: RunningApp, blob_service: BlobServiceClient, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with batch_aio.OutputIndexClient(app.url, AzureKeyCredential(TEST_KEY)) as client:
            start = await client.changes(JOB)
            waiting = asyncio.ensure_future(client.wait_for_output(JOB, "TaskPreview", "x.png", task_id="t1", timeout=60))
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: seed(app, blob_service, {"t1/$TaskPreview/x.png": b"x"}, job=JOB, sequencer=70))
            assert (await waiting).path == "x.png"
            batch = await client.changes(JOB, cursor=start.cursor)
            assert [c.output.path for c in batch.changes] == ["x.png"]
            with pytest.raises(TimeoutError):
                await client.wait_for_output(JOB, "TaskPreview", "never.png", timeout=1)

    asyncio.run(scenario())
