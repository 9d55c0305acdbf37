"""``batch-outputs``: prepare, save, list, get and inspect Batch job outputs from a shell.

With no flags it talks to the local stack of ``make run`` (API on 127.0.0.1:7071, the key and
the storage account from ``local.settings.json``). ``--api``/``--key``/``--storage`` or
``BATCH_OUTPUTS_API``/``BATCH_OUTPUTS_KEY``/``BATCH_OUTPUTS_STORAGE`` point it elsewhere.
On a compute node ``--job``/``--task`` default to ``AZ_BATCH_JOB_ID``/``AZ_BATCH_TASK_ID``.

Exit codes: 0 ok, 1 other failure, 2 bad input, 3 unknown job or output, 4 authentication
failed, 5 API unreachable. Errors are one line on stderr, never a traceback. Names from storage
are printed as plain text (``display.safe``), never as markup.

No ``from __future__ import annotations`` here: typer reads the commands' annotations at run
time, and older typer (the newest on Python 3.9) cannot resolve postponed ones.
"""

import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Optional, Union
from urllib.parse import quote

import httpx
import typer
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceExistsError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn
from rich.table import Table

from . import environment
from .api import AUTH_FAILED, BAD_INPUT, OK, OTHER, UNKNOWN_JOB, UNREACHABLE, Api, CliError, Config, job_path
from .clients import container_client
from .conventions import ConventionError, destination_path, is_rooted, is_valid_job_id, is_valid_kind, is_valid_task_id
from .display import human_size, plain, safe, say
from .errors import ContainerNotFoundError, OutputNotFoundError, OutputStorageError
from .follow import follow
from .storage import JobOutputStorage, OutputFile, TaskOutputStorage

try:  # typer >= 0.24 vendors click
    from typer._click import exceptions as click_exceptions  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - older typer (Python 3.9)
    from click import exceptions as click_exceptions  # type: ignore[no-redef,unused-ignore]

#: A file this large gets a progress bar.
PROGRESS_THRESHOLD = 4 * 1024 * 1024

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
app = typer.Typer(
    name="batch-outputs",
    help="Save, find and fetch Azure Batch job outputs (Batch File Conventions).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ApiOption = Annotated[Optional[str], typer.Option("--api", help="API base URL [env BATCH_OUTPUTS_API; default http://127.0.0.1:7071]")]
KeyOption = Annotated[Optional[str], typer.Option("--key", help="API key [env BATCH_OUTPUTS_KEY; default: local.settings.json]")]
StorageOption = Annotated[Optional[str], typer.Option(
    "--storage", help="connection string, blob account URL or the job container's SAS URL [env BATCH_OUTPUTS_STORAGE]")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
JobOption = Annotated[Optional[str], typer.Option("--job", help=f"job ID [env {environment.JOB_ID_VARIABLE}]")]
TaskOption = Annotated[Optional[str], typer.Option("--task", help=f"task ID [env {environment.TASK_ID_VARIABLE} for save]")]


def check_job(job_id: Optional[str]) -> str:
    if not job_id:
        raise CliError(f"no job: give one or set {environment.JOB_ID_VARIABLE}", BAD_INPUT)
    if not is_valid_job_id(job_id):
        raise CliError(f"invalid job ID {job_id!r}: 1-64 letters, digits, '-' or '_' ({{scheduleId}}:job-{{n}} for schedule jobs)", BAD_INPUT)
    return job_id


def check_task(task_id: Optional[str]) -> Optional[str]:
    if task_id is not None and not is_valid_task_id(task_id):
        raise CliError(f"invalid task ID {task_id!r}: 1-64 letters, digits, '-' or '_'", BAD_INPUT)
    return task_id


def check_kind(kind: Optional[str]) -> Optional[str]:
    if kind is not None and not is_valid_kind(kind):
        raise CliError(f"invalid kind {kind!r}", BAD_INPUT)
    return kind


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value), highlight=False)


def transfer_progress() -> Progress:
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=err, transient=True)


