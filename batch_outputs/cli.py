"""``batch-outputs``: prepare, save, list, get and inspect Batch job outputs from a shell.

With no flags it talks to the local stack of ``make run`` (API on 127.0.0.1:7071, the key and
the storage account from ``local.settings.json``). ``--api``/``--key``/``--storage`` or
``BATCH_OUTPUTS_API``/``BATCH_OUTPUTS_KEY``/``BATCH_OUTPUTS_STORAGE`` point it elsewhere.
On a compute node ``--job``/``--task`` default to ``AZ_BATCH_JOB_ID``/``AZ_BATCH_TASK_ID``.

Exit codes: 0 ok, 1 other failure, 2 bad input, 3 unknown job or output, 4 authentication
failed, 5 API unreachable. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceExistsError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn
from rich.table import Table
from typer._click import exceptions as click_exceptions

from shared.conventions import ConventionError, is_valid_job_id, is_valid_kind, is_valid_task_id
from shared.settings import LOCAL_SETTINGS_FILE

from .storage import JOB_ID_VARIABLE, TASK_ID_VARIABLE, JobOutputStorage, OutputStorageError, TaskOutputStorage, container_client

DEFAULT_API = "http://127.0.0.1:7071"
#: A file this large gets a progress bar.
PROGRESS_THRESHOLD = 4 * 1024 * 1024

OK, OTHER, BAD_INPUT, UNKNOWN_JOB, AUTH_FAILED, UNREACHABLE = 0, 1, 2, 3, 4, 5

out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)
app = typer.Typer(
    name="batch-outputs",
    help="Save, find and fetch Azure Batch job outputs (Batch File Conventions).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = OTHER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- configuration -------------------------------------------------------------------------


def _local_settings() -> dict[str, str]:
    for candidate in (Path.cwd() / "local.settings.json", LOCAL_SETTINGS_FILE):
        if candidate.is_file():
            try:
                return {k: str(v) for k, v in (json.loads(candidate.read_text("utf-8")).get("Values") or {}).items()}
            except (OSError, json.JSONDecodeError):
                return {}
    return {}


@dataclass
class Config:
    api: str | None
    key: str | None
    storage: str | None

    def resolved_api(self) -> str:
        return (self.api or os.environ.get("BATCH_OUTPUTS_API") or DEFAULT_API).rstrip("/")

    def resolved_key(self) -> str | None:
        if self.key or os.environ.get("BATCH_OUTPUTS_KEY"):
            return self.key or os.environ["BATCH_OUTPUTS_KEY"]
        keys = [k.strip() for k in _local_settings().get("API_KEYS", "").split(",") if k.strip()]
        return keys[0] if keys else None

    def resolved_storage(self) -> str:
        storage = self.storage or os.environ.get("BATCH_OUTPUTS_STORAGE") or _local_settings().get("OUTPUTS_STORAGE")
        if not storage:
            raise CliError("no storage account: give --storage or BATCH_OUTPUTS_STORAGE (a connection string or blob URL)", BAD_INPUT)
        return storage


ApiOption = Annotated[str | None, typer.Option("--api", help="API base URL [env BATCH_OUTPUTS_API; default http://127.0.0.1:7071]")]
KeyOption = Annotated[str | None, typer.Option("--key", help="API key [env BATCH_OUTPUTS_KEY; default: local.settings.json]")]
StorageOption = Annotated[str | None, typer.Option("--storage", help="connection string or blob account URL [env BATCH_OUTPUTS_STORAGE]")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
JobOption = Annotated[str | None, typer.Option("--job", help=f"job ID [env {JOB_ID_VARIABLE}]")]
TaskOption = Annotated[str | None, typer.Option("--task", help=f"task ID [env {TASK_ID_VARIABLE} for save]")]


def check_job(job_id: str | None) -> str:
    if not job_id:
        raise CliError(f"no job: give one or set {JOB_ID_VARIABLE}", BAD_INPUT)
    if not is_valid_job_id(job_id):
        raise CliError(f"invalid job ID {job_id!r}: 1-64 letters, digits, '-' or '_' ({{scheduleId}}:job-{{n}} for schedule jobs)", BAD_INPUT)
    return job_id


def check_task(task_id: str | None) -> str | None:
    if task_id is not None and not is_valid_task_id(task_id):
        raise CliError(f"invalid task ID {task_id!r}: 1-64 letters, digits, '-' or '_'", BAD_INPUT)
    return task_id


def check_kind(kind: str | None) -> str | None:
    if kind is not None and not is_valid_kind(kind):
        raise CliError(f"invalid kind {kind!r}", BAD_INPUT)
    return kind


# -- the API -------------------------------------------------------------------------------


class Api:
    def __init__(self, config: Config) -> None:
        self.base = config.resolved_api()
        key = config.resolved_key()
        self.http = httpx.Client(base_url=self.base, headers={"x-functions-key": key} if key else {}, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the API at {self.base}: {exc or type(exc).__name__}", UNREACHABLE) from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}"
            code = {400: BAD_INPUT, 401: AUTH_FAILED, 403: AUTH_FAILED, 404: UNKNOWN_JOB}.get(response.status_code, OTHER)
            if response.status_code == 401:
                message = f"the API at {self.base} refused the key (401): check --key or BATCH_OUTPUTS_KEY"
            raise CliError(message, code)
        return response.json()

    def pages(self, path: str, params: dict[str, Any], progress: Progress | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        body = self.call("GET", path, params=params)
        task = progress.add_task("listing", total=None) if progress else None
        while True:
            items.extend(body["value"])
            if progress is not None and task is not None:
                progress.update(task, completed=len(items), description=f"listed {len(items)}")
            if "nextLink" not in body:
                return items
            body = self.call("GET", body["nextLink"])

    def ensure_job(self, job_id: str) -> dict[str, Any]:
        try:
            return self.call("GET", f"/api/jobs/{quote(job_id, safe='')}")
        except CliError as exc:
            if exc.exit_code == UNKNOWN_JOB:
                raise CliError(f"unknown job {job_id!r}: nothing of it was ever indexed", UNKNOWN_JOB) from exc
            raise


def job_path(job_id: str) -> str:
    return f"/api/jobs/{quote(job_id, safe='')}"


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value), highlight=False)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def transfer_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
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
        out.print(f"job {job} -> container {summary['container']} ({'created' if created else 'already there'}), registered")


@app.command()
def save(
    file: Annotated[Path, typer.Argument(help="the file to upload")],
    kind: Annotated[str, typer.Option("--kind", help="output kind, e.g. TaskOutput, TaskPreview, TaskLog, JobOutput")],
    job: JobOption = None,
    task: TaskOption = None,
    destination: Annotated[str | None, typer.Option("--as", help="path under the kind (default: the file's relative path)")] = None,
    tracked: Annotated[bool, typer.Option("--tracked", help="follow a growing file (a log): commit what it gained every --interval")] = False,
    interval: Annotated[float, typer.Option("--interval", help="seconds between flushes with --tracked")] = 5.0,
    wait_pid: Annotated[int | None, typer.Option("--wait-pid", help="with --tracked: stop when this process exits")] = None,
    idle: Annotated[float, typer.Option("--idle", help="with --tracked: stop after the file is unchanged this many seconds (0 = never)")] = 0.0,
    storage: StorageOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a file by convention (TaskOutputStorage.SaveAsync); --tracked follows a log (SaveTrackedAsync)."""
    job_id = check_job(job or os.environ.get(JOB_ID_VARIABLE))
    task_id = check_task(task or os.environ.get(TASK_ID_VARIABLE))
    check_kind(kind)
    if not tracked and not file.is_file():
        raise CliError(f"no such file: {file}", BAD_INPUT)
    if task_id is None and kind.startswith("Task"):
        raise CliError(f"kind {kind} is a task kind: give --task or set {TASK_ID_VARIABLE}", BAD_INPUT)
    client = container_client(Config(None, None, storage).resolved_storage(), job_id)
    target: TaskOutputStorage | JobOutputStorage = (
        TaskOutputStorage(client, job_id, task_id) if task_id else JobOutputStorage(client, job_id)
    )
    if not client.exists():
        raise CliError(f"job {job_id!r} has no output container {client.container_name}: run `batch-outputs prepare {job_id}` first", UNKNOWN_JOB)
    if tracked:
        saved_name = follow(target, kind, file, destination, interval, wait_pid, idle)
        result = target.get(kind, saved_name.split("$" + kind + "/", 1)[1])
    elif file.stat().st_size >= PROGRESS_THRESHOLD:
        with transfer_progress() as progress:
            bar = progress.add_task(f"upload {file.name}", total=file.stat().st_size)
            result = target.save(kind, file, destination,
                                 progress_hook=lambda current, total: progress.update(bar, completed=current))
    else:
        result = target.save(kind, file, destination)
    if as_json:
        print_json({"jobId": job_id, "taskId": result.task_id, "kind": result.kind, "path": result.path,
                    "blobName": result.blob_name, "container": client.container_name, "size": result.size, "url": result.url})
    else:
        out.print(f"saved {result.blob_name} ({human_size(result.size)}) in {client.container_name}")


