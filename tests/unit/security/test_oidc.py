"""External OIDC tokens verified against a real (in-process) provider's JWKS over HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from objectos.errors import ConfigError, ExpiredToken, InvalidToken, ServiceUnavailable
from objectos.security.oidc import ExternalIdentity, OIDCVerifier, TokenVerifier
from objectos.security.tokens import Claims, TokenService

from .conftest import IDP_CLIENT_ID, IDP_ISSUER, IdentityProvider, ManualClock

MakeVerifier = Callable[..., OIDCVerifier]


@pytest.fixture
async def http(idp: IdentityProvider) -> AsyncIterator[httpx.AsyncClient]:
    async with idp.client() as client:
        yield client


@pytest.fixture
def make_verifier(http: httpx.AsyncClient, clock: ManualClock) -> MakeVerifier:
    def make(**options: Any) -> OIDCVerifier:
        options.setdefault("cache_ttl_s", 600)
        options.setdefault("min_refresh_interval_s", 30)
        options.setdefault("leeway_s", 0)
        return OIDCVerifier(IDP_ISSUER, IDP_CLIENT_ID, http, clock=clock, **options)

    return make


def reason(caught: pytest.ExceptionInfo[Any]) -> str:
    return str(caught.value.details["reason"])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_token_verifies_through_discovery_and_maps_to_an_identity(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    identity = await make_verifier().verify(idp.token())

    assert identity == ExternalIdentity(
        issuer=IDP_ISSUER,
        subject="idp-user-42",
        email="ada@example.test",
        email_verified=True,
        name="Ada Lovelace",
        groups=("engineering", "admins"),
        expires_at=identity.claims["exp"],
        claims=identity.claims,
    )
    assert idp.requests == {"discovery": 1, "jwks": 1}


async def test_a_configured_jwks_uri_skips_discovery(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(jwks_uri=f"{IDP_ISSUER}/protocol/certs")
    await verifier.verify(idp.token())
    assert idp.requests == {"jwks": 1}


async def test_groups_come_from_a_configurable_nested_claim(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier(groups_claim="realm_access.roles")
    token = idp.token(groups=None, realm_access={"roles": ["sales", "support"]})
    assert (await verifier.verify(token)).groups == ("sales", "support")

    unverified_email = idp.token(email_verified=None, name=None, preferred_username="ada")
    identity = await verifier.verify(unverified_email)
    assert identity.email_verified is False and identity.name == "ada"
    assert identity.groups == ()


async def test_the_jwks_is_cached_until_its_ttl(
    idp: IdentityProvider, make_verifier: MakeVerifier, clock: ManualClock
) -> None:
    verifier = make_verifier(cache_ttl_s=600)
    for _ in range(3):
        await verifier.verify(idp.token())
    assert idp.requests["jwks"] == 1

    clock.advance(600)
    await verifier.verify(idp.token())
    assert idp.requests["jwks"] == 2
    assert idp.requests["discovery"] == 1  # the jwks_uri is remembered


async def let_everyone_queue_up() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


# With no refresh interval only the waiting itself prevents a stampede.
@pytest.mark.parametrize("interval", [30, 0])
async def test_concurrent_first_verifications_wait_for_one_fetch(
    idp: IdentityProvider, make_verifier: MakeVerifier, interval: float
) -> None:
    verifier = make_verifier(min_refresh_interval_s=interval)
    idp.gate = asyncio.Event()  # the provider is slow to answer
    pending = asyncio.gather(*(verifier.verify(idp.token()) for _ in range(10)))
    await let_everyone_queue_up()
    assert idp.requests == {"discovery": 1}
    idp.gate.set()

    identities = await pending
    assert len(identities) == 10
    assert idp.requests == {"discovery": 1, "jwks": 1}


async def test_concurrent_requests_during_an_outage_cause_one_fetch(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    verifier = make_verifier()
    idp.status = 503
    idp.gate = asyncio.Event()
    pending = asyncio.gather(
        *(verifier.verify(idp.token()) for _ in range(10)), return_exceptions=True
    )
    await let_everyone_queue_up()
    idp.gate.set()
    outcomes = await pending
    assert all(isinstance(outcome, ServiceUnavailable) for outcome in outcomes)
    assert idp.requests == {"discovery": 1}


async def test_a_new_provider_key_is_picked_up_by_one_refetch(
    idp: IdentityProvider, make_verifier: MakeVerifier, clock: ManualClock
) -> None:
    verifier = make_verifier(min_refresh_interval_s=30)
    await verifier.verify(idp.token())
    new_key = idp.add_key("ES256", kid="ec-2")  # the provider rotates
    clock.advance(30)

    identity = await verifier.verify(idp.token(key=new_key))
    assert identity.subject == "idp-user-42"
    assert idp.requests["jwks"] == 2


async def test_unknown_kids_refetch_at_most_once_per_interval(
    idp: IdentityProvider, make_verifier: MakeVerifier, clock: ManualClock
) -> None:
    verifier = make_verifier(min_refresh_interval_s=30)
    await verifier.verify(idp.token())
    assert idp.requests["jwks"] == 1

    # Kid flooding: tokens naming invented kids.
    clock.advance(30)
    for index in range(20):
        with pytest.raises(InvalidToken) as caught:
            await verifier.verify(idp.token(header={"kid": f"invented-{index}"}))
        assert reason(caught) == "unknown key id"
    assert idp.requests["jwks"] == 2  # one refetch for the first, none for the rest

    clock.advance(30)
    with pytest.raises(InvalidToken):
        await verifier.verify(idp.token(header={"kid": "invented-again"}))
    assert idp.requests["jwks"] == 3


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"aud": "some-other-client"}, "invalid claim: aud"),
        ({"iss": "https://evil.example.test"}, "invalid claim: iss"),
        ({"sub": None}, "missing claim: sub"),
        ({"aud": None}, "missing claim: aud"),
        ({"exp": None}, "missing claim: exp"),
    ],
)
async def test_claims_are_checked(
    idp: IdentityProvider, make_verifier: MakeVerifier, claims: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(idp.token(**claims))
    assert reason(caught) == expected


async def test_an_audience_list_containing_ours_is_accepted(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    await make_verifier().verify(idp.token(aud=["account", IDP_CLIENT_ID]))


async def test_expiry_honours_the_leeway(
    idp: IdentityProvider, make_verifier: MakeVerifier, clock: ManualClock
) -> None:
    verifier = make_verifier(leeway_s=60)
    token = idp.token()
    clock.advance(300 + 59)
    await verifier.verify(token)
    clock.advance(1)
    with pytest.raises(ExpiredToken):
        await verifier.verify(token)


async def test_alg_none_is_refused_before_any_fetch(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    _, payload, _ = idp.token().split(".")
    none_header = b64(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(f"{none_header}.{payload}.")
    assert reason(caught) == "algorithm not allowed"
    assert idp.requests == {}


async def test_hs256_signed_with_the_providers_public_key_is_refused(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    public_pem = idp.keys[0].as_pem(is_private=False)
    _, payload, _ = idp.token().split(".")
    forged_header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    signing_input = f"{forged_header}.{payload}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(f"{signing_input}.{b64(mac)}")
    assert reason(caught) == "algorithm not allowed"


async def test_an_algorithm_that_does_not_fit_the_named_key_is_refused(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    attacker = idp.add_key("ES256", kid="attacker")
    idp.keys.remove(attacker)  # the provider never published it
    forged = idp.token(key=attacker, header={"kid": "rsa-1"})
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(forged)
    assert reason(caught) == "algorithm does not fit the key"


async def test_the_key_type_is_checked_when_the_jwks_names_no_alg(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    idp.publish_alg = False
    attacker = idp.add_key("ES256", kid="attacker")
    idp.keys.remove(attacker)
    forged = idp.token(key=attacker, header={"kid": "rsa-1"})
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(forged)
    assert reason(caught) == "algorithm does not fit the key"
    await make_verifier().verify(idp.token())  # alg-less keys still work for their own alg


async def test_only_configured_algorithms_are_accepted(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    ps_key = idp.add_key("PS256", kid="ps-1")
    with pytest.raises(InvalidToken) as caught:
        await make_verifier(algorithms=("RS256",)).verify(idp.token(key=ps_key))
    assert reason(caught) == "algorithm not allowed"
    await make_verifier().verify(idp.token(key=ps_key))  # PS256 is in the defaults


async def test_a_tampered_token_is_refused(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    header, _, signature = idp.token().split(".")
    _, other_payload, _ = idp.token(sub="someone-else").split(".")
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(f"{header}.{other_payload}.{signature}")
    assert reason(caught) == "bad signature"


async def test_a_token_signed_by_an_unpublished_key_under_a_known_kid_is_refused(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    impostor = IdentityProvider(idp.clock)  # same kid "rsa-1", different key
    with pytest.raises(InvalidToken) as caught:
        await make_verifier().verify(impostor.token())
    assert reason(caught) == "bad signature"


async def test_an_unreachable_provider_is_service_unavailable_and_not_hammered(
    idp: IdentityProvider, make_verifier: MakeVerifier, clock: ManualClock
) -> None:
    idp.status = 500
    verifier = make_verifier(min_refresh_interval_s=30)
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(idp.token())
    assert idp.requests["discovery"] == 1

    idp.status = 200
    clock.advance(30)
    await verifier.verify(idp.token())


async def test_a_cached_jwks_outlives_an_outage(
    idp: IdentityProvider, make_verifier: MakeVerifier, clock: ManualClock
) -> None:
    verifier = make_verifier(cache_ttl_s=600)
    await verifier.verify(idp.token())
    idp.status = 503
    clock.advance(601)
    await verifier.verify(idp.token())  # stale keys still verify
    assert idp.requests["jwks"] == 2  # a refresh was attempted


async def test_a_transport_failure_is_service_unavailable(clock: ManualClock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        verifier = OIDCVerifier(IDP_ISSUER, IDP_CLIENT_ID, client, clock=clock)
        with pytest.raises(ServiceUnavailable) as caught:
            await verifier.verify(IdentityProvider(clock).token())
    assert "ConnectError" in reason(caught)


async def test_a_discovery_document_for_another_issuer_is_refused(
    idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    idp.advertised_issuer = "https://evil.example.test"
    with pytest.raises(ServiceUnavailable) as caught:
        await make_verifier().verify(idp.token())
    assert reason(caught) == "discovery document names another issuer"
    assert idp.requests["jwks"] == 0


def test_symmetric_or_absent_algorithms_cannot_be_configured(http: httpx.AsyncClient) -> None:
    for algorithms in (("HS256",), ("none",), ()):
        with pytest.raises(ConfigError):
            OIDCVerifier(IDP_ISSUER, IDP_CLIENT_ID, http, algorithms=algorithms)


# --- TokenVerifier ----------------------------------------------------------


async def test_the_token_verifier_routes_by_issuer(
    tokens: TokenService, idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    verifier = TokenVerifier(tokens, [make_verifier()])

    hub_claims = await verifier.verify(tokens.issue_access("user-1", ["sales"]))
    assert isinstance(hub_claims, Claims) and hub_claims.subject == "user-1"

    external = await verifier.verify(idp.token())
    assert isinstance(external, ExternalIdentity) and external.subject == "idp-user-42"


async def test_the_unverified_issuer_only_selects_the_verifier(
    tokens: TokenService, idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    verifier = TokenVerifier(tokens, [make_verifier()])

    # Provider-signed token claiming to be the hub's: the hub refuses it (RS256
    # is not an algorithm of its keys, and "rsa-1" is not one of its kids).
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(idp.token(iss=tokens.issuer))
    assert reason(caught) == "algorithm not allowed"

    # Hub-signed token claiming the provider's issuer: the provider's keys refuse it.
    hub_token = tokens.issue_access("user-1")
    header, payload, signature = hub_token.split(".")
    pad = "=" * (-len(payload) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload + pad))
    relabelled = b64(json.dumps({**claims, "iss": IDP_ISSUER}).encode())
    with pytest.raises(InvalidToken):
        await verifier.verify(f"{header}.{relabelled}.{signature}")


async def test_unknown_issuers_and_garbage_are_refused(
    tokens: TokenService, idp: IdentityProvider, make_verifier: MakeVerifier
) -> None:
    verifier = TokenVerifier(tokens, [make_verifier()])
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(idp.token(iss="https://unknown.example.test"))
    assert reason(caught) == "unknown issuer"
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify("not a token")
    assert reason(caught) == "malformed token"


def test_two_verifiers_for_one_issuer_are_a_config_error(
    tokens: TokenService, make_verifier: MakeVerifier, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ConfigError):
        TokenVerifier(tokens, [make_verifier(), make_verifier()])
    with pytest.raises(ConfigError):
        TokenVerifier(tokens, [OIDCVerifier(tokens.issuer, "x", http)])
