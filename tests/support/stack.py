"""The running stack for the integration and end-to-end tiers: a real Azurite, the real app
served over real HTTP by uvicorn. The fixtures in ``tests/conftest.py`` call into this module;
nothing here runs at import time, but importing it pulls in the web stack, so the unit tier
never does."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite, free_port
from shared.http.app import create_app
from shared.settings import Settings

TEST_KEY = "test-key-1"
#: A reader's key (READ_KEYS): every GET, nothing else.
READ_KEY = "test-read-key"
#: The events key (EVENTS_KEYS): it posts to /api/events and nothing else.
EVENTS_KEY = "test-events-key"
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


def started_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """The session's Azurite (in memory, free ports), stopped at the end."""
    instance = Azurite(location=tmp_path_factory.mktemp("azurite"), in_memory=True).start()
    yield instance
    instance.stop()


def settings_for(azurite: Azurite, **values: str) -> Settings:
    base = {
        "OUTPUTS_STORAGE": azurite.connection_string,
        "INDEX_STORAGE": azurite.connection_string,
        "INDEX_TABLE": "idx" + uuid.uuid4().hex[:16],
        "API_KEYS": f"{TEST_KEY},second-key",
        "READ_KEYS": READ_KEY,
        "EVENTS_KEYS": EVENTS_KEY,
        "TOKEN_SIGNING_KEY": "test-signing-key",
        "STORAGE_RETRY_TOTAL": "3",
        "STORAGE_RETRY_BACKOFF_SECONDS": "0.05",
        "STORAGE_RETRY_MAX_BACKOFF_SECONDS": "0.5",
    }
    base.update(values)
    return Settings.from_mapping(base)


def blob_service_for(azurite: Azurite) -> Iterator[BlobServiceClient]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield client
    client.close()


@dataclass
class RunningApp:
    url: str
    settings: Settings
    client: httpx.Client

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post_events(self, events: object, **kwargs) -> httpx.Response:
        return self.client.post("/api/events", json=events, **kwargs)

    def all_pages(self, path: str, **params) -> list[dict]:
        """Follow nextLink to the end; return every item."""
        items: list[dict] = []
        response = self.client.get(path, params=params)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            items.extend(body["value"])
            if "nextLink" not in body:
                return items
            response = self.client.get(body["nextLink"])


class RoleKeys(httpx.Auth):
    """The test client's key by role: the events key on the webhook, the API key elsewhere
    (a key the request already carries wins)."""

    def auth_flow(self, request: httpx.Request):
        if "x-functions-key" not in request.headers:
            request.headers["x-functions-key"] = EVENTS_KEY if request.url.path == "/api/events" else TEST_KEY
        yield request


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # running in a thread
        pass


def app_server() -> Iterator[Callable[..., RunningApp]]:
    """Start the real ASGI app with uvicorn on a free port; stopped after the test."""
    servers: list[tuple[_Server, threading.Thread, httpx.Client]] = []

    def start(settings: Settings, *, hosted: bool = False) -> RunningApp:
        port = free_port()
        server = _Server(uvicorn.Config(create_app(settings, hosted=hosted), host="127.0.0.1",
                                        port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("app did not start")
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=url, auth=RoleKeys(), timeout=60)
        servers.append((server, thread, client))
        return RunningApp(url, settings, client)

    yield start
    for server, thread, client in servers:
        client.close()
        server.should_exit = True
        thread.join(timeout=10)
