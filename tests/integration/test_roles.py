"""Roles (issue 23), tried as an attacker would: reader and admin keys, and Microsoft Entra tokens
signed by a test issuer whose OpenID configuration and keys the suite serves over real HTTP,
over every route of the OpenAPI document, against the real app and Azurite."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from shared.conventions import container_name
from shared.settings import Settings

from ..helpers import blob_event
from ..support.entra import AUDIENCE, CLIENT_ID, OTHER_TENANT, TENANT, TokenIssuer, new_key, running_issuer
from ..support.stack import EVENTS_KEY, READ_KEY, TEST_KEY, RunningApp, settings_for

JOB = "RolesJob"
C = container_name(JOB)
VALUES = {"job_id": JOB, "task_id": "t1", "kind": "TaskOutput", "path": "a.txt", "operation_id": "0" * 32}
UNAUTHORIZED = {"error": {"code": "Unauthorized", "message": "A valid key is required."}}
FORBIDDEN = {"error": {"code": "Forbidden", "message": "The credential presented does not allow this."}}
READ, ADMIN = ["Outputs.Read"], ["Outputs.Admin"]


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    yield from running_issuer()


@pytest.fixture
def entra_app(serve: Callable[..., RunningApp], azurite, issuer: TokenIssuer) -> RunningApp:
    app = serve(settings_for(azurite, **issuer.settings()))
    assert app.post_events([blob_event(C, "t1/$TaskOutput/a.txt")]).json()["indexed"] == 1
    return app


def operations(app: RunningApp) -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document but the webhook and health, IDs filled in."""
    document = app.get("/api/openapi.json").json()
    found = [(method.upper(), path.format(**VALUES)) for path, item in document["paths"].items() for method in item
             if path not in ("/api/events", "/api/health")]
    assert len(found) >= 15, found  # the whole API, not a handful
    return found


def call(app: RunningApp, method: str, path: str, *, key: str | None = None, token: str | None = None) -> httpx.Response:
    headers = {}
    if key is not None:
        headers["x-functions-key"] = key
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body = {} if method in ("PUT", "POST") else None
    return httpx.request(method, f"{app.url}{path}", json=body, headers=headers, timeout=60)


def is_read(method: str, path: str) -> bool:
    return method == "GET" and not path.startswith(("/api/admin/", "/api/operations/"))


def assert_role_matrix(app: RunningApp, reader: dict, admin: dict) -> None:
    """A reader gets what an admin gets on every read, and 403 on everything else; an admin is
    never refused. (Reads are compared with the admin's answer: some are 404 by design.)"""
    for method, path in operations(app):
        as_admin = call(app, method, path, **admin)
        assert as_admin.status_code not in (401, 403), (method, path, as_admin.text)
        as_reader = call(app, method, path, **reader)
        if is_read(method, path):
            assert as_reader.status_code == as_admin.status_code, (method, path, as_reader.text)
        else:
            assert (as_reader.status_code, as_reader.json()) == (403, FORBIDDEN), (method, path)
    for presented in (reader, admin):
        event = blob_event(C, "t1/$TaskOutput/forged.txt")
        headers = {"x-functions-key": presented["key"]} if "key" in presented else {"authorization": f"Bearer {presented['token']}"}
        assert httpx.post(f"{app.url}/api/events", json=[event], headers=headers).status_code == 401
    assert "forged.txt" not in {o["path"] for o in app.all_pages(f"/api/jobs/{JOB}/task-outputs")}


def test_reader_and_admin_keys_over_every_route(entra_app: RunningApp) -> None:
    assert call(entra_app, "GET", f"/api/jobs/{JOB}/tasks/t1/outputs", key=READ_KEY).json()["value"][0]["path"] == "a.txt"
    assert_role_matrix(entra_app, reader={"key": READ_KEY}, admin={"key": TEST_KEY})


