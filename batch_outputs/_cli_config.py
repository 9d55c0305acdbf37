"""The CLI's configuration: where the API is, how it signs in, where the blobs are; exit codes.

Every command that talks to the API builds an ``OutputIndexClient`` here (``index_client``):
the CLI is a user of the client, never a second implementation of it.

Sign-in (``--auth``, env ``BATCH_OUTPUTS_AUTH``): ``key`` sends the API key (``--key``,
``BATCH_OUTPUTS_KEY``, or the first of ``API_KEYS`` in ``local.settings.json``) as
``x-functions-key``; ``identity`` signs in with ``azure.identity.DefaultAzureCredential`` (a
developer's ``az login``, a pool's managed identity, environment credentials) for the API's
audience (``--audience``, ``BATCH_OUTPUTS_AUDIENCE``: its application ID URI). The default is a
key when one is configured, else identity.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

OK, OTHER, BAD_INPUT, UNKNOWN_JOB, AUTH_FAILED, UNREACHABLE, TIMED_OUT = 0, 1, 2, 3, 4, 5, 6
DEFAULT_API = "http://127.0.0.1:7071"
AUTH_MODES = ("key", "identity")


class CliError(Exception):
    """A failure the CLI reports as one line and an exit code."""

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
    """What the command line and the environment say; resolved on use."""

    api: Optional[str] = None
    key: Optional[str] = None
    storage: Optional[str] = None
    auth: Optional[str] = None
    audience: Optional[str] = None

    def resolved_api(self) -> str:
        return (self.api or os.environ.get("BATCH_OUTPUTS_API") or DEFAULT_API).rstrip("/")

    def resolved_key(self) -> Optional[str]:
        """``--key``, else ``BATCH_OUTPUTS_KEY`` (set but empty: no key, on purpose), else the
        local stack's first ``API_KEYS``."""
        if self.key:
            return self.key
        if "BATCH_OUTPUTS_KEY" in os.environ:
            return os.environ["BATCH_OUTPUTS_KEY"] or None
        keys = [k.strip() for k in _local_settings().get("API_KEYS", "").split(",") if k.strip()]
        return keys[0] if keys else None

    def resolved_auth(self) -> str:
        """``key`` or ``identity``: as asked, else a key when one is configured."""
        auth = (self.auth or os.environ.get("BATCH_OUTPUTS_AUTH") or "").strip().lower()
        if auth and auth not in AUTH_MODES:
            raise CliError(f"invalid --auth {auth!r}: key or identity", BAD_INPUT)
        return auth or ("key" if self.resolved_key() else "identity")

    def resolved_audience(self) -> str:
        audience = self.audience or os.environ.get("BATCH_OUTPUTS_AUDIENCE")
        if not audience:
            raise CliError("no API key and no audience to sign in for: give --key (BATCH_OUTPUTS_KEY), or --audience "
                           "(BATCH_OUTPUTS_AUDIENCE, the API's application ID URI) to sign in with Microsoft Entra ID", AUTH_FAILED)
        return audience

    def storage_configured(self) -> Optional[str]:
        """The node's storage (``--storage``, ``BATCH_OUTPUTS_STORAGE``), if any."""
        return self.storage or os.environ.get("BATCH_OUTPUTS_STORAGE") or None

    def reads_blobs_directly(self) -> bool:
        """``get`` and ``download`` read the blobs with the node's storage credentials when no
        API key is configured and identity was not asked for."""
        explicit = (self.auth or os.environ.get("BATCH_OUTPUTS_AUTH") or "").strip().lower()
        return explicit != "identity" and not self.resolved_key() and bool(self.storage_configured())

    def resolved_storage(self) -> str:
        storage = self.storage_configured() or _local_settings().get("OUTPUTS_STORAGE")
        if not storage:
            raise CliError("no storage account: give --storage or BATCH_OUTPUTS_STORAGE "
                           "(a connection string, a blob account URL or the job container's SAS URL)", BAD_INPUT)
        return storage


def index_client(config: Config) -> Any:
    """The ``OutputIndexClient`` of the configured API, signed in as configured."""
    from ._client import OutputIndexClient

    if config.resolved_auth() == "key":
        key = config.resolved_key()
        if not key:
            raise CliError("--auth key but no key: give --key or BATCH_OUTPUTS_KEY", AUTH_FAILED)
        credential: Any = AzureKeyCredential(key)
        kwargs: dict[str, Any] = {}
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        kwargs = {"audience": config.resolved_audience()}
    # Few connection retries: an unreachable API is reported in seconds, not a minute.
    return OutputIndexClient(config.resolved_api(), credential, retry_connect=1, retry_backoff_factor=0.5, **kwargs)


def _api_message(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return f"{error.code}: {error.message}"
    return (str(exc.message or exc).splitlines() or [type(exc).__name__])[0]


@contextmanager
def api_errors(config: Config) -> Iterator[None]:
    """The index client's errors as the CLI's one-line failures and exit codes."""
    try:
        yield
    except ClientAuthenticationError as exc:
        what = "key" if config.resolved_auth() == "key" else "token"
        hint = "check --key or BATCH_OUTPUTS_KEY" if what == "key" else "check --audience and your identity's app role"
        raise CliError(f"the API at {config.resolved_api()} refused the {what} ({exc.status_code}): {hint}", AUTH_FAILED) from exc
    except ResourceNotFoundError as exc:
        raise CliError(_api_message(exc), UNKNOWN_JOB) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise CliError(f"cannot reach the API at {config.resolved_api()}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                       UNREACHABLE) from exc
    except HttpResponseError as exc:
        raise CliError(_api_message(exc), BAD_INPUT if exc.status_code == 400 else OTHER) from exc
