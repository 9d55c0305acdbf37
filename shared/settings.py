"""App settings, read once into a typed object and passed in.

In Azure these are app settings; locally they are the ``Values`` of ``local.settings.json``
(the Functions host loads them into the environment; served directly by uvicorn, this module
reads the file itself). Environment variables always win.

Storage connections follow the Functions convention: ``<NAME>`` is a connection string, or
``<NAME>__blobServiceUri`` / ``<NAME>__tableServiceUri`` with ``<NAME>__credential``
(``managedidentity``) and ``<NAME>__clientId`` for an identity-based connection.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.domain.quotas import QuotaDefaults

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_SETTINGS_FILE = PROJECT_ROOT / "local.settings.json"

#: Every app setting the code reads. Bicep and ``local.settings.sample.json`` must agree
#: with this list (a test checks it).
SETTING_NAMES: tuple[str, ...] = (
    "OUTPUTS_STORAGE",
    "OUTPUTS_STORAGE__blobServiceUri",
    "OUTPUTS_STORAGE__credential",
    "OUTPUTS_STORAGE__clientId",
    "INDEX_STORAGE",
    "INDEX_STORAGE__tableServiceUri",
    "INDEX_STORAGE__blobServiceUri",
    "INDEX_STORAGE__credential",
    "INDEX_STORAGE__clientId",
    "INDEX_TABLE",
    "API_KEYS",
    "EVENTS_KEYS",
    "PUBLIC_BASE_URL",
    "TOKEN_SIGNING_KEY",
    "SAS_TTL_MINUTES",
    "QUOTA_MAX_OUTPUTS_PER_JOB",
    "QUOTA_MAX_BYTES_PER_JOB",
    "QUOTA_MAX_OUTPUTS_PER_TASK",
    "EVENTS_TOPIC_ENDPOINT",
    "EVENTS_TOPIC_KEY",
    "STORAGE_RETRY_TOTAL",
    "STORAGE_RETRY_BACKOFF_SECONDS",
    "STORAGE_RETRY_MAX_BACKOFF_SECONDS",
    "STORAGE_MAX_CONCURRENCY",
    "RECONCILE_SCHEDULE",
    "RECONCILE_WINDOW_HOURS",
    "DEADLETTER_CONTAINER",
    "CHANGE_FEED_RETENTION_HOURS",
    "CHANGE_FEED_POLL_SECONDS",
)

#: The container Event Grid dead-letters to (``infra/main.bicep``: ``deadLetterContainerName``).
DEFAULT_DEADLETTER_CONTAINER = "eventgrid-deadletter"

#: Every 15 minutes, on the minute (NCRONTAB: second minute hour day month day-of-week).
DEFAULT_RECONCILE_SCHEDULE = "0 */15 * * * *"


class SettingsError(ValueError):
    """A setting is missing or malformed."""


def key_roles(api_keys: str | None, events_keys: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``API_KEYS`` (read and administer) and ``EVENTS_KEYS`` (post events only): one role a key."""
    split = lambda raw: tuple(k.strip() for k in (raw or "").split(",") if k.strip())  # noqa: E731
    readers, posters = split(api_keys), split(events_keys)
    if set(readers) & set(posters):
        raise SettingsError("a key is in both API_KEYS and EVENTS_KEYS: each key has one role")
    return readers, posters


def public_base_url(raw: str | None) -> str | None:
    """``PUBLIC_BASE_URL``: the scheme and host (and path prefix) clients reach the API at.

    ``nextLink`` is built from it, never from the request's ``Host`` header; unset, links are
    relative (``/api/...``).
    """
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
        raise SettingsError(f"PUBLIC_BASE_URL must be http(s)://host[:port][/path], got {raw!r}")
    return raw.rstrip("/")


_CONTAINER_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def container_setting(name: str, raw: str | None, default: str) -> str:
    """A blob container name setting (3-63 of ``a-z0-9-``, no ``--``), ``default`` when unset."""
    value = raw or default
    if not _CONTAINER_NAME.match(value):
        raise SettingsError(f"{name} must be a blob container name (3-63 of a-z, 0-9, '-'), got {value!r}")
    return value


@dataclass(frozen=True)
class StorageConnection:
    """One storage account connection: a connection string, or an identity-based service URI."""

    name: str
    connection_string: str | None = None
    service_uri: str | None = None
    credential: str | None = None
    client_id: str | None = None
    #: The same account's blob endpoint, identity-based (``<NAME>__blobServiceUri``), when a
    #: connection reaches a second service of it (the index account's dead-letter container).
    blob_service_uri: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class RetrySettings:
    """The one retry configuration every storage client is built with (SPEC §5)."""

    total: int = 6
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0