def test_read_and_admin_tokens_over_every_route(entra_app: RunningApp, issuer: TokenIssuer) -> None:
    read_token = issuer.token(READ)
    assert call(entra_app, "GET", f"/api/jobs/{JOB}/tasks/t1/outputs", token=read_token).json()["value"][0]["path"] == "a.txt"
    assert_role_matrix(entra_app, reader={"token": read_token}, admin={"token": issuer.token(ADMIN)})


def test_the_detailed_health_is_an_admins(entra_app: RunningApp, issuer: TokenIssuer) -> None:
    for presented in ({"key": READ_KEY}, {"token": issuer.token(READ)}):
        assert call(entra_app, "GET", "/api/health?detail=true", **presented).status_code == 403
        assert call(entra_app, "GET", "/api/admin/health", **presented).status_code == 403
    for presented in ({"key": TEST_KEY}, {"token": issuer.token(ADMIN)}):
        assert call(entra_app, "GET", "/api/health?detail=true", **presented).status_code == 200
    assert call(entra_app, "GET", "/api/health?detail=true", key=EVENTS_KEY).status_code == 401


def bad_tokens(issuer: TokenIssuer) -> dict[str, str]:
    now = int(time.time())
    return {
        # 10 minutes either side: well past the leeway for clock skew
        "expired": issuer.token(ADMIN, iat=now - 4000, nbf=now - 4000, exp=now - 600),
        "not yet valid": issuer.token(ADMIN, nbf=now + 600),
        "no expiry": issuer.token(ADMIN, exp=None),
        "wrong audience": issuer.token(ADMIN, aud="api://another-app"),
        "no audience": issuer.token(ADMIN, aud=None),
        "wrong issuer": issuer.token(ADMIN, iss=f"https://login.microsoftonline.com/{TENANT}/v2.0"),
        # Entra signs every tenant's tokens with the same keys: only the issuer tells them apart.
        "another tenant": issuer.token(ADMIN, iss=issuer.issuer(OTHER_TENANT), tid=OTHER_TENANT),
        "v1 issuer": issuer.token(ADMIN, iss=f"https://sts.windows.net/{TENANT}/"),
        "wrong signature": issuer.token(ADMIN, key=new_key()),
        "unknown kid": issuer.token(ADMIN, kid="never-published", key=new_key()),
        "alg none": issuer.unsigned_token(ADMIN),
        "HS256 keyed with the public key": issuer.hmac_token(ADMIN),
        "tampered roles": _swap_payload(issuer.token(READ), issuer.token(ADMIN)),
        "not a JWT": "not-a-token",
        "empty segments": "..",
    }


def _swap_payload(signed_for: str, payload_from: str) -> str:
    header, _, signature = signed_for.split(".")
    return f"{header}.{payload_from.split('.')[1]}.{signature}"


def test_every_bad_token_is_refused_with_nothing_said(entra_app: RunningApp, issuer: TokenIssuer, caplog) -> None:
    for case, token in bad_tokens(issuer).items():
        for method, path in (("GET", "/api/jobs"), ("GET", f"/api/jobs/{JOB}/task-outputs"), ("PUT", f"/api/jobs/{JOB}/quota")):
            response = call(entra_app, method, path, token=token)
            assert (response.status_code, response.json()) == (401, UNAUTHORIZED), (case, method, path, response.text)
    # The quota was never set: the index is untouched.
    assert call(entra_app, "GET", f"/api/jobs/{JOB}/quota", key=TEST_KEY).json()["maxOutputs"] in (0, None)
    # The log says why (the caller is not told).
    assert any("invalid token" in r.getMessage() for r in caplog.records)


def test_a_valid_token_without_an_app_role_of_ours_is_403(entra_app: RunningApp, issuer: TokenIssuer) -> None:
    for roles in (None, [], ["Outputs.Write"], ["outputs.read"]):
        response = call(entra_app, "GET", "/api/jobs", token=issuer.token(roles))
        assert (response.status_code, response.json()) == (403, FORBIDDEN), roles


