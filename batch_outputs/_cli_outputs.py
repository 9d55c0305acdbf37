"""The CLI's commands that fetch outputs or follow them as they land: get, download, wait, watch.

``get`` and ``download`` go through ``OutputIndexClient`` (read-only SAS links) or, on a node
with storage credentials and no API key, read the blobs themselves. ``wait`` and ``watch``
follow the job's change feed.
"""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional, Union

import typer

from . import _download
from ._cli_common import (
    PROGRESS_THRESHOLD,
    ApiOption,
    AudienceOption,
    AuthOption,
    JsonOption,
    KeyOption,
    OutputOption,
    QueryOption,
    StorageOption,
    TaskOption,
    app,
    check_job,
    check_kind,
    check_task,
    err,
    out,
    transfer_progress,
)
from ._cli_config import BAD_INPUT, OTHER, TIMED_OUT, CliError, Config, api_errors, index_client
from ._output import emit, output_format
from .clients import container_client
from .display import human_size, safe, say
from .storage import JobOutputStorage, TaskOutputStorage


def _storage_target(config: Config, job_id: str, task_id: Optional[str]) -> Union[TaskOutputStorage, JobOutputStorage]:
    """The node's own view of the job's container (no API): its storage credentials."""
    client = container_client(config.resolved_storage(), job_id)
    return JobOutputStorage(client, job_id) if task_id is None else TaskOutputStorage(client, job_id, task_id)


@app.command()
def get(
    job: Annotated[str, typer.Argument(help="job ID")],
    path: Annotated[str, typer.Argument(help="the output's path under its kind")],
    kind: Annotated[str, typer.Option("--kind", help="output kind")],
    task: TaskOption = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="file to write ('-' = stdout; default: the name)")] = None,
    api: ApiOption = None,
    key: KeyOption = None,
    auth: AuthOption = None,
    audience: AudienceOption = None,
    storage: StorageOption = None,
) -> None:
    """Download one output: through the API's read-only downloadUrl, or, on a node with storage
    credentials (BATCH_OUTPUTS_STORAGE) and no API key, straight from its blob."""
    check_job(job)
    check_task(task)
    check_kind(kind)
    config = Config(api, key, storage, auth, audience)
    target = output or Path(path).name
    if config.reads_blobs_directly():
        found = _storage_target(config, job, task).get(kind, path)
        if target == "-":
            found._container.download_blob(found.blob_name).readinto(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            found.download_to(target)
        if target != "-":
            say(err, f"wrote {target} ({human_size(found.size)})")
        return
    with api_errors(config), index_client(config) as client:
        if target == "-":
            item = client.download_output(job, kind, path, sys.stdout.buffer, task_id=task)
            sys.stdout.buffer.flush()
            return
        with transfer_progress() as progress:
            bar = progress.add_task(safe(f"get {Path(path).name}"), total=None, visible=False)

            def hook(done: int, total: int) -> None:
                progress.update(bar, completed=done, total=total, visible=total >= PROGRESS_THRESHOLD)

            item = client.download_output(job, kind, path, target, task_id=task, progress_hook=hook)
    say(err, f"wrote {target} ({human_size(item.size)})")


@app.command()
def download(
    job: Annotated[str, typer.Argument(help="job ID")],
    dest: Annotated[Path, typer.Argument(help="folder to download into ({task}/{kind}/{path}; job outputs {kind}/{path})")],
    kind: Annotated[Optional[str], typer.Option("--kind", help="only this kind")] = None,
    task: TaskOption = None,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="only paths starting with this")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, max=64, help="downloads at once")] = 8,
    api: ApiOption = None,
    key: KeyOption = None,
    auth: AuthOption = None,
    audience: AudienceOption = None,
    storage: StorageOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a job's outputs (all, one task's, one kind's) into a folder, in parallel; files
    already there with the same size and ETag are skipped, so a re-run resumes."""
    check_job(job)
    check_task(task)
    check_kind(kind)
    fmt = output_format(output, as_json)
    config = Config(api, key, storage, auth, audience)
    with transfer_progress() as progress:
        bar = progress.add_task(safe(f"download {job}"), total=None)

        def hook(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        if config.reads_blobs_directly():
            container = container_client(config.resolved_storage(), job)
            items = _download.container_items(container, job, kind=kind, task_id=task, prefix=prefix)
            report = _download.download_items(items, dest, _download.blob_fetcher(container), max_concurrency=max_concurrency,
                                               progress_hook=hook)
        else:
            with api_errors(config), index_client(config) as client:
                report = client.download_outputs(job, dest, kind=kind, task_id=task, prefix=prefix, max_concurrency=max_concurrency,
                                                 progress_hook=hook)

    def human() -> None:
        say(out, f"{job}: downloaded {len(report.downloaded)} ({human_size(report.bytes)}), skipped {len(report.skipped)} "
                 f"already there, refused {len(report.refused)}, failed {len(report.failed)} -> {dest}")
        for name in report.refused:
            say(err, f"refused (would leave {dest}): {name}")
        for name, why in report.failed:
            say(err, f"failed: {name}: {why}")

    emit(out, report.as_dict(), fmt, query, human)
    if not report.ok:
        raise typer.Exit(OTHER)


@app.command()
def wait(
    job: Annotated[str, typer.Argument(help="job ID")],
    path: Annotated[Optional[str], typer.Argument(help="the output's path under its kind (default: the first output of the kind)")] = None,
    kind: Annotated[str, typer.Option("--kind", help="output kind")] = "",
    task: TaskOption = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0, help="seconds to wait (default: no limit); exit 6 when they pass")] = None,
    api: ApiOption = None,
    key: KeyOption = None,
    auth: AuthOption = None,
    audience: AudienceOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait until an output is indexed, then print it (exit 0); exit 6 when --timeout passes first."""
    check_job(job)
    check_task(task)
    if not kind:
        raise CliError("give --kind (the kind of the output to wait for)", BAD_INPUT)
    check_kind(kind)
    fmt = output_format(output, as_json)
    config = Config(api, key, None, auth, audience)
    with api_errors(config), index_client(config) as client:
        try:
            item = client.wait_for_output(job, kind, path, task_id=task, timeout=timeout)
        except TimeoutError as exc:
            raise CliError(f"timed out after {timeout} s: no {kind} output {path or ''} of job {job} indexed", TIMED_OUT) from exc
    emit(out, item.as_dict(), fmt, query, lambda: say(out, f"indexed {item.blob_name} ({human_size(item.size)})"))