def follow(target: TaskOutputStorage | JobOutputStorage, kind: str, file: Path, destination: str | None,
           interval: float, wait_pid: int | None, idle: float) -> str:
    """Follow ``file`` until SIGINT/SIGTERM, ``wait_pid`` exits or the file stays idle; flush."""
    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with target.save_tracked(kind, file, destination, interval=timedelta(seconds=interval)) as tracked:
            err.print(f"following {file} into {tracked.blob_name} (Ctrl-C or SIGTERM to finish)")
            last_change, last_size = time.monotonic(), -1
            while not stop["now"]:
                time.sleep(min(0.2, interval))
                if wait_pid is not None and not _alive(wait_pid):
                    break
                size = file.stat().st_size if file.exists() else -1
                if size != last_size:
                    last_change, last_size = time.monotonic(), size
                elif idle and time.monotonic() - last_change >= idle:
                    break
        return tracked.blob_name
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@app.command("ls")
def list_outputs(
    job: Annotated[str, typer.Argument(help="job ID")],
    task: TaskOption = None,
    kind: Annotated[str | None, typer.Option("--kind", help="only this kind")] = None,
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
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True, disable=as_json) as progress:
        if task:
            items = client.pages(f"{job_path(job)}/tasks/{quote(task, safe='')}/outputs", params, progress)
        else:
            items = client.pages(f"{job_path(job)}/outputs", params, progress)
            items += client.pages(f"{job_path(job)}/task-outputs", params, progress)
    if as_json:
        print_json(items)
        return
    table = Table("task", "kind", "path", "size", "created", title=f"{len(items)} outputs of {job}")
    for item in items:
        table.add_row(item["taskId"] or "-", item["kind"], item["path"], human_size(item["size"]), item["createdAt"] or "")
    out.print(table)


