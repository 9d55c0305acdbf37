"""Roles under the Functions host, as the host reads function_app.py (issues 14 and 23): the API
anonymous to the host (the app checks keys and Entra tokens by role), the webhook its own function
whose events key the app checks, the trigger
behind the Event Grid extension (calling them against Azurite: tests/integration/test_abuse_keys.py)."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func

from .test_function_app import bindings  # the host indexes the app once: share its reading


def test_the_webhook_is_its_own_function_on_a_literal_route() -> None:
    trigger = bindings()["events_webhook"][0]
    assert trigger.type == "httpTrigger"
    # A literal route wins over the API's catch-all /{*route}: POST /api/events has its own function.
    assert trigger.route == "api/events"
    assert {str(getattr(m, "value", m)) for m in trigger.methods} == {"POST", "OPTIONS"}
    # The host checks no key here: the app checks EVENTS_KEYS (a function key would be a host
    # key's equal, and host keys open every function).
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS


def test_the_app_checks_the_api_roles_and_the_trigger_stays_behind_the_extension() -> None:
    # A function key cannot say reader or admin, and the host would refuse an Entra token before
    # the app saw it: the app checks keys and tokens by role (shared/http/dependencies.py; the
    # app built as under the host is tried in tests/integration/test_roles.py).
    assert bindings()["http_app_func"][0].auth_level == func.AuthLevel.ANONYMOUS
    (trigger,) = bindings()["index_blob_event"]
    assert trigger.type == "eventGridTrigger"  # reached through the extension's system key, not an HTTP route of ours


def test_the_sample_settings_give_each_role_its_own_key() -> None:
    values = json.loads(Path("local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
    roles = [{k.strip() for k in values[name].split(",") if k.strip()} for name in ("READ_KEYS", "API_KEYS", "EVENTS_KEYS")]
    assert all(roles) and sum(map(len, roles)) == len(set().union(*roles))