# -- commands ------------------------------------------------------------------------------


@app.command()
def prepare(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None,
            storage: StorageOption = None, as_json: JsonOption = False) -> None:
    """Create the job's output container with your storage credentials, then register the job ID."""
    check_job(job)
    config = Config(api, key, storage)
    container = container_client(config.resolved_storage(), job)
    try:
        container.create_container()
        created = True
    except ResourceExistsError:
        created = False
    summary = Api(config).call("PUT", job_path(job))
    if as_json:
        print_json({**summary, "containerCreated": created})
    else:
        say(out, f"job {job} -> container {summary['container']} ({'created' if created else 'already there'}), registered")


def _target(job_id: str, task_id: Optional[str], per_node: Optional[bool], storage: Optional[str]) -> Union[TaskOutputStorage, JobOutputStorage]:
    try:
        node_id = environment.node_for(task_id, per_node)
    except environment.NodeIdMissingError as exc:
        raise CliError(f"{exc}; or give --no-per-node", BAD_INPUT) from exc
    client = container_client(Config(None, None, storage).resolved_storage(), job_id)
    if task_id is None:
        return JobOutputStorage(client, job_id)
    writer = os.environ.get(environment.NODE_ID_VARIABLE) if environment.shares_task_id(task_id) else None
    return TaskOutputStorage(client, job_id, task_id, node_id=node_id, writer=writer or None)


@app.command()
def save(
    file: Annotated[Path, typer.Argument(help="the file to upload")],
    kind: Annotated[str, typer.Option("--kind", help="output kind, e.g. TaskOutput, TaskPreview, TaskLog, JobOutput")],
    job: JobOption = None,
    task: TaskOption = None,
    destination: Annotated[Optional[str], typer.Option("--as", help="path under the kind (default: the file's relative path)")] = None,
    per_node: Annotated[Optional[bool], typer.Option(
        "--per-node/--no-per-node",
        help="save under {task}/${kind}/{AZ_BATCH_NODE_ID}/ [default: on for job preparation/release and multi-instance tasks]")] = None,
    tracked: Annotated[bool, typer.Option("--tracked", help="follow a growing file (a log): commit what it gained every --interval")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="seconds between flushes with --tracked (.NET's default: 60)")] = 60.0,
    wait_pid: Annotated[Optional[int], typer.Option("--wait-pid", help="with --tracked: stop when this process exits")] = None,
    idle: Annotated[float, typer.Option("--idle", help="with --tracked: stop after the file is unchanged this many seconds (0 = never)")] = 0.0,
    storage: StorageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a file by convention (TaskOutputStorage.SaveAsync); --tracked follows a log (SaveTrackedAsync)."""
    job_id = check_job(job or os.environ.get(environment.JOB_ID_VARIABLE))
    task_id = check_task(task or os.environ.get(environment.TASK_ID_VARIABLE))
    check_kind(kind)
    if not tracked and not file.is_file():
        raise CliError(f"no such file: {file}", BAD_INPUT)
    if task_id is None and kind.startswith("Task"):
        raise CliError(f"kind {kind} is a task kind: give --task or set {environment.TASK_ID_VARIABLE}", BAD_INPUT)
    if destination is None and is_rooted(str(file)):
        raise CliError(f"{file} is a rooted path: give --as PATH (where it goes under the kind), or a relative path", BAD_INPUT)
    target = _target(job_id, task_id, per_node, storage)
    path = destination or destination_path(str(file))
    if tracked:
        follow(target, kind, file, path, interval, wait_pid, idle, err)
        result = target.get(kind, path)
    elif file.stat().st_size >= PROGRESS_THRESHOLD:
        with transfer_progress() as progress:
            bar = progress.add_task(safe(f"upload {file.name}"), total=file.stat().st_size)
            result = target.save(kind, file, path,
                                 progress_hook=lambda current, total: progress.update(bar, completed=current))
    else:
        result = target.save(kind, file, path)
    report_saved(result, target, as_json)


def report_saved(result: OutputFile, target: Union[TaskOutputStorage, JobOutputStorage], as_json: bool) -> None:
    container = target.container.container_name
    if as_json:
        print_json({"jobId": target.job_id, "taskId": result.task_id, "kind": result.kind, "path": result.path,
                    "blobName": result.blob_name, "container": container, "size": result.size, "url": result.url})
    else:
        say(out, f"saved {result.blob_name} ({human_size(result.size)}) in {container}")


@app.command("ls")
def list_outputs(
    job: Annotated[str, typer.Argument(help="job ID")],
    task: TaskOption = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="only this kind")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="only paths starting with this")] = "",
    api: ApiOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a job's outputs (all, one task's, one kind's) from the index."""
    check_job(job)
    check_task(task)
    check_kind(kind)
    client = Api(Config(api, key, None))
    client.ensure_job(job)
    params: dict[str, Any] = {"maxpagesize": 1000, **({"kind": kind} if kind else {}), **({"prefix": prefix} if prefix else {})}
    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), console=err, transient=True,
                  disable=as_json) as progress:
        if task:
            items = client.pages(f"{job_path(job)}/tasks/{quote(task, safe='')}/outputs", params, progress)
        else:
            items = client.pages(f"{job_path(job)}/outputs", params, progress)
            items += client.pages(f"{job_path(job)}/task-outputs", params, progress)
    if as_json:
        print_json(items)
        return
    table = Table("task", "kind", "path", "size", "created", title=plain(f"{len(items)} outputs of {job}"))
    for item in items:
        table.add_row(plain(item["taskId"] or "-"), plain(item["kind"]), plain(item["path"]), human_size(item["size"]),
                      plain(item["createdAt"] or ""))
    out.print(table)


