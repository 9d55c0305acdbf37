"""``OutputIndexClient`` (sync and aio) against the real app over real HTTP and a real Azurite:
every method, paging, the error mapping, retries that honour Retry-After, redacted logging, and
bulk downloads (layout, resume, length, hostile paths)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient

from batch_outputs import DownloadReport, OutputIndexClient, OutputItem
from batch_outputs import aio as batch_aio
from batch_outputs._download import MANIFEST, local_target
from devtools.azurite import Azurite
from shared.conventions import container_name

from ..helpers import blob_event, real_blob_event
from ..support.stack import TEST_KEY, RunningApp

JOB = "client-job"
C = container_name(JOB)
BLOBS = {
    "t1/$TaskPreview/a.png": b"A" * 3000,
    "t2/$TaskPreview/frames/b.png": b"B" * 5000,
    "t1/$TaskOutput/out.txt": b"out",
    "$JobOutput/summary.csv": b"x,y\n1,2\n",
}


def seed(app: RunningApp, blob_service: BlobServiceClient, blobs: dict[str, bytes], job: str = JOB, sequencer: int = 1) -> None:
    """Upload the blobs and deliver what Event Grid would for them (a later upload of a blob needs a larger ``sequencer``)."""
    container = blob_service.get_container_client(container_name(job))
    if not container.exists():
        container.create_container()
    for name, data in blobs.items():
        container.upload_blob(name, data, overwrite=True)
    events = [real_blob_event(blob_service, container_name(job), name, sequencer + n) for n, name in enumerate(blobs)]
    response = app.post_events(events)
    assert response.status_code == 200 and response.json()["indexed"] == len(blobs), response.text


@pytest.fixture
def client(app: RunningApp) -> Iterator[OutputIndexClient]:
    with OutputIndexClient(app.url, AzureKeyCredential(TEST_KEY), retry_backoff_factor=0.01) as c:
        yield c


def names(items: list[OutputItem]) -> list[str]:
    return [item.blob_name for item in items]


def test_every_read_method_answers_typed_models(client: OutputIndexClient, app: RunningApp, blob_service: BlobServiceClient,
                                                tmp_path: Path) -> None:
    seed(app, blob_service, BLOBS)
    assert JOB in [job.job_id for job in client.list_jobs()]
    summary = client.get_job(JOB)
    assert (summary.job_id, summary.tasks, summary.usage["outputs"]) == (JOB, 2, 4)
    assert summary.kinds["TaskPreview"] == {"outputs": 2, "bytes": 8000}
    assert sorted(task.task_id or "" for task in client.list_tasks(JOB)) == ["t1", "t2"]

    everything = list(client.list_outputs(JOB))
    assert names(everything)[0] == "$JobOutput/summary.csv"  # the job's own outputs, then every task's
    assert sorted(names(everything)) == sorted(BLOBS)
    assert sorted(names(client.list_outputs(JOB, kind="TaskPreview"))) == ["t1/$TaskPreview/a.png", "t2/$TaskPreview/frames/b.png"]
    assert sorted(names(client.list_outputs(JOB, task_id="t1"))) == ["t1/$TaskOutput/out.txt", "t1/$TaskPreview/a.png"]
    assert names(client.list_outputs(JOB, kind="JobOutput")) == ["$JobOutput/summary.csv"]
    assert names(client.list_outputs(JOB, kind="TaskPreview", prefix="frames/")) == ["t2/$TaskPreview/frames/b.png"]
    # Paging: one item a page, every page followed, nothing twice.
    paged = client.list_outputs(JOB, results_per_page=1)
    assert sorted(names(paged)) == sorted(BLOBS)
    assert len(list(client.list_outputs(JOB, results_per_page=1).by_page())) >= 4

    item = client.get_output(JOB, "TaskPreview", "frames/b.png", task_id="t2")
    assert (item.task_id, item.size, item.kind) == ("t2", 5000, "TaskPreview") and item.download_url
    assert item.as_dict()["blobName"] == "t2/$TaskPreview/frames/b.png"
    with pytest.raises(AttributeError):
        item.size = 1  # type: ignore[misc]  # read-only models
    assert client.get_output(JOB, "JobOutput", "summary.csv").task_id is None

    client.download_output(JOB, "TaskPreview", "a.png", tmp_path / "a.png", task_id="t1")
    assert (tmp_path / "a.png").read_bytes() == BLOBS["t1/$TaskPreview/a.png"]
    stream = io.BytesIO()
    client.download_output(JOB, "JobOutput", "summary.csv", stream)
    assert stream.getvalue() == BLOBS["$JobOutput/summary.csv"]

    assert list(client.list_rejections(JOB)) == []
    assert client.get_quota(JOB).max_outputs == 0
    assert client.set_quota(JOB, max_outputs_per_task=7).max_outputs_per_task == 7
    assert client.get_quota(JOB).as_dict() == {"maxOutputs": 0, "maxBytes": 0, "maxOutputsPerTask": 7}
    result = client.reindex(JOB)
    assert (result.added, result.removed, result.unchanged) == (0, 0, 4)


def test_rejections_are_listed(client: OutputIndexClient, app: RunningApp, blob_service: BlobServiceClient) -> None:
    seed(app, blob_service, {"t1/$TaskOutput/one.txt": b"1"}, job="client-quota-job")
    client.set_quota("client-quota-job", max_outputs=1)
    seed_rejected = {"t1/$TaskOutput/two.txt": b"22"}
    container = blob_service.get_container_client(container_name("client-quota-job"))
    container.upload_blob("t1/$TaskOutput/two.txt", seed_rejected["t1/$TaskOutput/two.txt"])
    assert app.post_events([real_blob_event(blob_service, container_name("client-quota-job"), "t1/$TaskOutput/two.txt", 9)]).status_code == 200
    (rejected,) = client.list_rejections("client-quota-job")
    assert rejected.path == "two.txt" and rejected.reason


def test_errors_are_azure_core_s_with_the_api_s_code(client: OutputIndexClient, app: RunningApp) -> None:
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_job("never-seen-job")
    assert missing.value.status_code == 404 and missing.value.error is not None and missing.value.error.code
    with pytest.raises(HttpResponseError) as bad:
        client.get_job("bad job id!")
    assert bad.value.status_code == 400 and bad.value.error is not None and bad.value.error.code == "InvalidJobId"
    with pytest.raises(ResourceNotFoundError) as no_output:
        client.get_output(JOB, "TaskPreview", "nope.png", task_id="t1")
    assert no_output.value.error is not None and no_output.value.error.code == "OutputNotFound"
    with OutputIndexClient(app.url, AzureKeyCredential("wrong-key")) as wrong:
        with pytest.raises(ClientAuthenticationError) as refused:
            list(wrong.list_jobs())
        assert refused.value.status_code == 401 and refused.value.error is not None and refused.value.error.code == "Unauthorized"
    with pytest.raises(TypeError):
        OutputIndexClient(app.url, "a bare string")  # type: ignore[arg-type]


def test_the_aio_client_mirrors_every_method(app: RunningApp, blob_service: BlobServiceClient, tmp_path: Path) -> None:
    seed(app, blob_service, BLOBS)
    sync_methods = {name for name in dir(OutputIndexClient) if not name.startswith("_")}
    aio_methods = {name for name in dir(batch_aio.OutputIndexClient) if not name.startswith("_")}
    assert sync_methods == aio_methods

    async def scenario() -> None:
        async with batch_aio.OutputIndexClient(app.url, AzureKeyCredential(TEST_KEY)) as client:
            assert JOB in [job.job_id async for job in client.list_jobs()]
            assert (await client.get_job(JOB)).tasks == 2
            assert sorted([t.task_id async for t in client.list_tasks(JOB)]) == ["t1", "t2"]
            assert sorted([i.blob_name async for i in client.list_outputs(JOB, results_per_page=1)]) == sorted(BLOBS)
            assert [i.blob_name async for i in client.list_outputs(JOB, kind="JobOutput")] == ["$JobOutput/summary.csv"]
            item = await client.get_output(JOB, "TaskPreview", "a.png", task_id="t1")
            assert item.download_url and item.size == 3000
            await client.download_output(JOB, "TaskPreview", "a.png", tmp_path / "one.png", task_id="t1")
            assert (tmp_path / "one.png").read_bytes() == BLOBS["t1/$TaskPreview/a.png"]
            assert [i async for i in client.list_rejections(JOB)] == []
            assert (await client.set_quota(JOB, max_bytes=10**9)).max_bytes == 10**9
            assert (await client.get_quota(JOB)).max_bytes == 10**9
            assert (await client.reindex(JOB)).unchanged == 4
            report = await client.download_outputs(JOB, tmp_path / "all", kind="TaskPreview")
            assert sorted(report.downloaded) == ["t1/TaskPreview/a.png", "t2/TaskPreview/frames/b.png"]
            again = await client.download_outputs(JOB, tmp_path / "all", kind="TaskPreview")
            assert again.downloaded == () and again.bytes == 0 and len(again.skipped) == 2
            with pytest.raises(ResourceNotFoundError):
                await client.get_job("never-seen-job")

    asyncio.run(scenario())


# -- downloads -------------------------------------------------------------------------------


def test_download_outputs_keeps_the_folders_and_a_second_run_transfers_nothing(client: OutputIndexClient, app: RunningApp,
                                                                               blob_service: BlobServiceClient, tmp_path: Path) -> None:
    seed(app, blob_service, BLOBS)
    seen: list[tuple[int, int]] = []
    report = client.download_outputs(JOB, tmp_path, max_concurrency=3, progress_hook=lambda done, total: seen.append((done, total)))
    assert isinstance(report, DownloadReport) and report.ok
    assert sorted(report.downloaded) == ["JobOutput/summary.csv", "t1/TaskOutput/out.txt", "t1/TaskPreview/a.png",
                                         "t2/TaskPreview/frames/b.png"]
    assert report.bytes == sum(len(v) for v in BLOBS.values()) and seen[-1] == (report.bytes, report.bytes)
    assert (tmp_path / "t2/TaskPreview/frames/b.png").read_bytes() == BLOBS["t2/$TaskPreview/frames/b.png"]
    assert (tmp_path / "JobOutput/summary.csv").read_bytes() == BLOBS["$JobOutput/summary.csv"]
    assert not list(tmp_path.rglob("*.part"))

    again = client.download_outputs(JOB, tmp_path)
    assert (again.downloaded, again.bytes, len(again.skipped)) == ((), 0, 4)

    # A file changed on disk (another size) or in storage (another ETag) is fetched again.
    (tmp_path / "t1/TaskOutput/out.txt").write_bytes(b"tampered!")
    seed(app, blob_service, {"t1/$TaskPreview/a.png": b"new"}, sequencer=100)
    third = client.download_outputs(JOB, tmp_path)
    assert sorted(third.downloaded) == ["t1/TaskOutput/out.txt", "t1/TaskPreview/a.png"]
    assert (tmp_path / "t1/TaskPreview/a.png").read_bytes() == b"new"
    assert json.loads((tmp_path / MANIFEST).read_text())["files"]["t1/TaskPreview/a.png"]["size"] == 3


def test_a_download_that_storage_cuts_short_is_not_kept(client: OutputIndexClient, app: RunningApp, blob_service: BlobServiceClient,
                                                        tmp_path: Path) -> None:
    """The index lists a size; storage now holds fewer bytes under the same name: the file is
    fetched, its length checked against what storage announced, and the index's ETag differs so
    a re-run fetches again rather than trusting the manifest."""
    seed(app, blob_service, {"t1/$TaskOutput/big.bin": b"z" * 4096})
    blob_service.get_blob_client(C, "t1/$TaskOutput/big.bin").upload_blob(b"short", overwrite=True)  # no event: the index is stale
    report = client.download_outputs(JOB, tmp_path, task_id="t1")
    assert report.ok and (tmp_path / "t1/TaskOutput/big.bin").read_bytes() == b"short"
    assert "t1/TaskOutput/big.bin" in client.download_outputs(JOB, tmp_path, task_id="t1").downloaded


#: Names no storage client can create (the URL would be normalised), which an index may still hold.
HOSTILE = ["../../escape.txt", "a/../../../escape2.txt", "./dot.txt", "x//y.txt"]


def test_hostile_paths_never_leave_the_destination(client: OutputIndexClient, app: RunningApp, blob_service: BlobServiceClient,
                                                   tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    seed(app, blob_service, {"t1/$TaskOutput/fine.txt": b"x"}, job="hostile-job")
    events = [blob_event(container_name("hostile-job"), f"t1/$TaskOutput/{name}", size=1, sequencer=10 + n) for n, name in enumerate(HOSTILE)]
    assert app.post_events(events).status_code == 200
    indexed = {item.path for item in client.list_outputs("hostile-job")}
    assert len(indexed) > 1, indexed
    report = client.download_outputs("hostile-job", dest)
    assert report.downloaded == ("t1/TaskOutput/fine.txt",)
    assert len(report.refused) == len(indexed) - 1 and report.failed == ()
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"dest/t1/TaskOutput/fine.txt", f"dest/{MANIFEST}"}


def test_a_symbolic_link_inside_the_destination_does_not_lead_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "t1")
    item = OutputItem.from_dict({"taskId": "t1", "kind": "TaskOutput", "path": "x.txt"})
    assert local_target(dest, item) is None
    assert local_target(dest, OutputItem.from_dict({"taskId": "t2", "kind": "TaskOutput", "path": "x.txt"})) is not None


# -- the pipeline ------------------------------------------------------------------------------


class SleepRecordingTransport(RequestsTransport):
    """The client's own transport, recording each sleep the retry policy asks for instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, duration: float) -> None:
        self.sleeps.append(duration)


