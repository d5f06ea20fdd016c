"""Service-account API keys: format, hashed storage, verification, revocation, expiry, scopes."""

from __future__ import annotations

import hmac
import re

import pytest

from objectos.errors import ExpiredToken, InvalidToken, PermissionDenied
from objectos.security import apikeys
from objectos.security.apikeys import ApiKeyRecord, ApiKeyService, InMemoryApiKeyStore

from .conftest import ManualClock


@pytest.fixture
def store() -> InMemoryApiKeyStore:
    return InMemoryApiKeyStore()


@pytest.fixture
def service(store: InMemoryApiKeyStore, clock: ManualClock) -> ApiKeyService:
    return ApiKeyService(store, clock=clock)


def reason(caught: pytest.ExceptionInfo[InvalidToken]) -> str:
    return str(caught.value.details["reason"])


def test_generated_keys_are_shaped_oos_id_secret_and_unique() -> None:
    generated = [apikeys.generate() for _ in range(100)]
    for key_id, plaintext in generated:
        assert re.fullmatch(r"oos_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", plaintext)
        assert apikeys.parse(plaintext) == (key_id, plaintext.split("_", 2)[2])
    assert len({key_id for key_id, _ in generated}) == 100
    assert len({plaintext for _, plaintext in generated}) == 100


async def test_a_created_key_verifies_and_only_its_hash_is_stored(
    service: ApiKeyService, store: InMemoryApiKeyStore, clock: ManualClock
) -> None:
    record, plaintext = await service.create("svc-billing", ["data:read"], name="billing export")
    assert record.owner == "svc-billing" and record.created_at == clock.now
    [stored] = store.records()
    secret = apikeys.parse(plaintext)[1]
    assert secret not in repr(stored)
    assert stored.secret_hash == apikeys.hash_secret(secret)

    verified = await service.verify(plaintext, required_scopes=["data:read"])
    assert verified.key_id == record.key_id


async def test_a_wrong_secret_for_a_real_id_is_refused(service: ApiKeyService) -> None:
    _record, plaintext = await service.create("svc")
    key_id, _secret = apikeys.parse(plaintext)
    wrong = f"oos_{key_id}_{'A' * 43}"
    with pytest.raises(InvalidToken) as caught:
        await service.verify(wrong)
    assert reason(caught) == "invalid api key"


async def test_secrets_are_compared_in_constant_time(
    service: ApiKeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plaintext = await service.create("svc")
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    await service.verify(plaintext)
    with pytest.raises(InvalidToken):
        await service.verify(f"oos_{'0' * 16}_{'A' * 43}")  # unknown id: same work
    assert len(compared) == 2


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "oos_",
        "oos_123_abc",
        "sk_0123456789abcdef_" + "A" * 43,
        "oos_0123456789ABCDEF_" + "A" * 43,
    ],
)
async def test_malformed_keys_are_refused(service: ApiKeyService, presented: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        await service.verify(presented)
    assert reason(caught) == "malformed api key"


async def test_unknown_keys_are_refused(service: ApiKeyService) -> None:
    _, plaintext = apikeys.generate()
    with pytest.raises(InvalidToken) as caught:
        await service.verify(plaintext)
    assert reason(caught) == "invalid api key"


async def test_a_revoked_key_is_refused_at_once(service: ApiKeyService) -> None:
    record, plaintext = await service.create("svc")
    assert await service.revoke(record.key_id) is True
    assert await service.revoke(record.key_id) is False
    assert await service.revoke("0" * 16) is False
    with pytest.raises(InvalidToken) as caught:
        await service.verify(plaintext)
    assert reason(caught) == "api key revoked"


async def test_a_key_expires(service: ApiKeyService, clock: ManualClock) -> None:
    _, plaintext = await service.create("svc", ttl_s=3600)
    clock.advance(3599)
    await service.verify(plaintext)
    clock.advance(1)
    with pytest.raises(ExpiredToken):
        await service.verify(plaintext)


async def test_revocation_and_expiry_are_only_told_to_holders_of_the_secret(
    service: ApiKeyService, clock: ManualClock
) -> None:
    record, _plaintext = await service.create("svc", ttl_s=10)
    await service.revoke(record.key_id)
    clock.advance(10)
    guess = f"oos_{record.key_id}_{'A' * 43}"
    with pytest.raises(InvalidToken) as caught:
        await service.verify(guess)
    assert reason(caught) == "invalid api key"


async def test_missing_scopes_are_permission_denied(service: ApiKeyService) -> None:
    _, plaintext = await service.create("svc", ["data:read", "jobs:run"])
    await service.verify(plaintext, required_scopes=["jobs:run"])
    with pytest.raises(PermissionDenied) as caught:
        await service.verify(plaintext, required_scopes=["data:read", "data:write", "admin"])
    assert caught.value.details["missingScopes"] == ["admin", "data:write"]


async def test_verify_works_with_any_lookup(clock: ManualClock) -> None:
    key_id, plaintext = apikeys.generate()
    record = ApiKeyRecord(
        key_id=key_id,
        secret_hash=apikeys.hash_secret(apikeys.parse(plaintext)[1]),
        owner="svc",
        scopes=frozenset({"data:read"}),
    )

    async def lookup(wanted: str) -> ApiKeyRecord | None:
        return record if wanted == key_id else None

    assert await apikeys.verify(plaintext, lookup, now=clock.now) is record
