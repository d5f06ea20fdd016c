"""Tokens of an external OpenID provider: accepted as bearer tokens, mapped to hub accounts.

The provider is :class:`~.conftest.LocalIssuer`: discovery and JWKS served
over HTTP by an in-process app, ID tokens signed with its RSA key. The hub
is configured to trust it, map ``realm_access.roles`` through
``{hub-admins: admin}`` and give every one of its users ``staff``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
from authlib.deprecate import AuthlibDeprecationWarning

from objectos.security.keys import generate_signing_key

from .conftest import (
    IDP_ISSUER,
    OIDC_PROVIDER,
    PASSWORD,
    Hub,
    LocalIssuer,
    MakeHub,
    ManualClock,
    bearer,
    error_of,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken


@pytest.fixture
async def idp_client(issuer: LocalIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with issuer.http_client() as client:
        yield client


@pytest.fixture
async def hub(make_hub: MakeHub, idp_client: httpx.AsyncClient) -> Hub:
    return await make_hub(http_client=idp_client, oidc=[OIDC_PROVIDER])


async def test_a_provider_token_is_a_bearer_token_for_a_provisioned_account(
    hub: Hub, issuer: LocalIssuer
) -> None:
    response = await hub.me(bearer(issuer.token()))
    assert response.status_code == 200, response.text
    me = response.json()["data"]
    assert me["email"] == "grace@example.test"
    assert me["name"] == "Grace Hopper"
    assert me["roles"] == []  # nothing granted in the hub itself
    assert me["auth"]["method"] == "oidc"
    assert me["auth"]["issuer"] == IDP_ISSUER
    # hub-admins -> admin through roleMap, offline_access dropped, staff for everyone.
    assert me["auth"]["roles"] == ["admin", "staff"]

    again = await hub.me(bearer(issuer.token()))
    assert again.json()["data"]["id"] == me["id"]
    assert [e.type for e in hub.events] == ["user.provisioned"]
    assert issuer.requests == 1  # the JWKS is cached


async def test_accounts_are_matched_by_subject_never_by_email(
    hub: Hub, issuer: LocalIssuer
) -> None:
    local = await hub.identity.create_user("grace@example.test", PASSWORD, "Grace (local)")
    # A provider user claiming the same (verified) email does not become that account.
    response = await hub.me(bearer(issuer.token()))
    me = response.json()["data"]
    assert me["id"] != local.id
    assert me["email"] is None  # taken, so not copied
    other = await hub.me(bearer(issuer.token(sub="someone-else", email_verified=False)))
    assert other.json()["data"]["email"] is None  # unverified emails are never copied


async def test_roles_granted_in_the_hub_add_to_the_provider_roles(
    hub: Hub, issuer: LocalIssuer
) -> None:
    me = (await hub.me(bearer(issuer.token()))).json()["data"]
    await hub.identity.set_roles(me["id"], ["auditor"])
    roles = (await hub.me(bearer(issuer.token()))).json()["data"]["auth"]["roles"]
    assert roles == ["admin", "auditor", "staff"]


async def test_the_oidc_sign_in_exchanges_a_provider_token_for_hub_tokens(
    hub: Hub, issuer: LocalIssuer
) -> None:
    response = await hub.client.post("/api/v1/auth/sign-in/oidc", json={"idToken": issuer.token()})
    assert response.status_code == 200, response.text
    session = response.json()["data"]
    me = (await hub.me(bearer(session["accessToken"]))).json()["data"]
    assert me["auth"]["method"] == "token"
    assert me["auth"]["roles"] == ["admin", "staff"]
    refreshed = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert refreshed.status_code == 200

    # Hub tokens cannot be "exchanged" for more hub tokens.
    circular = await hub.client.post(
        "/api/v1/auth/sign-in/oidc", json={"idToken": session["accessToken"]}
    )
    assert circular.status_code == 401
    assert error_of(circular)["details"]["reason"] == "not an external token"


async def test_bad_provider_tokens_are_refused_with_401(
    hub: Hub, issuer: LocalIssuer, clock: ManualClock
) -> None:
    stranger = LocalIssuer(clock).key  # right issuer name, wrong key
    cases = {
        "bad signature": issuer.token(key=stranger),
        "invalid claim: aud": issuer.token(aud="someone-else"),
        "unknown issuer": issuer.token(iss="https://other-idp.example.test"),
    }
    for reason, token in cases.items():
        response = await hub.me(bearer(token))
        assert response.status_code == 401, reason
        assert error_of(response)["details"]["reason"] == reason

    expired = issuer.token(exp=int(clock()) - 1)
    response = await hub.me(bearer(expired))
    assert error_of(response)["code"] == "expired_token"

    # An EdDSA token naming the provider as issuer but carrying a hub-made key id.
    ours = generate_signing_key("EdDSA", now=clock())
    header = {"alg": "EdDSA", "kid": "k1"}
    private = {k: v for k, v in ours.jwk.as_dict(is_private=True).items() if k != "kid"}
    payload = {"iss": IDP_ISSUER, "aud": "objectos-hub", "sub": "x", "exp": int(clock()) + 60}
    forged = JsonWebToken(["EdDSA"]).encode(header, payload, private).decode()
    response = await hub.me(bearer(forged))
    assert error_of(response)["details"]["reason"] == "algorithm does not fit the key"


async def test_without_auto_provisioning_only_linked_identities_get_in(
    make_hub: MakeHub, idp_client: httpx.AsyncClient, issuer: LocalIssuer
) -> None:
    hub = await make_hub(http_client=idp_client, oidc=[{**OIDC_PROVIDER, "autoProvision": False}])
    refused = await hub.me(bearer(issuer.token()))
    assert refused.status_code == 401
    assert error_of(refused)["details"]["reason"] == "identity not linked"

    grace = await hub.identity.create_user("grace@example.test", None, "Grace")
    assert await hub.identity.link_identity(grace.id, IDP_ISSUER, "idp-user-42") is True
    admitted = await hub.me(bearer(issuer.token()))
    assert admitted.json()["data"]["id"] == grace.id


async def test_a_disabled_account_is_refused_even_with_a_valid_provider_token(
    hub: Hub, issuer: LocalIssuer
) -> None:
    me = (await hub.me(bearer(issuer.token()))).json()["data"]
    await hub.identity.deactivate(me["id"])
    response = await hub.me(bearer(issuer.token()))
    assert response.status_code == 401
    assert error_of(response)["details"]["reason"] == "account disabled"


async def test_two_replicas_meeting_a_new_identity_at_once_make_one_account(
    make_hub: MakeHub, idp_client: httpx.AsyncClient, issuer: LocalIssuer
) -> None:
    first = await make_hub(http_client=idp_client, oidc=[OIDC_PROVIDER], own_engine=True)
    second = await make_hub(http_client=idp_client, oidc=[OIDC_PROVIDER], own_engine=True)
    token = issuer.token()
    responses = await asyncio.gather(
        *(hub.me(bearer(token)) for hub in (first, second, first, second))
    )
    ids = {response.json()["data"]["id"] for response in responses}
    assert len(ids) == 1
    provisioned = [e for hub in (first, second) for e in hub.events if e.type == "user.provisioned"]
    assert len(provisioned) == 1


async def test_an_unreachable_provider_is_a_503_not_a_401_or_a_crash(
    hub: Hub, issuer: LocalIssuer
) -> None:
    issuer.status = 500
    response = await hub.me(bearer(issuer.token()))
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "service_unavailable"
    assert "Traceback" not in response.text
    # Hub tokens do not depend on the provider.
    session = await hub.session()
    assert (await hub.me(bearer(session["accessToken"]))).status_code == 200
