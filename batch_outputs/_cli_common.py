"""What every command of the CLI shares: the app, the consoles, the options, the checks.

No ``from __future__ import annotations`` in the CLI's modules: typer reads the commands'
annotations at run time, and older typer (the newest on Python 3.9) cannot resolve postponed ones.
"""

import json
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from . import environment
from ._cli_config import BAD_INPUT, CliError
from .conventions import is_valid_job_id, is_valid_kind, is_valid_task_id

#: A file this large gets a progress bar.
PROGRESS_THRESHOLD = 4 * 1024 * 1024

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
app = typer.Typer(
    name="batch-outputs",
    help="Save, find and fetch Azure Batch job outputs (Batch File Conventions).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ApiOption = Annotated[Optional[str], typer.Option("--api", help="API base URL [env BATCH_OUTPUTS_API; default http://127.0.0.1:7071]")]
KeyOption = Annotated[Optional[str], typer.Option("--key", help="API key [env BATCH_OUTPUTS_KEY; default: local.settings.json]")]
StorageOption = Annotated[Optional[str], typer.Option(
    "--storage", help="connection string, blob account URL or the job container's SAS URL [env BATCH_OUTPUTS_STORAGE]")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output (= --output json)")]
AuthOption = Annotated[Optional[str], typer.Option(
    "--auth", help="key or identity (Microsoft Entra ID) [env BATCH_OUTPUTS_AUTH; default: key when one is configured]")]
AudienceOption = Annotated[Optional[str], typer.Option(
    "--audience", help="the API's application ID URI, for --auth identity [env BATCH_OUTPUTS_AUDIENCE]")]
OutputOption = Annotated[Optional[str], typer.Option("--output", "-o", help="json, jsonc, table or tsv [default: table]")]
QueryOption = Annotated[Optional[str], typer.Option("--query", help="JMESPath query applied to the JSON output, e.g. \"[].path\"")]
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