@dataclass(frozen=True)
class Settings:
    outputs_storage: StorageConnection
    index_storage: StorageConnection
    index_table: str = "outputindex"
    api_keys: tuple[str, ...] = ()
    events_keys: tuple[str, ...] = ()
    public_base_url: str | None = None
    token_signing_key: str = ""
    sas_ttl_minutes: int = 15
    quota: QuotaDefaults = field(default_factory=QuotaDefaults)
    events_topic_endpoint: str | None = None
    events_topic_key: str | None = None
    retry: RetrySettings = field(default_factory=RetrySettings)
    max_concurrency: int = 16
    reconcile_schedule: str = DEFAULT_RECONCILE_SCHEDULE
    reconcile_window_hours: int = 24
    #: Event Grid's dead-letter container, in the index account (``replay-deadletters``).
    deadletter_container: str = DEFAULT_DEADLETTER_CONTAINER
    #: How long the change feed keeps changes (cursors older than that are 410 CursorExpired).
    change_feed_retention_hours: int = 168
    #: How often one poll per job per instance looks for other instances' changes for its waiters.
    change_feed_poll_seconds: float = 1.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Settings:
        """Build settings from a flat mapping of app-setting names to values."""

        def text(name: str, default: str | None = None) -> str | None:
            value = values.get(name)
            if value is None or value.strip() == "":
                return default
            return value.strip()

        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
            if value < minimum:
                raise SettingsError(f"{name} must be at least {minimum}, got {value}")
            return value

        def number(name: str, default: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None
            if value < 0:
                raise SettingsError(f"{name} must not be negative, got {value}")
            return value

        def connection(name: str, uri_suffix: str) -> StorageConnection:
            conn = text(name)
            if conn:
                return StorageConnection(name=name, connection_string=conn)
            uri = text(f"{name}__{uri_suffix}")
            if not uri:
                raise SettingsError(
                    f"{name} is not set: give a connection string in {name} "
                    f"or an identity-based {name}__{uri_suffix}"
                )
            return StorageConnection(
                name=name,
                service_uri=uri,
                credential=text(f"{name}__credential"),
                client_id=text(f"{name}__clientId"),
                blob_service_uri=text(f"{name}__blobServiceUri") if uri_suffix != "blobServiceUri" else None,
            )

        api_keys, events_keys = key_roles(text("API_KEYS"), text("EVENTS_KEYS"))
        return cls(
            outputs_storage=connection("OUTPUTS_STORAGE", "blobServiceUri"),
            index_storage=connection("INDEX_STORAGE", "tableServiceUri"),
            index_table=text("INDEX_TABLE", "outputindex") or "outputindex",
            api_keys=api_keys,
            events_keys=events_keys,
            public_base_url=public_base_url(text("PUBLIC_BASE_URL")),
            token_signing_key=text("TOKEN_SIGNING_KEY", "") or "",
            sas_ttl_minutes=integer("SAS_TTL_MINUTES", 15, minimum=1),
            quota=QuotaDefaults(
                max_outputs_per_job=integer("QUOTA_MAX_OUTPUTS_PER_JOB", 0),
                max_bytes_per_job=integer("QUOTA_MAX_BYTES_PER_JOB", 0),
                max_outputs_per_task=integer("QUOTA_MAX_OUTPUTS_PER_TASK", 0),
            ),
            events_topic_endpoint=text("EVENTS_TOPIC_ENDPOINT"),
            events_topic_key=text("EVENTS_TOPIC_KEY"),
            retry=RetrySettings(
                total=integer("STORAGE_RETRY_TOTAL", 6),
                backoff_seconds=number("STORAGE_RETRY_BACKOFF_SECONDS", 0.5),
                max_backoff_seconds=number("STORAGE_RETRY_MAX_BACKOFF_SECONDS", 8.0),
            ),
            max_concurrency=integer("STORAGE_MAX_CONCURRENCY", 16, minimum=1),
            reconcile_schedule=text("RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE) or DEFAULT_RECONCILE_SCHEDULE,
            reconcile_window_hours=integer("RECONCILE_WINDOW_HOURS", 24, minimum=1),
            deadletter_container=container_setting("DEADLETTER_CONTAINER", text("DEADLETTER_CONTAINER"), DEFAULT_DEADLETTER_CONTAINER),
            change_feed_retention_hours=integer("CHANGE_FEED_RETENTION_HOURS", 168, minimum=1),
            change_feed_poll_seconds=max(0.05, number("CHANGE_FEED_POLL_SECONDS", 1.0)),
        )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``local.settings.json`` (when present) overlaid by the environment."""
        values: dict[str, str] = {}
        if LOCAL_SETTINGS_FILE.exists():
            try:
                data = json.loads(LOCAL_SETTINGS_FILE.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{LOCAL_SETTINGS_FILE} is not valid JSON: {exc}") from exc
            values.update({k: str(v) for k, v in (data.get("Values") or {}).items()})
        values.update(os.environ if environ is None else environ)
        return cls.from_mapping(values)