class BusyProxy:
    """A loopback proxy in front of the app that answers the first ``busy`` requests 503 with
    ``Retry-After: 1`` and forwards the rest; records when each request arrived and its headers."""

    def __init__(self, target: str, busy: int) -> None:
        import http.server

        self.busy, self.arrivals = busy, []  # type: ignore[var-annotated]
        proxy = self
        upstream = httpx.Client(base_url=target, timeout=60)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.arrivals.append((time.monotonic(), dict(self.headers)))
                if proxy.busy > 0:
                    proxy.busy -= 1
                    body = b'{"error": {"code": "ServerBusy", "message": "busy"}}'
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                else:
                    answer = upstream.get(self.path, headers={"x-functions-key": self.headers.get("x-functions-key", "")})
                    body = answer.content
                    self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_503_is_retried_after_the_api_s_retry_after(app: RunningApp, blob_service: BlobServiceClient) -> None:
    seed(app, blob_service, BLOBS)
    proxy = BusyProxy(app.url, busy=2)
    try:
        # A backoff of 0 would retry at once: only Retry-After spaces the attempts. The transport
        # records what the retry policy asks it to sleep (azure-core sleeps through the transport).
        transport = SleepRecordingTransport()
        with OutputIndexClient(proxy.url, AzureKeyCredential(TEST_KEY), retry_backoff_factor=0, transport=transport) as client:
            assert client.get_job(JOB).tasks == 2
        assert len(proxy.arrivals) == 3
        assert transport.sleeps == [1, 1]
        assert all(headers["User-Agent"].startswith("batch-outputs/0.3.0") for _, headers in proxy.arrivals)
    finally:
        proxy.close()

    exhausted = BusyProxy(app.url, busy=10)
    try:
        with OutputIndexClient(exhausted.url, AzureKeyCredential(TEST_KEY), retry_total=1) as client:
            with pytest.raises(HttpResponseError) as busy:
                client.get_job(JOB)
        assert busy.value.status_code == 503 and busy.value.error is not None and busy.value.error.code == "ServerBusy"
    finally:
        exhausted.close()


