"""``make demo`` as issue 21's "done when" tries it: ``batch-outputs watch JOB --json`` started
before the demo prints every output the demo indexes, and a second run's deletes, each once."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import uuid
from collections import Counter
from pathlib import Path

from devtools import demo
from devtools.azurite import Azurite

from ..support.stack import TEST_KEY, RunningApp
from .test_cli import Cli
from .test_local_stack import local_source  # noqa: F401  (the fixture)

FRAMES = 6


def test_watch_started_before_the_demo_prints_each_output_once_and_a_rerun_deletes(
        app: RunningApp, azurite: Azurite, tmp_path: Path, local_source) -> None:  # noqa: F811
    proxy, webhook, _ = local_source
    webhook.endpoint = f"{app.url}/api/events"
    job = f"shot-{uuid.uuid4().hex[:8]}"
    cli = Cli(app, azurite, tmp_path)
    watcher = subprocess.Popen(cli.command("watch", job, "--json"), cwd=cli.cwd, env=cli.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watcher.stdout or []], daemon=True).start()
    assert watcher.stderr is not None
    status = watcher.stderr.readline()  # started "before the demo": once its feed position is taken
    assert status.startswith(f"watching job {job} from now"), status
    uploads, extra = demo.job_uploads(FRAMES)
    names = [u.name for u in uploads + extra]
    argv = ["--app", app.url, "--key", TEST_KEY, "--frames", str(FRAMES), "--job-id", job,
            "--blobs", proxy.connection_string(), "--timeout", "120"]
    try:
        assert demo.main(argv) == 0
        # The bound only ends a hang: each line comes as soon as the feed has it.
        first = [json.loads(lines.get(timeout=60)) for _ in names]
        assert demo.main(argv) == 0
        second = [json.loads(lines.get(timeout=60)) for _ in range(2 * len(names))]
    finally:
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=60)
    assert watcher.returncode == 0 and "Traceback" not in stderr, stderr
    assert lines.empty()

    def tally(changes: list[dict]) -> Counter[tuple[str, str]]:
        return Counter((c["change"], c["output"]["blobName"]) for c in changes)

    rejected = {u.name for u in extra}  # the per-task quota's two extra tiles
    expected = Counter({("rejected" if name in rejected else "created", name): 1 for name in names})
    assert tally(first) == expected
    assert tally(second) == Counter({("deleted", name): 1 for name in names}) + expected
    assert all(c["output"]["jobId"] == job for c in first + second)
