"""The CLI's side of the index's HTTP API: where it is, which key, and paging.

Lists follow ``nextLink`` to the end. A ``nextLink`` is resolved against the configured API
URL and followed only when it stays on that origin (scheme, host and port): the API key is
never sent anywhere else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urljoin, urlsplit

import httpx
from rich.progress import Progress

OK, OTHER, BAD_INPUT, UNKNOWN_JOB, AUTH_FAILED, UNREACHABLE = 0, 1, 2, 3, 4, 5
DEFAULT_API = "http://127.0.0.1:7071"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = OTHER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _local_settings() -> dict[str, str]:
    """``Values`` of the ``local.settings.json`` in the working directory (or of the source
    checkout this package runs from), for the local stack of ``make run``."""
    checkout = Path(__file__).resolve().parent.parent / "local.settings.json"
    for candidate in (Path.cwd() / "local.settings.json", checkout):
        if candidate.is_file():
            try:
                return {k: str(v) for k, v in (json.loads(candidate.read_text("utf-8")).get("Values") or {}).items()}
            except (OSError, ValueError, AttributeError):
                return {}
    return {}


@dataclass
class Config:
    api: Optional[str]
    key: Optional[str]
    storage: Optional[str]

    def resolved_api(self) -> str:
        return (self.api or os.environ.get("BATCH_OUTPUTS_API") or DEFAULT_API).rstrip("/")

    def resolved_key(self) -> Optional[str]:
        if self.key or os.environ.get("BATCH_OUTPUTS_KEY"):
            return self.key or os.environ["BATCH_OUTPUTS_KEY"]
        keys = [k.strip() for k in _local_settings().get("API_KEYS", "").split(",") if k.strip()]
        return keys[0] if keys else None

    def resolved_storage(self) -> str:
        storage = self.storage or os.environ.get("BATCH_OUTPUTS_STORAGE") or _local_settings().get("OUTPUTS_STORAGE")
        if not storage:
            raise CliError("no storage account: give --storage or BATCH_OUTPUTS_STORAGE "
                           "(a connection string, a blob account URL or the job container's SAS URL)", BAD_INPUT)
        return storage


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def resolve_next_link(base: str, link: str) -> str:
    """The URL of a ``nextLink``: relative links resolve against the API URL; a link to another
    origin is refused (``CliError``), so the key goes nowhere but the configured API."""
    resolved = urljoin(base.rstrip("/") + "/", link)
    if origin(resolved) != origin(base):
        scheme, host, port = origin(resolved)
        raise CliError(f"refusing to follow a nextLink to another origin ({scheme}://{host}:{port}, "
                       f"not the API at {base}): the API key is sent to the configured API only")
    return resolved


def job_path(job_id: str) -> str:
    return f"/api/jobs/{quote(job_id, safe='')}"


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
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"the API at {self.base} answered {response.status_code} with no JSON") from exc

    def pages(self, path: str, params: dict[str, Any], progress: Optional[Progress] = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        body = self.call("GET", path, params=params)
        task = progress.add_task("listing", total=None) if progress else None
        while True:
            items.extend(body["value"])
            if progress is not None and task is not None:
                progress.update(task, completed=len(items), description=f"listed {len(items)}")
            if not body.get("nextLink"):
                return items
            body = self.call("GET", resolve_next_link(self.base, body["nextLink"]))

    def ensure_job(self, job_id: str) -> dict[str, Any]:
        try:
            return self.call("GET", job_path(job_id))
        except CliError as exc:
            if exc.exit_code == UNKNOWN_JOB:
                raise CliError(f"unknown job {job_id!r}: nothing of it was ever indexed", UNKNOWN_JOB) from exc
            raise
