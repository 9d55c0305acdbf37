"""``batch-outputs``: prepare, save, list, get, download, wait for and watch Batch job outputs from a shell.

With no flags it talks to the local stack of ``make run`` (API on 127.0.0.1:7071, the key and
the storage account from ``local.settings.json``). ``--api``/``--key``/``--storage`` or
``BATCH_OUTPUTS_API``/``BATCH_OUTPUTS_KEY``/``BATCH_OUTPUTS_STORAGE`` point it elsewhere;
``--auth identity`` (or no key at all) signs in with Microsoft Entra ID for ``--audience``
(``BATCH_OUTPUTS_AUDIENCE``). Every command that talks to the API goes through
``OutputIndexClient``; ``get`` and ``download`` read the blobs with the node's storage
credentials when no API key is configured.
On a compute node ``--job``/``--task`` default to ``AZ_BATCH_JOB_ID``/``AZ_BATCH_TASK_ID``.

Exit codes: 0 ok, 1 other failure, 2 bad input, 3 unknown job or output, 4 authentication
failed, 5 API unreachable, 6 ``wait`` timed out. Errors are one line on stderr, never a
traceback. Names from storage are printed as plain text (``display.safe``), never as markup.

No ``from __future__ import annotations`` here: typer reads the commands' annotations at run
time, and older typer (the newest on Python 3.9) cannot resolve postponed ones.
"""


import os
import sys
from pathlib import Path
from typing import Annotated, Optional, Union

import typer
from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceExistsError

from . import environment
from ._cli_common import (
    PROGRESS_THRESHOLD,
    ApiOption,
    AudienceOption,
    AuthOption,
    JobOption,
    JsonOption,
    KeyOption,
    StorageOption,
    TaskOption,
    app,
    check_job,
    check_kind,
    check_task,
    err,
    out,
    print_json,
    transfer_progress,
)
from ._cli_config import AUTH_FAILED, BAD_INPUT, OK, OTHER, UNKNOWN_JOB, UNREACHABLE, CliError, Config, api_errors, index_client
from .clients import container_client
from .conventions import ConventionError, destination_path, is_rooted
from .display import human_size, safe, say
from .errors import ContainerNotFoundError, OutputNotFoundError, OutputStorageError
from .follow import follow
from .storage import JobOutputStorage, OutputFile, TaskOutputStorage

try:  # typer >= 0.24 vendors click
    from typer._click import exceptions as click_exceptions  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - older typer (Python 3.9)
    from click import exceptions as click_exceptions  # type: ignore[no-redef,unused-ignore]

__all__ = ["app", "main"]

# -- commands ------------------------------------------------------------------------------


@app.command()
def prepare(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None,
            storage: StorageOption = None, auth: AuthOption = None, audience: AudienceOption = None, as_json: JsonOption = False) -> None:
    """Create the job's output container with your storage credentials, then register the job ID."""
    check_job(job)
    config = Config(api, key, storage, auth, audience)
    container = container_client(config.resolved_storage(), job)
    try:
        container.create_container()
        created = True
    except ResourceExistsError:
        created = False
    with api_errors(config), index_client(config) as client:
        summary = client.register_job(job).as_dict()
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


# The other commands, registered after prepare and save so that --help lists them in this order.
from . import _cli_index, _cli_outputs  # noqa: E402, F401

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
