"""Fixtures of the integration and end-to-end tiers: a real Azurite started by the suite (one per
session, shared by both tiers), the real app served over real HTTP.

Nothing is imported or started until a test asks for one of these fixtures: the unit tier
(``tests/unit/``) loads this file without the web stack, Azurite or Node.js. What the fixtures
run lives in ``tests/support/stack.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from devtools.azurite import Azurite
    from shared.settings import Settings

    from .support.stack import RunningApp


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    from .support.stack import started_azurite

    yield from started_azurite(tmp_path_factory)


@pytest.fixture
def settings(azurite: Azurite) -> Settings:
    from .support.stack import settings_for

    return settings_for(azurite)


@pytest.fixture
def blob_service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    from .support.stack import blob_service_for

    yield from blob_service_for(azurite)


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningApp]]:
    """Start the real ASGI app with uvicorn on a free port; stopped after the test."""
    from .support.stack import app_server

    yield from app_server()


@pytest.fixture
def app(serve: Callable[..., RunningApp], settings: Settings) -> RunningApp:
    return serve(settings)