@app.command()
def watch(
    job: Annotated[str, typer.Argument(help="job ID")],
    kind: Annotated[Optional[str], typer.Option("--kind", help="only this kind")] = None,
    task: TaskOption = None,
    start: Annotated[str, typer.Option("--from", help="'now' (changes from now on) or 'start' (every change the feed retains)")] = "now",
    api: ApiOption = None,
    key: KeyOption = None,
    auth: AuthOption = None,
    audience: AudienceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object a line per change")] = False,
) -> None:
    """Print the job's outputs as they are created, updated, deleted, rejected or admitted, until Ctrl-C."""
    check_job(job)
    check_task(task)
    check_kind(kind)
    if start not in ("now", "start"):
        raise CliError(f"invalid --from {start!r}: now or start", BAD_INPUT)
    config = Config(api, key, None, auth, audience)
    try:
        with api_errors(config), index_client(config) as client:
            cursor: Optional[str] = None
            more = True
            while True:
                # The first read (and a read while the feed holds more) answers at once; the others long-poll.
                batch = client.changes(job, cursor=cursor, start=start, kind=kind, task_id=task, wait=None if more else 30)
                for change in batch.changes:
                    if as_json:
                        sys.stdout.write(json.dumps(change.as_dict()) + "\n")
                    else:
                        say(out, f"{change.at or ''}  {change.change:<8}  {change.output.blob_name}  {human_size(change.output.size)}")
                sys.stdout.flush()
                if cursor is None:  # the feed's position is taken: every later change will be printed
                    sys.stderr.write(f"watching job {job} from {start}; Ctrl-C stops\n")
                    sys.stderr.flush()
                cursor, more = batch.cursor, batch.more
    except KeyboardInterrupt:
        return
