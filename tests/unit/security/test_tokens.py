"""Access tokens against forged and bent JWTs; refresh-token rotation and reuse detection.

The adversarial tokens are assembled by hand (base64url + JSON, or signed
with a key the hub does not trust), exactly as an attacker would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

import pytest
from authlib.deprecate import AuthlibDeprecationWarning

from objectos.errors import ConfigError, ExpiredToken, InvalidToken
from objectos.security.keys import FileKeyStore, KeyRing, generate_signing_key
from objectos.security.tokens import InMemoryRefreshTokenStore, TokenService, hash_refresh_token

from .conftest import AUDIENCE, ISSUER, ManualClock

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj).encode())


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


def sign(header: dict[str, Any], payload: dict[str, Any], jwk: Any) -> str:
    """A properly signed JWT with exactly the header and claims a test wants."""
    # Handing authlib a key without a kid stops it from writing the key's kid
    # into the header, so tests control the header completely.
    private = {k: v for k, v in jwk.as_dict(is_private=True).items() if k != "kid"}
    token: bytes = JsonWebToken([header["alg"]]).encode(dict(header), payload, private)
    return token.decode()


def reason(caught: pytest.ExceptionInfo[InvalidToken]) -> str:
    return str(caught.value.details["reason"])


@pytest.fixture
def valid(tokens: TokenService) -> str:
    return tokens.issue_access("user-1", ["sales"], {"tenant": "acme"})


def test_an_issued_token_verifies_with_its_claims(
    tokens: TokenService, keyring: KeyRing, valid: str, clock: ManualClock
) -> None:
    header, payload, _ = split(valid)
    assert header == {"alg": "EdDSA", "kid": keyring.current.kid, "typ": "JWT"}
    assert payload["typ"] == "access"
    assert payload["nbf"] == payload["iat"] == int(clock.now)

    claims = tokens.verify_access(valid)
    assert claims.subject == "user-1"
    assert claims.roles == ("sales",)
    assert claims.issuer == ISSUER and claims.audience == AUDIENCE
    assert claims.expires_at == int(clock.now) + 900
    assert claims.extra == {"tenant": "acme"}
    assert (
        claims.token_id
        and claims.token_id != tokens.verify_access(tokens.issue_access("user-1")).token_id
    )


def test_extra_claims_cannot_override_the_services_claims(tokens: TokenService) -> None:
    for name in ("sub", "exp", "typ", "roles", "iss"):
        with pytest.raises(ValueError):
            tokens.issue_access("user-1", extra_claims={name: "x"})


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_without_signature_is_refused(tokens: TokenService, valid: str, alg: str) -> None:
    header, payload, _ = split(valid)
    forged = f"{segment({**header, 'alg': alg})}.{segment(payload)}."
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(forged)
    assert reason(caught) == "algorithm not allowed"


@pytest.mark.parametrize("secret_form", ["pem", "raw", "jwk-json"])
def test_hs256_signed_with_the_public_key_is_refused(
    tokens: TokenService, keyring: KeyRing, valid: str, secret_form: str
) -> None:
    # Algorithm confusion: the public key is public, so if the verifier let
    # the token pick HMAC, anyone could "sign" with it.
    public = keyring.current.jwk
    secret = {
        "pem": public.as_pem(is_private=False),
        "raw": base64.urlsafe_b64decode(public.as_dict()["x"] + "=="),
        "jwk-json": json.dumps(keyring.current.public_jwk()).encode(),
    }[secret_form]
    header, payload, _ = split(valid)
    signing_input = f"{segment({**header, 'alg': 'HS256'})}.{segment(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(f"{signing_input}.{b64(mac)}")
    assert reason(caught) == "algorithm not allowed"


def test_a_token_signed_by_another_key_under_our_kid_is_refused(
    tokens: TokenService, keyring: KeyRing, valid: str
) -> None:
    header, payload, _ = split(valid)
    attacker = generate_signing_key(now=0)
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign(header, payload, attacker.jwk))
    assert reason(caught) == "bad signature"


def test_another_algorithm_under_our_kid_is_refused(
    tokens: TokenService, keyring: KeyRing, valid: str
) -> None:
    header, payload, _ = split(valid)
    attacker = generate_signing_key("ES256", now=0)
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign({**header, "alg": "ES256"}, payload, attacker.jwk))
    assert reason(caught) == "algorithm not allowed"


def test_a_tampered_payload_with_the_original_signature_is_refused(
    tokens: TokenService, valid: str
) -> None:
    _header, payload, signature = split(valid)
    tampered = {**payload, "roles": ["admin"]}
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(f"{valid.split('.')[0]}.{segment(tampered)}.{signature}")
    assert reason(caught) == "bad signature"


def test_an_expired_token_is_refused_from_its_exp_second_on(
    tokens: TokenService, valid: str, clock: ManualClock
) -> None:
    clock.advance(899)
    tokens.verify_access(valid)
    clock.advance(1)
    with pytest.raises(ExpiredToken) as caught:
        tokens.verify_access(valid)
    assert caught.value.code == "expired_token"
    assert caught.value.details["reason"] == "token expired"


def test_leeway_tolerates_small_clock_skew(keyring: KeyRing, clock: ManualClock) -> None:
    lenient = TokenService(keyring, ISSUER, AUDIENCE, clock=clock, leeway_s=30)
    token = lenient.issue_access("user-1")
    clock.advance(900 + 29)
    lenient.verify_access(token)
    clock.advance(1)
    with pytest.raises(ExpiredToken):
        lenient.verify_access(token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_from_the_future_is_refused(
    tokens: TokenService, keyring: KeyRing, valid: str, claim: str
) -> None:
    header, payload, _ = split(valid)
    future = {**payload, claim: payload[claim] + 60}
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign(header, future, keyring.current.jwk))
    assert reason(caught) == "token not yet valid"


@pytest.mark.parametrize(
    ("claim", "value", "expected"),
    [
        ("iss", "https://evil.example.test", "invalid claim: iss"),
        ("aud", "some-other-service", "invalid claim: aud"),
        ("typ", "refresh", "wrong token type"),
        ("roles", "admin", "invalid claim: roles"),
    ],
)
def test_properly_signed_tokens_with_wrong_claims_are_refused(
    tokens: TokenService, keyring: KeyRing, valid: str, claim: str, value: str, expected: str
) -> None:
    header, payload, _ = split(valid)
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign(header, {**payload, claim: value}, keyring.current.jwk))
    assert reason(caught) == expected


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud", "typ", "jti"])
def test_required_claims_must_be_present(
    tokens: TokenService, keyring: KeyRing, valid: str, claim: str
) -> None:
    header, payload, _ = split(valid)
    del payload[claim]
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign(header, payload, keyring.current.jwk))
    assert reason(caught) == f"missing claim: {claim}"


async def test_a_refresh_token_is_not_an_access_token(tokens: TokenService) -> None:
    _access, refresh = await tokens.issue_session("user-1")
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(refresh)
    assert reason(caught) == "malformed token"


def test_unknown_and_missing_kids_are_refused(tokens: TokenService, valid: str) -> None:
    header, payload, _ = split(valid)
    stranger = generate_signing_key(now=0)
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign({**header, "kid": stranger.kid}, payload, stranger.jwk))
    assert reason(caught) == "unknown key id"

    without_kid = {k: v for k, v in header.items() if k != "kid"}
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(sign(without_kid, payload, stranger.jwk))
    assert reason(caught) == "missing key id"


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d.e", "é.é.é", "x" * 10_000, None, 42],
)
def test_garbage_is_refused_as_malformed(tokens: TokenService, garbage: Any) -> None:
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(garbage)
    assert reason(caught) == "malformed token"


def test_errors_never_carry_the_token(tokens: TokenService, valid: str) -> None:
    _header, payload, signature = split(valid)
    tampered = f"{valid.split('.')[0]}.{segment({**payload, 'sub': 'root'})}.{signature}"
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(tampered)
    rendered = json.dumps(caught.value.to_dict())
    assert signature not in rendered and tampered not in rendered


def test_tokens_outlive_a_rotation_until_the_old_key_retires(
    tokens: TokenService, keyring: KeyRing, clock: ManualClock
) -> None:
    old_key = keyring.current
    before = tokens.issue_access("user-1")
    keyring.rotate()
    after = tokens.issue_access("user-1")
    assert split(before)[0]["kid"] == old_key.kid != split(after)[0]["kid"]
    tokens.verify_access(before)
    tokens.verify_access(after)

    # To see retirement act on its own, a token the old key signed with an
    # exp far beyond the retirement (3600 s after rotation).
    header, payload, _ = split(before)
    long_lived = sign(header, {**payload, "exp": payload["exp"] + 86400}, old_key.jwk)
    clock.advance(3599)
    tokens.verify_access(long_lived)
    clock.advance(1)
    with pytest.raises(InvalidToken) as caught:
        tokens.verify_access(long_lived)
    assert reason(caught) == "unknown key id"
    tokens.verify_access(tokens.issue_access("user-1"))


def test_keys_must_outlive_the_tokens_they_sign(keyring: KeyRing) -> None:
    with pytest.raises(ConfigError):
        TokenService(keyring, ISSUER, AUDIENCE, access_ttl=keyring.retire_after_s + 1)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_ecdsa_and_rsa_rings_issue_and_verify(
    key_store: FileKeyStore, clock: ManualClock, alg: str
) -> None:
    ring = KeyRing.open(key_store, clock=clock, algorithm=alg)
    service = TokenService(ring, ISSUER, AUDIENCE, clock=clock)
    token = service.issue_access("user-1", ["a"])
    assert split(token)[0]["alg"] == alg
    assert service.verify_access(token).roles == ("a",)


# --- refresh tokens ---------------------------------------------------------


async def test_a_session_stores_only_the_refresh_tokens_hash(
    tokens: TokenService, refresh_store: InMemoryRefreshTokenStore
) -> None:
    access, refresh = await tokens.issue_session("user-1", ["sales"])
    assert tokens.verify_access(access).roles == ("sales",)
    [record] = refresh_store.records()
    assert record.token_hash == hash_refresh_token(refresh)
    assert refresh not in repr(record)
    assert len(refresh) >= 43  # 256 bits


async def test_rotation_spends_the_token_and_continues_the_family(
    tokens: TokenService, refresh_store: InMemoryRefreshTokenStore, clock: ManualClock
) -> None:
    _, first = await tokens.issue_session("user-1", ["sales"], {"tenant": "acme"})
    clock.advance(600)
    access, second = await tokens.rotate_refresh(first)

    assert second != first
    claims = tokens.verify_access(access)
    assert claims.roles == ("sales",) and claims.extra == {"tenant": "acme"}
    spent, live = sorted(refresh_store.records(), key=lambda r: r.issued_at)
    assert spent.rotated_at == clock.now and live.rotated_at is None
    assert spent.family_id == live.family_id
    assert live.expires_at == clock.now + 86400  # sliding


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(
    tokens: TokenService,
) -> None:
    _, stolen = await tokens.issue_session("user-1")
    _, legit_next = await tokens.rotate_refresh(stolen)
    _, other_session = await tokens.issue_session("user-1")

    with pytest.raises(InvalidToken) as caught:
        await tokens.rotate_refresh(stolen)  # the thief (or the victim) replays it
    assert reason(caught) == "refresh token reuse detected"

    with pytest.raises(InvalidToken) as caught:
        await tokens.rotate_refresh(legit_next)
    assert reason(caught) == "refresh token revoked"
    # Other sessions of the same user are untouched.
    await tokens.rotate_refresh(other_session)


async def test_replaying_a_spent_token_after_it_expired_is_still_reuse(
    tokens: TokenService, clock: ManualClock
) -> None:
    _, first = await tokens.issue_session("user-1")
    clock.advance(3600)
    _, second = await tokens.rotate_refresh(first)
    clock.advance(86400 - 3600)  # first has expired, second has not
    with pytest.raises(InvalidToken) as caught:
        await tokens.rotate_refresh(first)
    assert reason(caught) == "refresh token reuse detected"
    with pytest.raises(InvalidToken) as caught:
        await tokens.rotate_refresh(second)
    assert reason(caught) == "refresh token revoked"


async def test_two_concurrent_refreshes_with_one_token_count_as_reuse(
    tokens: TokenService,
) -> None:
    _, refresh = await tokens.issue_session("user-1")
    outcomes = await asyncio.gather(
        tokens.rotate_refresh(refresh), tokens.rotate_refresh(refresh), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, InvalidToken)]
    pairs = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(errors) == 1 and len(pairs) == 1
    assert errors[0].details["reason"] == "refresh token reuse detected"
    with pytest.raises(InvalidToken):
        await tokens.rotate_refresh(pairs[0].refresh_token)


async def test_an_expired_refresh_token_is_refused(
    tokens: TokenService, clock: ManualClock
) -> None:
    _, refresh = await tokens.issue_session("user-1")
    clock.advance(86400)
    with pytest.raises(ExpiredToken) as caught:
        await tokens.rotate_refresh(refresh)
    assert caught.value.details["reason"] == "refresh token expired"


async def test_sign_out_revokes_the_session(tokens: TokenService) -> None:
    _, refresh = await tokens.issue_session("user-1")
    assert await tokens.revoke(refresh) is True
    with pytest.raises(InvalidToken) as caught:
        await tokens.rotate_refresh(refresh)
    assert reason(caught) == "refresh token revoked"
    assert await tokens.revoke("never-issued") is False


async def test_revoke_all_ends_every_session_of_one_user(tokens: TokenService) -> None:
    _, first = await tokens.issue_session("user-1")
    _, second = await tokens.issue_session("user-1")
    _, someone_else = await tokens.issue_session("user-2")
    assert await tokens.revoke_all("user-1") == 2
    for refresh in (first, second):
        with pytest.raises(InvalidToken):
            await tokens.rotate_refresh(refresh)
    await tokens.rotate_refresh(someone_else)


async def test_unknown_refresh_tokens_are_refused(tokens: TokenService) -> None:
    with pytest.raises(InvalidToken) as caught:
        await tokens.rotate_refresh("made-up")
    assert reason(caught) == "unknown refresh token"


async def test_the_store_forgets_expired_tokens(
    tokens: TokenService, refresh_store: InMemoryRefreshTokenStore, clock: ManualClock
) -> None:
    await tokens.issue_session("user-1")
    clock.advance(86400 + 1)
    await tokens.issue_session("user-2")
    assert await refresh_store.delete_expired(clock.now) == 1
    assert [r.user_id for r in refresh_store.records()] == ["user-2"]


def test_in_a_ring_of_mixed_algorithms_each_kid_keeps_its_own(
    key_store: FileKeyStore, clock: ManualClock
) -> None:
    # The operator switched EdDSA -> ES256: both algorithms verify for a
    # while, but never crosswise.
    KeyRing.open(key_store, clock=clock)
    ring = KeyRing.open(key_store, clock=clock, algorithm="ES256")
    eddsa_key = ring.current
    ring.rotate()
    assert ring.algorithms == ["ES256", "EdDSA"]
    service = TokenService(ring, ISSUER, AUDIENCE, clock=clock)

    header, payload, _ = split(service.issue_access("user-1"))
    attacker = generate_signing_key("ES256", now=0)
    forged = sign({**header, "kid": eddsa_key.kid}, payload, attacker.jwk)
    with pytest.raises(InvalidToken) as caught:
        service.verify_access(forged)
    assert reason(caught) == "algorithm not allowed"