@app.command()
def get(
    job: Annotated[str, typer.Argument(help="job ID")],
    path: Annotated[str, typer.Argument(help="the output's path under its kind")],
    kind: Annotated[str, typer.Option("--kind", help="output kind")],
    task: TaskOption = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="file to write ('-' = stdout; default: the name)")] = None,
    api: ApiOption = None,
    key: KeyOption = None,
) -> None:
    """Download one output through the API's read-only downloadUrl."""
    check_job(job)
    check_task(task)
    check_kind(kind)
    owner = job_path(job) + (f"/tasks/{quote(task, safe='')}" if task else "")
    item = Api(Config(api, key, None)).call("GET", f"{owner}/outputs/{quote(kind, safe='')}/{quote(path, safe='/')}")
    target = output or Path(path).name
    try:
        with httpx.stream("GET", item["downloadUrl"], timeout=60) as response:
            if response.status_code != 200:
                raise CliError(f"download failed: storage answered {response.status_code}", OTHER)
            if target == "-":
                for chunk in response.iter_bytes():
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                return
            with open(target, "wb") as handle, transfer_progress() as progress:
                bar = progress.add_task(safe(f"get {Path(path).name}"), total=item["size"], visible=item["size"] >= PROGRESS_THRESHOLD)
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    progress.advance(bar, len(chunk))
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach storage for the download: {exc}", UNREACHABLE) from exc
    say(err, f"wrote {target} ({human_size(item['size'])})")


def _limit(n: int) -> str:
    return str(n) if n else "no limit"


