"""The CLI as a user of ``OutputIndexClient`` (issue 22): output formats and ``--query``,
``download`` (resume), a node with only a container SAS URL (no API key), ``wait`` and ``watch``."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from batch_outputs import JobOutputStorage
from devtools.azurite import Azurite, free_port
from shared.conventions import container_name

from ..helpers import real_blob_event
from ..support.stack import RunningApp
from .test_cli import Cli

JOB = "client-cli-job"
C = container_name(JOB)
LONG = "deep/" + "x" * 150 + ".png"
BLOBS = {"t1/$TaskPreview/a.png": b"a" * 100, f"t2/$TaskPreview/{LONG}": b"b" * 200, "t1/$TaskLog/stdout.txt": b"log"}


@pytest.fixture
def cli(app: RunningApp, azurite: Azurite, tmp_path: Path, blob_service: BlobServiceClient) -> Cli:
    container = blob_service.get_container_client(C)
    if container.exists():
        container.delete_container()
    container.create_container()
    for name, data in BLOBS.items():
        container.upload_blob(name, data)
    events = [real_blob_event(blob_service, C, name, n + 1) for n, name in enumerate(BLOBS)]
    assert app.post_events(events).status_code == 200
    return Cli(app, azurite, tmp_path)


def test_listings_speak_json_jsonc_table_and_tsv_and_take_a_query(cli: Cli) -> None:
    as_json = json.loads(cli.ok("ls", JOB, "--output", "json"))
    assert as_json == json.loads(cli.ok("ls", JOB, "--json"))  # --json is an alias
    assert sorted(i["blobName"] for i in as_json) == sorted(BLOBS)
    assert json.loads(cli.ok("ls", JOB, "-o", "jsonc")) == as_json  # piped: no colour codes

    tsv = cli.ok("ls", JOB, "--kind", "TaskPreview", "-o", "tsv", "--query", "sort_by([], &taskId)[].[taskId, path, size]")
    assert tsv.splitlines() == ["t1\ta.png\t100", f"t2\t{LONG}\t200"]
    assert cli.ok("summary", JOB, "--query", "usage.outputs", "-o", "json").strip() == "3"
    assert cli.ok("quota", JOB, "-o", "tsv").strip() == "0\t0\t0"

    # Piped, a table is plain aligned text that never wraps: the long path stays whole on its line.
    table = cli.ok("ls", JOB, env={"COLUMNS": "80"})
    assert any(LONG in line and line.startswith("t2") for line in table.splitlines()), table
    assert not set("┃│━─┏") & set(table)
    queried = cli.ok("ls", JOB, "--query", "[?taskId=='t1'].{task: taskId, kind: kind}", env={"COLUMNS": "80"})
    assert queried.splitlines()[0].split() == ["task", "kind"] and len(queried.splitlines()) == 3

    bad_query = cli("ls", JOB, "--query", "[?")
    assert bad_query.returncode == 2 and "invalid --query" in bad_query.stderr
    assert cli("ls", JOB, "--output", "yaml").returncode == 2


def test_download_keeps_the_folders_and_a_rerun_transfers_nothing(cli: Cli) -> None:
    first = json.loads(cli.ok("download", JOB, "out", "--kind", "TaskPreview", "--json"))
    assert sorted(first["downloaded"]) == ["t1/TaskPreview/a.png", f"t2/TaskPreview/{LONG}"] and first["bytes"] == 300
    assert (cli.cwd / "out/t1/TaskPreview/a.png").read_bytes() == BLOBS["t1/$TaskPreview/a.png"]
    second = json.loads(cli.ok("download", JOB, "out", "--kind", "TaskPreview", "--json"))
    assert (second["downloaded"], second["bytes"], len(second["skipped"])) == ([], 0, 2)
    human = cli.ok("download", JOB, "out", "--task", "t1")
    assert "downloaded 1" in human and "skipped 1" in human  # the log is new, the preview already there
    assert (cli.cwd / "out/t1/TaskLog/stdout.txt").read_bytes() == b"log"


def test_a_node_with_only_the_container_sas_url_gets_and_downloads(cli: Cli, azurite: Azurite) -> None:
    sas = JobOutputStorage.connect(azurite.connection_string, JOB).container_sas_url()
    # No key, and an API nobody answers: every byte comes straight from the blobs.
    node = {"BATCH_OUTPUTS_STORAGE": sas, "BATCH_OUTPUTS_KEY": "", "BATCH_OUTPUTS_API": f"http://127.0.0.1:{free_port()}"}
    report = json.loads(cli.ok("download", JOB, "out", "--kind", "TaskPreview", "--json", env=node))
    assert sorted(report["downloaded"]) == ["t1/TaskPreview/a.png", f"t2/TaskPreview/{LONG}"]
    assert (cli.cwd / "out" / "t2" / "TaskPreview" / LONG).read_bytes() == b"b" * 200
    again = json.loads(cli.ok("download", JOB, "out", "--kind", "TaskPreview", "--json", env=node))
    assert again["downloaded"] == [] and len(again["skipped"]) == 2

    cli.ok("get", JOB, "--task", "t1", "--kind", "TaskLog", "stdout.txt", "-o", "log.txt", env=node)
    assert (cli.cwd / "log.txt").read_bytes() == b"log"
    assert cli.ok("get", JOB, "--task", "t1", "--kind", "TaskLog", "stdout.txt", "-o", "-", env=node) == "log"
    missing = cli("get", JOB, "--task", "t1", "--kind", "TaskLog", "nope.txt", env=node)
    assert missing.returncode == 3
    # Asked to sign in with an identity instead, it goes to the API (and finds no audience to sign in for).
    assert cli("get", JOB, "--task", "t1", "--kind", "TaskLog", "stdout.txt", "--auth", "identity", env=node).returncode == 4


def test_shell_completion_is_available(cli: Cli) -> None:
    assert "--show-completion" in cli.ok("--help")


# -- the change feed: wait and watch ---------------------------------------------------------


def index_late(app: RunningApp, blob_service: BlobServiceClient, name: str, sequencer: int) -> None:
    blob_service.get_container_client(C).upload_blob(name, b"late", overwrite=True)
    assert app.post_events([real_blob_event(blob_service, C, name, sequencer)]).status_code == 200


def test_wait_exits_0_once_indexed_and_6_on_timeout(cli: Cli, app: RunningApp, blob_service: BlobServiceClient) -> None:
    item = json.loads(cli.ok("wait", JOB, "a.png", "--kind", "TaskPreview", "--task", "t1", "--timeout", "30", "--json"))
    assert item["blobName"] == "t1/$TaskPreview/a.png"
    assert "t1/$TaskLog/stdout.txt" in cli.ok("wait", JOB, "--kind", "TaskLog", "--timeout", "30")

    timed_out = cli("wait", JOB, "never.png", "--kind", "TaskPreview", "--timeout", "1")
    assert timed_out.returncode == 6 and len(timed_out.stderr.strip().splitlines()) == 1 and "timed out" in timed_out.stderr
    assert cli("wait", JOB, "x.png").returncode == 2  # --kind is required

    # Started before the output is indexed: the wait follows the feed and exits 0 when it lands.
    waiting = subprocess.Popen(cli.command("wait", JOB, "late.png", "--kind", "TaskOutput", "--task", "t9", "--timeout", "60", "--json"),
                               cwd=cli.cwd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    index_late(app, blob_service, "t9/$TaskOutput/late.png", 20)
    stdout, stderr = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, stderr
    assert json.loads(stdout)["blobName"] == "t9/$TaskOutput/late.png"


def test_watch_prints_json_lines_until_ctrl_c(cli: Cli, app: RunningApp, blob_service: BlobServiceClient) -> None:
    watcher = subprocess.Popen(cli.command("watch", JOB, "--json", "--from", "start", "--kind", "TaskPreview"), cwd=cli.cwd, env=cli.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watcher.stdout or []], daemon=True).start()
    try:
        # The bound only ends a hang; the lines arrive as soon as the feed has them.
        seen = [json.loads(lines.get(timeout=60)) for _ in range(2)]
        assert sorted(c["output"]["blobName"] for c in seen) == ["t1/$TaskPreview/a.png", f"t2/$TaskPreview/{LONG}"]
        index_late(app, blob_service, "t5/$TaskPreview/new.png", 30)
        change = json.loads(lines.get(timeout=60))
        assert (change["change"], change["output"]["blobName"]) == ("created", "t5/$TaskPreview/new.png")
    finally:
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, stderr
    assert "Traceback" not in stderr