@app.command()
def get(
    job: Annotated[str, typer.Argument(help="job ID")],
    path: Annotated[str, typer.Argument(help="the output's path under its kind")],
    kind: Annotated[str, typer.Option("--kind", help="output kind")],
    task: TaskOption = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="file to write ('-' = stdout; default: the name)")] = None,
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
                bar = progress.add_task(f"get {Path(path).name}", total=item["size"], visible=item["size"] >= PROGRESS_THRESHOLD)
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    progress.advance(bar, len(chunk))
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach storage for the download: {exc}", UNREACHABLE) from exc
    err.print(f"wrote {target} ({human_size(item['size'])})")


@app.command()
def summary(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None,
            as_json: JsonOption = False) -> None:
    """A job's outputs and bytes per kind, tasks, quota and rejections."""
    check_job(job)
    body = Api(Config(api, key, None)).ensure_job(job)
    if as_json:
        print_json(body)
        return
    out.print(f"job {body['jobId'] or job}  container {body['container']}  tasks {body['tasks']}  last indexed {body['lastIndexedAt'] or '-'}")
    table = Table("kind", "outputs", "bytes")
    for name, counts in body["kinds"].items():
        table.add_row(name, str(counts["outputs"]), human_size(counts["bytes"]))
    table.add_row("total", str(body["usage"]["outputs"]), human_size(body["usage"]["bytes"]), style="bold")
    out.print(table)
    quota = body["quota"]
    limit = lambda n: str(n) if n else "no limit"  # noqa: E731
    out.print(f"quota: outputs {limit(quota['maxOutputs'])}, bytes {limit(quota['maxBytes'])}, per task {limit(quota['maxOutputsPerTask'])}; "
              f"rejected {body['rejections']['outputs']} ({human_size(body['rejections']['bytes'])})")


