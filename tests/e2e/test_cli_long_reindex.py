"""`batch-outputs reindex` of a job too large for its request: the CLI waits on the long-running
operation (202 + Operation-Location), shows its progress, then prints what the reindex changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite
from shared.domain.conventions import container_name

from ..integration.test_long_reindex import NAMES, long_settings, seed, unique
from ..support.stack import RunningApp
from .test_cli import Cli


def test_reindex_waits_on_the_operation_with_a_progress_bar_then_prints_the_result(
        serve: Callable[..., RunningApp], azurite: Azurite, blob_service: BlobServiceClient, tmp_path: Path) -> None:
    app = serve(long_settings(azurite))  # every reindex outlives its request (0 s): a 202
    job = unique("cli-long-reindex")
    seed(app, blob_service, job)  # 24 blobs the index does not know, one row whose blob is gone
    cli = Cli(app, azurite, tmp_path)
    # Rich draws its bar only on a terminal: these make stderr one for the CLI.
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}

    result = cli("reindex", job, env=terminal)
    assert result.returncode == 0, result.stderr
    assert f"{job}: added {len(NAMES)}, fixed 0, removed 1, unchanged 0" in result.stdout
    # The bar is shown only once the API answered 202 (the operation's statuses move it); its
    # last drawing is the finished operation's.
    assert f"reindexing {job}: done" in result.stderr and "rows checked" in result.stderr and "100 %" in result.stderr

    other = unique("cli-long-reindex")
    seed(app, blob_service, other)
    body = json.loads(cli.ok("reindex", other, "--json", env=terminal))
    assert body == {"jobId": other, "container": container_name(other), "added": len(NAMES), "fixed": 0,
                    "removed": 1, "unchanged": 0}