def test_logging_redacts_the_key(app: RunningApp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="azure.core.pipeline.policies.http_logging_policy"), \
            OutputIndexClient(app.url, AzureKeyCredential(TEST_KEY)) as client:
        list(client.list_jobs())
    logged = caplog.text
    assert "x-functions-key" in logged.lower() and "REDACTED" in logged
    assert TEST_KEY not in logged


def test_a_next_link_to_another_origin_is_refused(client: OutputIndexClient) -> None:
    from batch_outputs._shared import resolve_next_link

    assert resolve_next_link("http://127.0.0.1:7071", "/api/jobs?x=1") == "http://127.0.0.1:7071/api/jobs?x=1"
    with pytest.raises(HttpResponseError, match="another origin"):
        resolve_next_link("http://127.0.0.1:7071", "http://127.0.0.1:7072/api/jobs")


def test_a_job_storage_refuses_to_list_a_task_kind(azurite: Azurite, blob_service: BlobServiceClient) -> None:
    from batch_outputs import ConventionError, JobOutputStorage

    storage = JobOutputStorage.connect(azurite.connection_string, "library-job")
    storage.prepare()
    storage.save_text("JobOutput", "done", "status.txt")
    with pytest.raises(ConventionError, match=r"OutputIndexClient\.list_outputs"):
        storage.list("TaskPreview")
    assert [f.path for f in storage.list("JobOutput")] == ["status.txt"]