@app.command()
def quota(
    job: Annotated[str, typer.Argument(help="job ID")],
    max_outputs: Annotated[int | None, typer.Option("--max-outputs", min=0, help="0 = no limit")] = None,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", min=0, help="0 = no limit")] = None,
    max_outputs_per_task: Annotated[int | None, typer.Option("--max-outputs-per-task", min=0, help="0 = no limit")] = None,
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
    limit = lambda n: str(n) if n else "no limit"  # noqa: E731
    out.print(f"{job}: outputs {limit(body['maxOutputs'])}, bytes {limit(body['maxBytes'])}, per task {limit(body['maxOutputsPerTask'])}")


@app.command()
def reindex(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None,
            as_json: JsonOption = False) -> None:
    """Rebuild the job's index from its container: add missing, fix changed, remove vanished outputs."""
    check_job(job)
    body = Api(Config(api, key, None)).call("POST", f"{job_path(job)}/reindex")
    if as_json:
        print_json(body)
        return
    out.print(f"{job}: added {body['added']}, fixed {body['fixed']}, removed {body['removed']}, unchanged {body['unchanged']}")


# -- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """The console script: runs a command, maps every failure to one line and an exit code."""
    try:
        result = app(args=argv, prog_name="batch-outputs", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("batch-outputs: aborted")
        sys.exit(OTHER)
    except click_exceptions.UsageError as exc:
        err.print(f"batch-outputs: {exc.format_message()}")
        sys.exit(BAD_INPUT)
    except click_exceptions.ClickException as exc:
        err.print(f"batch-outputs: {exc.format_message()}")
        sys.exit(exc.exit_code or OTHER)
    except CliError as exc:
        err.print(f"batch-outputs: {exc}")
        sys.exit(exc.exit_code)
    except ConventionError as exc:
        err.print(f"batch-outputs: {exc}")
        sys.exit(BAD_INPUT)
    except ClientAuthenticationError as exc:
        err.print(f"batch-outputs: storage refused the credentials: {exc.reason or exc.message.splitlines()[0]}")
        sys.exit(AUTH_FAILED)
    except HttpResponseError as exc:
        err.print(f"batch-outputs: storage answered {exc.status_code}: {exc.reason}")
        sys.exit(AUTH_FAILED if exc.status_code == 403 else OTHER)
    except (AzureError, OutputStorageError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(f"batch-outputs: storage: {first}")
        sys.exit(UNREACHABLE if "connect" in first.lower() else OTHER)
    except KeyboardInterrupt:
        err.print("batch-outputs: interrupted")
        sys.exit(130)
    except Exception as exc:  # the promise: one line, never a traceback
        err.print(f"batch-outputs: {type(exc).__name__}: {exc}")
        sys.exit(OTHER)
    sys.exit(result if isinstance(result, int) else OK)


if __name__ == "__main__":
    main()
