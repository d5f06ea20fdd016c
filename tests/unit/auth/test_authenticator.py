"""HubAuthenticator over HTTP: forged and bent JWTs, API keys, and what a 401 says.

The adversarial tokens are assembled by hand or signed with keys the hub
does not trust, exactly as an attacker would, and sent to ``/api/v1/auth/me``
through the real routes. Every refusal must be a 401 with the protocol code
and a ``WWW-Authenticate`` challenge, and must not depend on the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

import httpx
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from objectos.api.auth import error_response
from objectos.data.actor import Actor
from objectos.errors import InvalidField
from objectos.security.keys import generate_signing_key

from .conftest import Hub, ManualClock, bearer, error_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    decode = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))  # noqa: E731
    return decode(header), decode(payload), signature


def signed(header: dict[str, Any], payload: dict[str, Any], jwk: Any) -> str:
    private = {k: v for k, v in jwk.as_dict(is_private=True).items() if k != "kid"}
    token: bytes = JsonWebToken([header["alg"]]).encode(dict(header), payload, private)
    return token.decode()


@pytest.fixture
async def access_token(hub: Hub) -> str:
    token: str = (await hub.session())["accessToken"]
    return token


async def refused(hub: Hub, headers: dict[str, str]) -> tuple[str, str, str]:
    """(code, reason, WWW-Authenticate) of a request that must be refused with 401."""
    response = await hub.me(headers)
    assert response.status_code == 401, response.text
    error = error_of(response)
    return error["code"], error["details"].get("reason", ""), response.headers["www-authenticate"]


async def test_a_request_without_credentials_gets_the_bare_challenge(hub: Hub) -> None:
    code, reason, challenge = await refused(hub, {})
    assert (code, reason) == ("unauthenticated", "missing credentials")
    assert challenge == 'Bearer realm="objectos"'


async def test_alg_none_is_refused(hub: Hub, access_token: str) -> None:
    header, payload, _ = parts(access_token)
    forged = f"{segment({**header, 'alg': 'none'})}.{segment(payload)}."
    code, reason, challenge = await refused(hub, bearer(forged))
    assert code == "invalid_token"
    assert reason == "algorithm not allowed"
    assert challenge == (
        'Bearer realm="objectos", error="invalid_token", error_description="algorithm not allowed"'
    )


async def test_a_token_signed_by_another_key_under_our_kid_is_refused(
    hub: Hub, access_token: str, clock: ManualClock
) -> None:
    header, payload, _ = parts(access_token)
    stranger = generate_signing_key("EdDSA", now=clock())
    code, reason, _ = await refused(hub, bearer(signed(header, payload, stranger.jwk)))
    assert (code, reason) == ("invalid_token", "bad signature")


async def test_hs256_signed_with_the_published_public_key_is_refused(
    hub: Hub, access_token: str
) -> None:
    # Algorithm confusion: use the public JWK (which anyone can fetch) as an HMAC secret.
    header, payload, _ = parts(access_token)
    public = (await hub.client.get("/.well-known/jwks.json")).json()["keys"][0]
    signing_input = f"{segment({**header, 'alg': 'HS256'})}.{segment(payload)}"
    mac = hmac.new(json.dumps(public).encode(), signing_input.encode(), hashlib.sha256).digest()
    code, reason, _ = await refused(hub, bearer(f"{signing_input}.{b64(mac)}"))
    assert (code, reason) == ("invalid_token", "algorithm not allowed")


async def test_a_tampered_payload_breaks_the_signature(hub: Hub, access_token: str) -> None:
    header, payload, signature = parts(access_token)
    promoted = {**payload, "roles": ["admin"]}
    forged = f"{segment(header)}.{segment(promoted)}.{signature}"
    code, reason, _ = await refused(hub, bearer(forged))
    assert (code, reason) == ("invalid_token", "bad signature")


async def test_an_expired_token_is_expired_token(
    hub: Hub, access_token: str, clock: ManualClock
) -> None:
    assert (await hub.me(bearer(access_token))).status_code == 200
    clock.advance(900)
    code, reason, challenge = await refused(hub, bearer(access_token))
    assert (code, reason) == ("expired_token", "token expired")
    assert 'error="invalid_token"' in challenge  # RFC 6750 has one code for both


async def test_a_token_of_an_unconfigured_issuer_is_refused(
    hub: Hub, access_token: str, clock: ManualClock
) -> None:
    header, payload, _ = parts(access_token)
    # Properly signed, even with a key of the right type, but nobody trusts this issuer.
    outsider = generate_signing_key("EdDSA", now=clock())
    forged = signed(
        {**header, "kid": outsider.kid}, {**payload, "iss": "https://evil.example"}, outsider.jwk
    )
    code, reason, _ = await refused(hub, bearer(forged))
    assert (code, reason) == ("invalid_token", "unknown issuer")


async def test_our_own_token_for_another_audience_is_refused(
    hub: Hub, make_hub: Any, access_token: str
) -> None:
    other = await make_hub(audience="another-app")  # same key file, other audience
    token = other.identity.tokens.issue_access("user-1", ["user"])
    code, reason, _ = await refused(hub, bearer(token))
    assert (code, reason) == ("invalid_token", "invalid claim: aud")


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer", "malformed token"),
        ("Bearer not.a.jwt", "malformed token"),
        ("Bearer " + "a" * 9000, "malformed token"),
        ("Basic YWRhOnB3", "unsupported authorization scheme"),
    ],
)
async def test_garbage_credentials_are_invalid_tokens(
    hub: Hub, authorization: str, reason: str
) -> None:
    code, got, _ = await refused(hub, {"Authorization": authorization})
    assert (code, got) == ("invalid_token", reason)


async def test_two_credentials_at_once_are_refused(hub: Hub, access_token: str) -> None:
    code, reason, _ = await refused(hub, {**bearer(access_token), "X-API-Key": "oos_x"})
    assert (code, reason) == ("invalid_token", "more than one credential")


async def test_the_scheme_name_is_case_insensitive(hub: Hub, access_token: str) -> None:
    response = await hub.me({"Authorization": f"bearer {access_token}"})
    assert response.status_code == 200


# -- API keys -----------------------------------------------------------------------------


@pytest.fixture
async def robot(hub: Hub) -> tuple[str, str, str]:
    """(service account id, key id, plaintext key) of a service account with one key."""
    account = await hub.identity.create_service_account("billing-sync", roles=["integration"])
    record, key = await hub.identity.create_api_key(account.id, ["data:read"], name="ci")
    return account.id, record.key_id, key


async def test_an_api_key_authenticates_its_service_account_either_way(
    hub: Hub, robot: tuple[str, str, str]
) -> None:
    account_id, _, key = robot
    for headers in ({"X-API-Key": key}, {"Authorization": f"ApiKey {key}"}):
        response = await hub.me(headers)
        assert response.status_code == 200, response.text
        me = response.json()["data"]
        assert me["id"] == account_id
        assert me["kind"] == "service" and me["email"] is None
        assert me["auth"]["method"] == "api_key"
        assert me["auth"]["roles"] == ["integration"]
        assert me["auth"]["scopes"] == ["data:read"]


async def test_a_revoked_key_stops_working_on_the_next_request(
    hub: Hub, robot: tuple[str, str, str]
) -> None:
    _, key_id, key = robot
    assert await hub.identity.revoke_api_key(key_id) is True
    code, reason, _ = await refused(hub, {"X-API-Key": key})
    assert (code, reason) == ("invalid_token", "api key revoked")
    assert await hub.identity.revoke_api_key(key_id) is False


async def test_a_wrong_secret_or_unknown_key_is_refused_alike(
    hub: Hub, robot: tuple[str, str, str]
) -> None:
    key = robot[2]
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown_id = "oos_" + "0" * 16 + key[20:]
    for presented in (wrong_secret, unknown_id):
        code, reason, _ = await refused(hub, {"X-API-Key": presented})
        assert (code, reason) == ("invalid_token", "invalid api key")
    code, reason, _ = await refused(hub, {"X-API-Key": "hunter2"})
    assert (code, reason) == ("invalid_token", "malformed api key")


async def test_an_expired_key_is_expired_token(hub: Hub, clock: ManualClock) -> None:
    account = await hub.identity.create_service_account("nightly", roles=["integration"])
    _, key = await hub.identity.create_api_key(account.id, ttl_s=3600)
    assert (await hub.me({"X-API-Key": key})).status_code == 200
    clock.advance(3600)
    code, reason, _ = await refused(hub, {"X-API-Key": key})
    assert (code, reason) == ("expired_token", "api key expired")


async def test_a_disabled_service_account_loses_every_key(
    hub: Hub, robot: tuple[str, str, str]
) -> None:
    account_id, _, key = robot
    await hub.identity.deactivate(account_id)
    code, reason, _ = await refused(hub, {"X-API-Key": key})
    assert (code, reason) == ("unauthenticated", "account disabled")


async def test_api_keys_are_for_service_accounts_only(hub: Hub) -> None:
    person = await hub.identity.create_user("ada@example.test", None, "Ada")
    with pytest.raises(InvalidField) as caught:
        await hub.identity.create_api_key(person.id)
    assert caught.value.field_errors[0].field == "owner"


# -- as the data routes use it ------------------------------------------------------------


async def test_the_authenticator_is_a_plain_request_to_actor_callable(
    hub: Hub, access_token: str
) -> None:
    """The data routes take ``authenticate(request) -> Actor``; the verified details
    land in ``request.state.auth`` for the rate limiter and audit."""

    async def whoami(request: Request) -> JSONResponse:
        try:
            actor: Actor = await hub.authenticator(request)
        except Exception as exc:
            return error_response(request, exc)
        auth = request.state.auth
        return JSONResponse({"user": actor.user_id, "system": actor.system, "method": auth.method})

    app = Starlette(routes=[Route("/whoami", whoami)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
    ) as client:
        ok = await client.get("/whoami", headers=bearer(access_token))
        anonymous = await client.get("/whoami")
    user_id = parts(access_token)[1]["sub"]
    assert ok.json() == {"user": user_id, "system": False, "method": "token"}
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="objectos"'