@app.command()
def summary(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None,
            as_json: JsonOption = False) -> None:
    """A job's outputs and bytes per kind, tasks, quota and rejections."""
    check_job(job)
    body = Api(Config(api, key, None)).ensure_job(job)
    if as_json:
        print_json(body)
        return
    say(out, f"job {body['jobId'] or job}  container {body['container']}  tasks {body['tasks']}  last indexed {body['lastIndexedAt'] or '-'}")
    table = Table("kind", "outputs", "bytes")
    for name, counts in body["kinds"].items():
        table.add_row(plain(name), str(counts["outputs"]), human_size(counts["bytes"]))
    table.add_row("total", str(body["usage"]["outputs"]), human_size(body["usage"]["bytes"]), style="bold")
    out.print(table)
    quota = body["quota"]
    say(out, f"quota: outputs {_limit(quota['maxOutputs'])}, bytes {_limit(quota['maxBytes'])}, per task {_limit(quota['maxOutputsPerTask'])}; "
             f"rejected {body['rejections']['outputs']} ({human_size(body['rejections']['bytes'])})")
    lag = body.get("lag")
    if lag is not None:
        say(out, "lag over the last hour: " + (f"p50 {lag['p50']} s, p95 {lag['p95']} s, max {lag['max']} s ({lag['events']} events)"
                                               if lag["events"] else "no event indexed"))
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted((body.get("skippedByReason") or {}).items()))
    if "handedBack" in body:
        say(out, f"handed back for redelivery: {body['handedBack']}; skipped: {skipped or 'none'}")