def test_an_invalid_token_is_401_even_beside_a_valid_key(entra_app: RunningApp, issuer: TokenIssuer) -> None:
    assert call(entra_app, "GET", "/api/jobs", key=TEST_KEY, token=issuer.unsigned_token(ADMIN)).status_code == 401
    assert call(entra_app, "GET", "/api/jobs", key=TEST_KEY, token=issuer.token(READ)).status_code == 200


def test_tokens_are_refused_when_entra_is_not_configured(app: RunningApp, issuer: TokenIssuer) -> None:
    assert app.settings.entra is None
    response = call(app, "GET", "/api/jobs", token=issuer.token(ADMIN))
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)


def test_keys_are_fetched_once_and_again_only_for_a_new_kid_at_most_once_a_minute(
        serve: Callable[..., RunningApp], azurite, issuer: TokenIssuer) -> None:
    app = serve(settings_for(azurite, **issuer.settings(discover=False)))
    before = issuer.hits.copy()
    for _ in range(5):
        assert call(app, "GET", "/api/jobs", token=issuer.token(READ)).status_code == 200
    assert issuer.hits["keys"] - before["keys"] == 1  # cached
    assert issuer.hits["openid-configuration"] == before["openid-configuration"]  # ENTRA_JWKS_URL: no discovery
    # Entra announces a new key, then signs with it: one fetch finds it.
    issuer.rotate_in("key-2")
    assert call(app, "GET", "/api/jobs", token=issuer.token(READ, kid="key-2")).status_code == 200
    assert issuer.hits["keys"] - before["keys"] == 2
    # A flood of made-up kids makes no more fetches (the next is a minute away).
    for n in range(20):
        assert call(app, "GET", "/api/jobs", token=issuer.token(READ, kid=f"forged-{n}", key=new_key())).status_code == 401
    assert issuer.hits["keys"] - before["keys"] == 2


def test_the_keys_are_found_through_the_openid_configuration(entra_app: RunningApp, issuer: TokenIssuer) -> None:
    before = issuer.hits["openid-configuration"]
    app_settings: Settings = entra_app.settings
    assert app_settings.entra is not None and app_settings.entra.jwks_url is None
    # The fixture's app has not been asked with a token yet in this test: the first one discovers.
    assert call(entra_app, "GET", "/api/jobs", token=issuer.token(READ, aud=AUDIENCE)).status_code == 200
    assert call(entra_app, "GET", "/api/jobs", token=issuer.token(READ, aud=CLIENT_ID)).status_code == 200
    assert issuer.hits["openid-configuration"] == before + 1


def test_under_the_host_the_app_checks_every_role_itself(serve: Callable[..., RunningApp], azurite, issuer: TokenIssuer) -> None:
    # hosted: built as functions/http_app.py builds it, settings read on the first request; the
    # host checks no key on the API (auth level anonymous), so the app refuses what it must.
    app = serve(settings_for(azurite, **issuer.settings()), hosted=True)
    assert httpx.get(f"{app.url}/api/jobs").status_code == 401
    assert call(app, "GET", "/api/jobs", key=EVENTS_KEY).status_code == 401
    assert call(app, "GET", "/api/jobs", key=READ_KEY).status_code == 200
    assert call(app, "GET", "/api/jobs", token=issuer.token(READ)).status_code == 200
    assert call(app, "POST", f"/api/jobs/{JOB}/reindex", token=issuer.token(READ)).status_code == 403
    assert call(app, "POST", "/api/admin/replay-deadletters", key=READ_KEY).status_code == 403


def test_an_issuer_that_cannot_be_reached_is_not_asked_once_per_request(
        serve: Callable[..., RunningApp], azurite, issuer: TokenIssuer) -> None:
    app = serve(settings_for(azurite, **issuer.settings(), ENTRA_JWKS_URL=f"{issuer.base}/gone/keys"))
    before = issuer.hits["other"]
    for _ in range(5):
        response = call(app, "GET", "/api/jobs", token=issuer.token(READ))
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    assert issuer.hits["other"] - before == 1
    assert call(app, "GET", "/api/jobs", key=READ_KEY).status_code == 200  # keys do not depend on the issuer
