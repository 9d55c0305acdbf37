"""Keys by role under the Functions host, as the host reads function_app.py (issue 14): the API
behind function keys, the webhook its own function whose events key the app checks, the trigger
behind the Event Grid extension (calling them against Azurite: tests/integration/test_abuse_keys.py)."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func

from .test_function_app import bindings  # the host indexes the app once: share its reading


def test_the_webhook_is_its_own_function_on_a_literal_route() -> None:
    trigger = bindings()["events_webhook"][0]
    assert trigger.type == "httpTrigger"
    # A literal route wins over the API's catch-all /{*route}: POST /api/events never reaches
    # the function-key-guarded API function, and a function key never reaches the webhook.
    assert trigger.route == "api/events"
    assert {str(getattr(m, "value", m)) for m in trigger.methods} == {"POST", "OPTIONS"}
    # The host checks no key here: the app checks EVENTS_KEYS (a function key would be a host
    # key's equal, and host keys open every function).
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS


def test_the_api_stays_behind_function_keys_and_the_trigger_behind_the_extension() -> None:
    assert bindings()["http_app_func"][0].auth_level == func.AuthLevel.FUNCTION
    (trigger,) = bindings()["index_blob_event"]
    assert trigger.type == "eventGridTrigger"  # reached through the extension's system key, not an HTTP route of ours


def test_the_sample_settings_give_each_role_its_own_key() -> None:
    values = json.loads(Path("local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
    readers = {k.strip() for k in values["API_KEYS"].split(",") if k.strip()}
    posters = {k.strip() for k in values["EVENTS_KEYS"].split(",") if k.strip()}
    assert readers and posters and not readers & posters