class StaticToken:
    """A TokenCredential of the test's own (what azure-identity's credentials are to the pipeline)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-123", int(time.time()) + 3600)


def test_a_token_credential_is_sent_as_a_bearer_token_for_the_audience(app: RunningApp) -> None:
    proxy = BusyProxy(app.url, busy=0)
    credential = StaticToken()
    try:
        with OutputIndexClient(proxy.url, credential, audience="api://batch-outputs") as client, \
                pytest.raises(ClientAuthenticationError):
            client.get_job(JOB)  # this app knows no tokens (keys only): refused, and said so
    finally:
        proxy.close()
    assert credential.scopes == [("api://batch-outputs/.default",)]
    (_, headers), = proxy.arrivals
    assert headers["Authorization"] == "Bearer token-123" and "x-functions-key" not in {k.lower() for k in headers}
    # Over plain HTTP a token goes to a loopback API only.
    with OutputIndexClient("http://outputs.example.invalid", StaticToken()) as remote, pytest.raises(ServiceRequestError, match="https"):
        remote.get_job(JOB)


def test_a_listing_asked_with_download_urls_carries_each_item_s_link(app: RunningApp, blob_service: BlobServiceClient) -> None:
    seed(app, blob_service, BLOBS)
    plain = app.get(f"/api/jobs/{JOB}/task-outputs", params={"kind": "TaskPreview"}).json()["value"]
    assert all("downloadUrl" not in item for item in plain)
    pages = app.all_pages(f"/api/jobs/{JOB}/task-outputs", kind="TaskPreview", downloadUrls="true", maxpagesize=1)  # nextLink keeps it
    assert len(pages) == 2 and all(item["downloadUrl"] and item["downloadUrlExpiresAt"] for item in pages)
    for item in pages:
        assert httpx.get(item["downloadUrl"]).content == BLOBS[item["blobName"]]
    assert app.get(f"/api/jobs/{JOB}/outputs", params={"downloadUrls": "maybe"}).status_code == 400
