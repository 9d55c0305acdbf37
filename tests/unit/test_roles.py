"""Roles and Entra settings (issue 23): which role a request needs, and the settings refused at
start (a key in two roles, Entra without an issuer, a key source that is not https)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared.http.app import create_app
from shared.http.dependencies import Role, required_role
from shared.settings import Settings, SettingsError

BASE = {"OUTPUTS_STORAGE": "UseDevelopmentStorage=true", "INDEX_STORAGE": "UseDevelopmentStorage=true"}
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(("method", "path", "role"), [
    ("GET", "/api/jobs", Role.READER),
    ("GET", "/api/jobs/j/quota", Role.READER),
    ("HEAD", "/api/jobs/j", Role.READER),
    # routes added by other issues inherit the rule without naming it
    ("GET", "/api/jobs/j/changes", Role.READER),
    ("GET", "/api/operations/abc", Role.ADMIN),
    ("GET", "/api/admin/health", Role.ADMIN),
    ("PUT", "/api/jobs/j/quota", Role.ADMIN),
    ("PUT", "/api/jobs/j", Role.ADMIN),
    ("POST", "/api/jobs/j/reindex", Role.ADMIN),
    ("POST", "/api/admin/replay-deadletters", Role.ADMIN),
    ("DELETE", "/api/jobs/j", Role.ADMIN),
    ("OPTIONS", "/api/jobs", Role.ADMIN),
])
def test_a_read_is_a_readers_and_anything_else_an_admins(method: str, path: str, role: Role) -> None:
    assert required_role(method, path) is role


@pytest.mark.parametrize(("first", "second"), [("READ_KEYS", "API_KEYS"), ("READ_KEYS", "EVENTS_KEYS"), ("API_KEYS", "EVENTS_KEYS")])
def test_a_key_in_two_roles_is_refused_at_start(first: str, second: str) -> None:
    values = {**BASE, first: "shared-key, own-1", second: "own-2,shared-key"}
    with pytest.raises(SettingsError, match=f"both {first} and {second}"):
        Settings.from_mapping(values)


def test_served_directly_a_bad_setting_stops_the_app_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READ_KEYS", "local-dev-key")  # also an API_KEYS key of the sample settings
    monkeypatch.setenv("API_KEYS", "local-dev-key")
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="one role"):
        create_app()
    # Under the host: read on the first request, and every request refused while they are wrong.
    hosted = create_app(hosted=True)

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hosted), base_url="http://app") as client:
            return await client.get("/api/jobs", headers={"x-functions-key": "local-dev-key"})

    response = asyncio.run(ask())
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "SettingsInvalid", "message": "The app's settings are invalid; its log says which."}}
    assert "local-dev-key" not in response.text


def test_keys_by_role() -> None:
    settings = Settings.from_mapping({**BASE, "READ_KEYS": " r1 ,r2,", "API_KEYS": "a1", "EVENTS_KEYS": "e1"})
    assert (settings.read_keys, settings.api_keys, settings.events_keys) == (("r1", "r2"), ("a1",), ("e1",))
    assert settings.entra is None


def test_entra_issuer_from_the_tenant() -> None:
    entra = Settings.from_mapping({**BASE, "ENTRA_AUDIENCE": "api://outputs, 6e74172b-be56-4843-9ff4-e66a39bb12e3",
                                   "ENTRA_TENANT_ID": TENANT.upper()}).entra
    assert entra is not None
    assert entra.issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert entra.audiences == ("api://outputs", "6e74172b-be56-4843-9ff4-e66a39bb12e3")
    assert entra.jwks_url is None


def test_entra_issuer_and_keys_given() -> None:
    entra = Settings.from_mapping({**BASE, "ENTRA_AUDIENCE": "api://outputs", "ENTRA_TENANT_ID": TENANT,
                                   "ENTRA_ISSUER": "https://sts.contoso.com/t/v2.0/",
                                   "ENTRA_JWKS_URL": "https://sts.contoso.com/t/keys"}).entra
    assert entra is not None and (entra.issuer, entra.jwks_url) == ("https://sts.contoso.com/t/v2.0", "https://sts.contoso.com/t/keys")


@pytest.mark.parametrize("values", [
    {"ENTRA_AUDIENCE": "api://outputs"},  # no tenant, no issuer
    {"ENTRA_AUDIENCE": "api://outputs", "ENTRA_TENANT_ID": "contoso.onmicrosoft.com"},  # v2 issuers carry the GUID
    {"ENTRA_AUDIENCE": "api://outputs", "ENTRA_ISSUER": "http://sts.contoso.com/t/v2.0"},  # http off loopback
    {"ENTRA_AUDIENCE": "api://outputs", "ENTRA_TENANT_ID": TENANT, "ENTRA_JWKS_URL": "http://keys.contoso.com/"},
    {"ENTRA_AUDIENCE": "api://outputs", "ENTRA_ISSUER": "https://user@sts.contoso.com/"},
])
def test_entra_settings_that_cannot_be_trusted_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_mapping({**BASE, **values})


def test_without_an_audience_the_other_entra_settings_do_nothing() -> None:
    assert Settings.from_mapping({**BASE, "ENTRA_TENANT_ID": TENANT}).entra is None
