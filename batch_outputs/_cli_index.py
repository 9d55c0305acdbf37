"""The CLI's commands that ask the index: ls, summary, quota, reindex, replay-deadletters.

Each goes through ``OutputIndexClient`` (``index_client``) and shows the API's JSON in the
format asked (``--output``, ``--query``; ``--json`` = ``--output json``).
"""

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Optional

import typer
from azure.core.rest import HttpRequest
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ._cli_common import (
    ApiOption,
    AudienceOption,
    AuthOption,
    JsonOption,
    KeyOption,
    OutputOption,
    QueryOption,
    TaskOption,
    app,
    check_job,
    check_kind,
    check_task,
    err,
    out,
)
from ._cli_config import BAD_INPUT, CliError, Config, api_errors, index_client
from ._output import emit, output_format, print_table
from ._shared import json_of
from .display import human_size, say


@app.command("ls")
def list_outputs(
    job: Annotated[str, typer.Argument(help="job ID")],
    task: TaskOption = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="only this kind")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="only paths starting with this")] = "",
    api: ApiOption = None,
    key: KeyOption = None,
    auth: AuthOption = None,
    audience: AudienceOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a job's outputs (all, one task's, one kind's) from the index."""
    check_job(job)
    check_task(task)
    check_kind(kind)
    fmt = output_format(output, as_json)
    config = Config(api, key, None, auth, audience)
    with api_errors(config), index_client(config) as client:
        client.get_job(job)  # an unknown job is an error (exit 3), not an empty list
        items = []
        with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), console=err, transient=True,
                      disable=fmt != "table") as progress:
            bar = progress.add_task("listing", total=None)
            for item in client.list_outputs(job, task_id=task, kind=kind, prefix=prefix or None):
                items.append(item)
                if len(items) % 500 == 0:
                    progress.update(bar, description=f"listed {len(items)}")

    def human() -> None:
        print_table(out, ["task", "kind", "path", "size", "created"],
                    [[i.task_id or "-", i.kind, i.path, human_size(i.size), i.created_at or ""] for i in items],
                    title=f"{len(items)} outputs of {job}")

    emit(out, [i.as_dict() for i in items], fmt, query, human)


def _limit(n: int) -> str:
    return str(n) if n else "no limit"


@app.command()
def summary(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None, auth: AuthOption = None,
            audience: AudienceOption = None, output: OutputOption = None, query: QueryOption = None, as_json: JsonOption = False) -> None:
    """A job's outputs and bytes per kind, tasks, quota and rejections."""
    check_job(job)
    fmt = output_format(output, as_json)
    config = Config(api, key, None, auth, audience)
    with api_errors(config), index_client(config) as client:
        body = client.get_job(job).as_dict()

    def human() -> None:
        say(out, f"job {body['jobId'] or job}  container {body['container']}  tasks {body['tasks']}  last indexed {body['lastIndexedAt'] or '-'}")
        rows = [[name, str(counts["outputs"]), human_size(counts["bytes"])] for name, counts in body["kinds"].items()]
        rows.append(["total", str(body["usage"]["outputs"]), human_size(body["usage"]["bytes"])])
        print_table(out, ["kind", "outputs", "bytes"], rows)
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

    emit(out, body, fmt, query, human)


