"""The HTTP entry point: the API as one ASGI app, behind the Functions host's key check."""

from __future__ import annotations

from shared.http.app import create_app

#: Under the host, function keys (auth level ``function``) guard every route but health.
http_app = create_app(check_keys=False)

#: The core's clients, shared with the Event Grid trigger (one set per worker process).
services = http_app.state.services
