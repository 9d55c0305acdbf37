"""The real `batch-outputs` CLI (a subprocess) against the live app and Azurite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite, free_port
from shared.conventions import container_name

from ..helpers import real_blob_event
from ..support.stack import TEST_KEY, RunningApp

ROOT = Path(__file__).resolve().parents[2]
JOB = "nightly:job-7"
C = container_name(JOB)


class Cli:
    def __init__(self, app: RunningApp, azurite: Azurite, cwd: Path) -> None:
        self.cwd = cwd
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZ_BATCH_", "BATCH_OUTPUTS_"))},
            "PYTHONPATH": str(ROOT),
            "BATCH_OUTPUTS_API": app.url,
            "BATCH_OUTPUTS_KEY": TEST_KEY,
            "BATCH_OUTPUTS_STORAGE": azurite.connection_string,
            "COLUMNS": "200",
        }

    def command(self, *args: str) -> list[str]:
        # Ctrl-C (SIGINT) is the CLI's stop for `watch`: a suite started in the background by a
        # shell without job control inherits SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler; restore it, as a terminal's foreground job has it.
        return [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "from batch_outputs.cli import main; main()", *args]

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(*args), cwd=self.cwd, env={**self.env, **(env or {})},
                                capture_output=True, text=True, timeout=120)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def ok(self, *args: str, **kwargs) -> str:
        result = self(*args, **kwargs)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout


@pytest.fixture
def cli(app: RunningApp, azurite: Azurite, tmp_path: Path, blob_service: BlobServiceClient) -> Cli:
    container = blob_service.get_container_client(C)
    if container.exists():
        container.delete_container()
    return Cli(app, azurite, tmp_path)


def test_prepare_save_ls_get_summary_quota_reindex(cli: Cli, app: RunningApp, blob_service: BlobServiceClient) -> None:
    assert "created" in cli.ok("prepare", JOB)
    assert blob_service.get_container_client(C).exists()

    thumb = cli.cwd / "thumb.png"
    thumb.write_bytes(bytes(range(256)) * 40)
    saved = json.loads(cli.ok("save", "--job", JOB, "--task", "t1", "--kind", "TaskPreview", "thumb.png", "--json"))
    assert saved["blobName"] == "t1/$TaskPreview/thumb.png" and saved["container"] == C
    # the event feed's part: Event Grid would now deliver BlobCreated for the new blob
    assert app.post_events([real_blob_event(blob_service, C, "t1/$TaskPreview/thumb.png", 1)]).status_code == 200

    (item,) = json.loads(cli.ok("ls", JOB, "--kind", "TaskPreview", "--json"))
    assert (item["jobId"], item["taskId"], item["kind"], item["path"], item["size"]) == (JOB, "t1", "TaskPreview", "thumb.png", 10240)
    table = cli.ok("ls", JOB)
    assert "thumb.png" in table and "TaskPreview" in table

    cli.ok("get", JOB, "--task", "t1", "--kind", "TaskPreview", "thumb.png", "-o", "copy.png")
    assert (cli.cwd / "copy.png").read_bytes() == thumb.read_bytes()

    summary = json.loads(cli.ok("summary", JOB, "--json"))
    assert summary["jobId"] == JOB and summary["usage"] == {"outputs": 1, "bytes": 10240}
    assert "TaskPreview" in cli.ok("summary", JOB)

    assert json.loads(cli.ok("quota", JOB, "--max-outputs-per-task", "5", "--json"))["maxOutputsPerTask"] == 5
    assert json.loads(cli.ok("quota", JOB, "--json")) == {"maxOutputs": 0, "maxBytes": 0, "maxOutputsPerTask": 5}

    blob_service.get_container_client(C).upload_blob("t2/$TaskLog/stdout.txt", b"lost event")
    report = json.loads(cli.ok("reindex", JOB, "--json"))
    assert (report["added"], report["removed"]) == (1, 0)
    assert "unchanged 2" in cli.ok("reindex", JOB)


def test_job_and_task_default_to_the_batch_environment(cli: Cli, blob_service: BlobServiceClient) -> None:
    cli.ok("prepare", JOB)
    (cli.cwd / "out").mkdir()
    (cli.cwd / "out" / "result.txt").write_text("42")
    cli.ok("save", "--kind", "TaskOutput", "out/result.txt", env={"AZ_BATCH_JOB_ID": JOB, "AZ_BATCH_TASK_ID": "task-3"})
    cli.ok("save", "--kind", "JobOutput", "out/result.txt", "--as", "final/answer.txt", env={"AZ_BATCH_JOB_ID": JOB})
    names = {b.name for b in blob_service.get_container_client(C).list_blobs()}
    assert names == {"task-3/$TaskOutput/out/result.txt", "$JobOutput/final/answer.txt"}


def test_save_tracked_follows_until_terminated(cli: Cli, blob_service: BlobServiceClient) -> None:
    cli.ok("prepare", JOB)
    log = cli.cwd / "stdout.txt"
    log.write_text("start\n")
    follower = subprocess.Popen(
        cli.command("save", "--job", JOB, "--task", "t1", "--kind", "TaskLog", "--tracked", "--interval", "0.1", "stdout.txt"),
        cwd=cli.cwd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    blob = blob_service.get_blob_client(C, "t1/$TaskLog/stdout.txt")
    for _ in range(600):  # bounded wait for the first append
        if blob.exists() and blob.get_blob_properties().size:
            break
        time.sleep(0.05)
    with open(log, "a") as handle:
        for n in range(500):
            handle.write(f"line {n}\n")
    follower.send_signal(signal.SIGTERM)
    stdout, stderr = follower.communicate(timeout=60)
    assert follower.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert blob.download_blob().readall() == log.read_bytes()
    assert "t1/$TaskLog/stdout.txt" in stdout


def test_errors_are_one_line_with_distinct_exit_codes(cli: Cli) -> None:
    bad = cli("ls", "bad job id!")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "invalid job ID 'bad job id!'" in bad.stderr

    assert cli("ls", "never-seen-job").returncode == 3
    cli.ok("prepare", JOB)
    missing = cli("get", JOB, "--task", "t1", "--kind", "TaskPreview", "nope.png")
    assert missing.returncode == 3 and "OutputNotFound" in missing.stderr

    wrong_key = cli("ls", JOB, "--key", "wrong-key")
    assert wrong_key.returncode == 4 and "refused the key" in wrong_key.stderr
    assert cli("summary", JOB, env={"BATCH_OUTPUTS_KEY": "wrong"}).returncode == 4

    unreachable = cli("ls", JOB, "--api", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 5 and "cannot reach the API" in unreachable.stderr

    assert cli("save", "--job", JOB, "--kind", "TaskLog", "missing.txt").returncode == 2
    assert cli("get", JOB, "x").returncode == 2  # --kind is required
    for result in (bad, missing, wrong_key, unreachable):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- issue 13: compute nodes, terminal-safe output; issue 14: nextLink origins ---------------


def index(app: RunningApp, blob_service: BlobServiceClient, container: str, *blobs: str) -> None:
    """What Event Grid would deliver for these blobs as they are now."""
    events = [real_blob_event(blob_service, container, name, n + 1) for n, name in enumerate(blobs)]
    assert app.post_events(events).status_code == 200


def test_job_release_tasks_on_two_nodes_leave_two_listed_files(cli: Cli, app: RunningApp, blob_service: BlobServiceClient) -> None:
    job, container = "j1", container_name("j1")
    if blob_service.get_container_client(container).exists():
        blob_service.get_container_client(container).delete_container()
    cli.ok("prepare", job)
    (cli.cwd / "logs.txt").write_text("release logs")
    for node in ("tvm-1", "tvm-2"):
        env = {"AZ_BATCH_JOB_ID": job, "AZ_BATCH_TASK_ID": "jobrelease", "AZ_BATCH_NODE_ID": node}
        assert f"jobrelease/$TaskLog/{node}/logs.txt" in cli.ok("save", "--kind", "TaskLog", "logs.txt", env=env)
    names = sorted(b.name for b in blob_service.get_container_client(container).list_blobs())
    assert names == ["jobrelease/$TaskLog/tvm-1/logs.txt", "jobrelease/$TaskLog/tvm-2/logs.txt"]
    index(app, blob_service, container, *names)
    listed = json.loads(cli.ok("ls", job, "--task", "jobrelease", "--json"))
    assert sorted((i["taskId"], i["kind"], i["path"]) for i in listed) == [
        ("jobrelease", "TaskLog", "tvm-1/logs.txt"), ("jobrelease", "TaskLog", "tvm-2/logs.txt")]

    env = {"AZ_BATCH_JOB_ID": job, "AZ_BATCH_TASK_ID": "jobrelease", "AZ_BATCH_NODE_ID": "tvm-3"}
    assert "jobrelease/$TaskLog/logs.txt" in cli.ok("save", "--kind", "TaskLog", "logs.txt", "--no-per-node", env=env)
    env = {"AZ_BATCH_JOB_ID": job, "AZ_BATCH_TASK_ID": "render-1", "AZ_BATCH_NODE_ID": "tvm-3"}
    assert "render-1/$TaskLog/tvm-3/logs.txt" in cli.ok("save", "--kind", "TaskLog", "logs.txt", "--per-node", env=env)
    missing_node = cli("save", "--kind", "TaskLog", "logs.txt", env={"AZ_BATCH_JOB_ID": job, "AZ_BATCH_TASK_ID": "jobrelease"})
    assert missing_node.returncode == 2 and "AZ_BATCH_NODE_ID" in missing_node.stderr
    rooted = cli("save", "--job", job, "--task", "t1", "--kind", "TaskLog", str(cli.cwd / "logs.txt"))
    assert rooted.returncode == 2 and "--as" in rooted.stderr


def test_a_node_with_only_the_container_sas_url_saves(cli: Cli, azurite: Azurite, blob_service: BlobServiceClient) -> None:
    from batch_outputs import JobOutputStorage

    cli.ok("prepare", JOB)
    sas = JobOutputStorage.connect(azurite.connection_string, JOB).container_sas_url()
    (cli.cwd / "out.txt").write_text("42")
    env = {"BATCH_OUTPUTS_STORAGE": sas, "AZ_BATCH_JOB_ID": JOB, "AZ_BATCH_TASK_ID": "t5"}
    saved = json.loads(cli.ok("save", "--kind", "TaskOutput", "out.txt", "--json", env=env))
    assert saved["blobName"] == "t5/$TaskOutput/out.txt" and "sig=" not in saved["url"]
    assert blob_service.get_blob_client(C, "t5/$TaskOutput/out.txt").download_blob().readall() == b"42"


HOSTILE = ["[link=http://x]a[/link]", "[/x]", "\u202egnp.exe", "bold[bold red]x"]


def test_ls_lists_hostile_names_literally(cli: Cli, app: RunningApp, blob_service: BlobServiceClient) -> None:
    cli.ok("prepare", JOB)
    container = blob_service.get_container_client(C)
    names = [f"t1/$TaskOutput/{name}" for name in HOSTILE]
    for name in names:
        container.upload_blob(name, b"x")
    index(app, blob_service, C, *names)

    result = cli("ls", JOB)
    assert result.returncode == 0, result.stderr
    for shown in ("[link=http://x]a[/link]", "[/x]", "\\u202egnp.exe", "bold[bold red]x"):
        assert shown in result.stdout, result.stdout
    assert "\u202e" not in result.stdout and "\x1b" not in result.stdout
    assert sorted(i["path"] for i in json.loads(cli.ok("ls", JOB, "--json"))) == sorted(HOSTILE)  # --json: exact


class FakeApi:
    """A stand-in API on loopback whose list answers with a chosen nextLink; records every request."""

    def __init__(self, next_link: str = "") -> None:
        import http.server
        import threading

        self.next_link = next_link
        self.requests: list[tuple[str, str | None]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("x-functions-key")))
                if self.path.startswith("/api/jobs/fake-job?") or self.path == "/api/jobs/fake-job":
                    body: dict = {"jobId": "fake-job"}
                elif "page=2" in self.path:
                    body = {"value": [fake.item("second.txt")]}
                else:
                    body = {"value": [fake.item("first.txt")], **({"nextLink": fake.next_link} if fake.next_link else {})}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def item(path: str) -> dict:
        return {"jobId": "fake-job", "taskId": "t1", "kind": "TaskOutput", "path": path, "size": 1, "createdAt": None}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_next_links_stay_on_the_api_s_origin(cli: Cli) -> None:
    elsewhere = FakeApi()
    api = FakeApi()
    try:
        api.next_link = "/api/jobs/fake-job/task-outputs?page=2"  # relative: resolved against --api
        listed = json.loads(cli.ok("ls", "fake-job", "--task", "t1", "--api", api.url, "--key", "secret-key", "--json"))
        assert [i["path"] for i in listed] == ["first.txt", "second.txt"]
        assert all(key == "secret-key" for _, key in api.requests)

        api.next_link = f"{elsewhere.url}/api/jobs/fake-job/task-outputs?page=2"  # same host, another port
        refused = cli("ls", "fake-job", "--task", "t1", "--api", api.url, "--key", "secret-key")
        assert refused.returncode != 0 and "another origin" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert elsewhere.requests == []  # never contacted: the key went nowhere else
    finally:
        api.close()
        elsewhere.close()


def test_a_failed_flush_makes_a_tracked_save_exit_non_zero(cli: Cli, blob_service: BlobServiceClient) -> None:
    cli.ok("prepare", JOB)
    log = cli.cwd / "stdout.txt"
    log.write_text("start\n")
    follower = subprocess.Popen(
        cli.command("save", "--job", JOB, "--task", "t1", "--kind", "TaskLog", "--tracked", "--interval", "0.05", "stdout.txt"),
        cwd=cli.cwd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert follower.stderr is not None
    assert "following" in follower.stderr.readline()  # started: the first flush is done
    moved = cli.cwd / "moved.txt"
    log.rename(moved)
    log.mkdir()  # the next flush cannot read the log
    assert "failed" in follower.stderr.readline()  # reported at once, on stderr
    log.rmdir()
    moved.rename(log)
    with open(log, "a") as handle:
        handle.write("more\n")
    follower.send_signal(signal.SIGTERM)
    stdout, stderr = follower.communicate(timeout=60)
    assert follower.returncode == 1, (stdout, stderr)
    assert "flush(es) of stdout.txt failed" in stderr and "Traceback" not in stderr
    # the final flush still saved everything
    assert blob_service.get_blob_client(C, "t1/$TaskLog/stdout.txt").download_blob().readall() == log.read_bytes()