@app.command()
def quota(
    job: Annotated[str, typer.Argument(help="job ID")],
    max_outputs: Annotated[Optional[int], typer.Option("--max-outputs", min=0, help="0 = no limit")] = None,
    max_bytes: Annotated[Optional[int], typer.Option("--max-bytes", min=0, help="0 = no limit")] = None,
    max_outputs_per_task: Annotated[Optional[int], typer.Option("--max-outputs-per-task", min=0, help="0 = no limit")] = None,
    api: ApiOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a job's limits, or change them (raising one admits rejected outputs at once)."""
    check_job(job)
    client = Api(Config(api, key, None))
    update = {name: value for name, value in (("maxOutputs", max_outputs), ("maxBytes", max_bytes),
                                              ("maxOutputsPerTask", max_outputs_per_task)) if value is not None}
    body = client.call("PUT", f"{job_path(job)}/quota", json=update) if update else client.call("GET", f"{job_path(job)}/quota")
    if as_json:
        print_json(body)
        return
    say(out, f"{job}: outputs {_limit(body['maxOutputs'])}, bytes {_limit(body['maxBytes'])}, per task {_limit(body['maxOutputsPerTask'])}")


@app.command()
def reindex(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None,
            as_json: JsonOption = False) -> None:
    """Rebuild the job's index from its container: add missing, fix changed, remove vanished outputs."""
    check_job(job)
    body = Api(Config(api, key, None)).call("POST", f"{job_path(job)}/reindex")
    if as_json:
        print_json(body)
        return
    say(out, f"{job}: added {body['added']}, fixed {body['fixed']}, removed {body['removed']}, unchanged {body['unchanged']}")


_DURATION = {"m": 60, "h": 3600, "d": 86400}


def parse_since(value: Optional[str]) -> Optional[str]:
    """``--since``: an ISO 8601 date or time (UTC when it names no offset), or an age such as
    ``30m``, ``24h`` or ``7d``; the API's ISO 8601 form."""
    if value is None:
        return None
    text = value.strip()
    now = datetime.now(timezone.utc)
    if len(text) > 1 and text[-1].lower() in _DURATION and text[:-1].isdigit():
        when = now - timedelta(seconds=int(text[:-1]) * _DURATION[text[-1].lower()])
    else:
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
        except ValueError:
            raise CliError(f"invalid --since {value!r}: an ISO 8601 time (2026-11-23T08:00:00Z) or an age (30m, 24h, 7d)",
                           BAD_INPUT) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _merge_replay(total: dict[str, Any], page: dict[str, Any]) -> None:
    for name, count in page["blobs"].items():
        total["blobs"][name] = total["blobs"].get(name, 0) + count
    total["events"] += page["events"]
    counts = ("events", "indexed", "unchanged", "rejected", "skipped")
    for reason, outcome in page["byReason"].items():
        mine = total["byReason"].setdefault(reason, {**dict.fromkeys(counts, 0), "skippedByReason": {}})
        for name in counts:
            mine[name] += outcome[name]
        for why, count in outcome["skippedByReason"].items():
            mine["skippedByReason"][why] = mine["skippedByReason"].get(why, 0) + count


@app.command("replay-deadletters")
def replay_deadletters(
    since: Annotated[Optional[str], typer.Option("--since", help="only what was dead-lettered since: ISO 8601 time or an age (30m, 24h, 7d)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="read and count, index and mark nothing")] = False,
    api: ApiOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index the events Event Grid dead-lettered, and mark them replayed (a second run changes nothing)."""
    params: dict[str, Any] = {"dryRun": "true" if dry_run else "false"}
    when = parse_since(since)
    if when:
        params["since"] = when
    client = Api(Config(api, key, None))
    total: dict[str, Any] = {"dryRun": dry_run, "container": None, "blobs": {}, "events": 0, "byReason": {}}
    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), console=err, transient=True,
                  disable=as_json) as progress:
        task = progress.add_task("replaying dead letters", total=None)
        while True:
            page = client.call("POST", "/api/admin/replay-deadletters", params=params)
            total["container"] = page["container"]
            _merge_replay(total, page)
            progress.update(task, description=f"{total['blobs'].get('listed', 0)} dead-letter blobs looked at")
            if not page.get("nextMarker"):
                break
            params["marker"] = page["nextMarker"]
    if as_json:
        print_json(total)
        return
    blobs = total["blobs"]
    say(out, f"{'dry run: ' if dry_run else ''}{total['container']}: {blobs.get('listed', 0)} blobs, "
             f"{blobs.get('replayed', 0)} {'to replay' if dry_run else 'replayed'}, {blobs.get('alreadyReplayed', 0)} already replayed, "
             f"{blobs.get('beforeSince', 0)} before --since, {blobs.get('unreadable', 0)} unreadable; {total['events']} events")
    if total["byReason"]:
        table = Table("dead-letter reason", "events", "indexed", "unchanged", "rejected", "skipped")
        for reason, o in sorted(total["byReason"].items()):
            skipped = ", ".join(f"{why} {n}" for why, n in sorted(o["skippedByReason"].items()))
            table.add_row(plain(reason), str(o["events"]), str(o["indexed"]), str(o["unchanged"]), str(o["rejected"]),
                          plain(f"{o['skipped']} ({skipped})" if skipped else str(o["skipped"])))
        out.print(table)


# -- entry point ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> None:
    say(err, f"batch-outputs: {message}")
    sys.exit(code)


def _storage_failure(exc: Exception) -> None:
    if isinstance(exc, ContainerNotFoundError):
        _fail(f"{exc} (run `batch-outputs prepare JOB`)", UNKNOWN_JOB)
    if isinstance(exc, OutputNotFoundError):
        _fail(str(exc), UNKNOWN_JOB)
    if isinstance(exc, ClientAuthenticationError):
        _fail(f"storage refused the credentials: {exc.reason or exc.message.splitlines()[0]}", AUTH_FAILED)
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        _fail(f"storage answered {exc.status_code}: {exc.reason}", AUTH_FAILED if exc.status_code == 403 else OTHER)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    _fail(f"storage: {first}", UNREACHABLE if "connect" in first.lower() else OTHER)


def main(argv: Optional[list[str]] = None) -> None:
    """The console script: runs a command, maps every failure to one line and an exit code."""
    try:
        result = app(args=argv, prog_name="batch-outputs", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted", OTHER)
    except click_exceptions.UsageError as exc:
        _fail(exc.format_message(), BAD_INPUT)
    except click_exceptions.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code or OTHER)
    except CliError as exc:
        _fail(str(exc), exc.exit_code)
    except ConventionError as exc:
        _fail(str(exc), BAD_INPUT)
    except (AzureError, OutputStorageError) as exc:
        _storage_failure(exc)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # the promise: one line, never a traceback
        _fail(f"{type(exc).__name__}: {exc}", OTHER)
    sys.exit(result if isinstance(result, int) else OK)


if __name__ == "__main__":
    main()