@app.command()
def quota(
    job: Annotated[str, typer.Argument(help="job ID")],
    max_outputs: Annotated[Optional[int], typer.Option("--max-outputs", min=0, help="0 = no limit")] = None,
    max_bytes: Annotated[Optional[int], typer.Option("--max-bytes", min=0, help="0 = no limit")] = None,
    max_outputs_per_task: Annotated[Optional[int], typer.Option("--max-outputs-per-task", min=0, help="0 = no limit")] = None,
    api: ApiOption = None,
    key: KeyOption = None,
    auth: AuthOption = None,
    audience: AudienceOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a job's limits, or change them (raising one admits rejected outputs at once)."""
    check_job(job)
    fmt = output_format(output, as_json)
    config = Config(api, key, None, auth, audience)
    with api_errors(config), index_client(config) as client:
        if max_outputs is None and max_bytes is None and max_outputs_per_task is None:
            body = client.get_quota(job).as_dict()
        else:
            body = client.set_quota(job, max_outputs=max_outputs, max_bytes=max_bytes, max_outputs_per_task=max_outputs_per_task).as_dict()
    emit(out, body, fmt, query, lambda: say(out, f"{job}: outputs {_limit(body['maxOutputs'])}, bytes {_limit(body['maxBytes'])}, "
                                                 f"per task {_limit(body['maxOutputsPerTask'])}"))


@app.command()
def reindex(job: Annotated[str, typer.Argument(help="job ID")], api: ApiOption = None, key: KeyOption = None, auth: AuthOption = None,
            audience: AudienceOption = None, output: OutputOption = None, query: QueryOption = None, as_json: JsonOption = False) -> None:
    """Rebuild the job's index from its container: add missing, fix changed, remove vanished outputs."""
    check_job(job)
    fmt = output_format(output, as_json)
    config = Config(api, key, None, auth, audience)
    with api_errors(config), index_client(config) as client, Progress(
            SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
            TextColumn("{task.percentage:>3.0f} %"), TimeElapsedColumn(), console=err, transient=True) as progress:
        # A reindex that outlives its request is a long-running operation (202 +
        # Operation-Location): the client polls it, and every status it answers moves the bar.
        bar = progress.add_task(f"reindexing {job}", total=100, visible=False)
        body = client.reindex(job, progress=lambda status: progress.update(
            bar, visible=True, **_reindex_progress(job, status))).as_dict()
    emit(out, body, fmt, query, lambda: say(out, f"{job}: added {body['added']}, fixed {body['fixed']}, removed {body['removed']}, "
                                                 f"unchanged {body['unchanged']}"))


def _reindex_progress(job: str, status: dict[str, Any]) -> dict[str, Any]:
    """The bar's description and completion for one status of a reindex operation."""
    done = status.get("progress") or {}
    phase = {"blobs": "listing the container", "rows": "checking the index", "done": "done"}.get(str(done.get("phase")), "")
    description = (f"reindexing {job}: {phase}, {int(done.get('blobsListed') or 0):,} blobs listed, "
                   f"{int(done.get('rowsChecked') or 0):,} rows checked")
    return {"description": description, "completed": int(done.get("percentComplete") or 0)}


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
    auth: AuthOption = None,
    audience: AudienceOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index the events Event Grid dead-lettered, and mark them replayed (a second run changes nothing)."""
    fmt = output_format(output, as_json)
    params: dict[str, Any] = {"dryRun": "true" if dry_run else "false"}
    when = parse_since(since)
    if when:
        params["since"] = when
    config = Config(api, key, None, auth, audience)
    total: dict[str, Any] = {"dryRun": dry_run, "container": None, "blobs": {}, "events": 0, "byReason": {}}
    with api_errors(config), index_client(config) as client, \
            Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), console=err, transient=True,
                     disable=fmt != "table") as progress:
        task = progress.add_task("replaying dead letters", total=None)
        while True:
            page = json_of(client.send_request(HttpRequest("POST", "/api/admin/replay-deadletters", params=params)))
            total["container"] = page["container"]
            _merge_replay(total, page)
            progress.update(task, description=f"{total['blobs'].get('listed', 0)} dead-letter blobs looked at")
            if not page.get("nextMarker"):
                break
            params["marker"] = page["nextMarker"]

    def human() -> None:
        blobs = total["blobs"]
        say(out, f"{'dry run: ' if dry_run else ''}{total['container']}: {blobs.get('listed', 0)} blobs, "
                 f"{blobs.get('replayed', 0)} {'to replay' if dry_run else 'replayed'}, {blobs.get('alreadyReplayed', 0)} already replayed, "
                 f"{blobs.get('beforeSince', 0)} before --since, {blobs.get('unreadable', 0)} unreadable; {total['events']} events")
        if total["byReason"]:
            rows = []
            for reason, o in sorted(total["byReason"].items()):
                skipped = ", ".join(f"{why} {n}" for why, n in sorted(o["skippedByReason"].items()))
                rows.append([reason, str(o["events"]), str(o["indexed"]), str(o["unchanged"]), str(o["rejected"]),
                             f"{o['skipped']} ({skipped})" if skipped else str(o["skipped"])])
            print_table(out, ["dead-letter reason", "events", "indexed", "unchanged", "rejected", "skipped"], rows)

    emit(out, total, fmt, query, human)


# -- entry point ---------------------------------------------------------------------------
