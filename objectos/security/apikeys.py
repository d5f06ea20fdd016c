"""API keys for service accounts.

A key reads ``oos_<id>_<secret>``: ``oos_`` makes a leaked key recognisable to
secret scanners, ``<id>`` (16 hex digits) finds the record without a scan, and
``<secret>`` (256 random bits) proves possession. Only SHA-256 of the secret
is stored. A fast hash is enough here — unlike passwords, the secret has full
entropy, so there is nothing to brute-force — and it keeps every API request
cheap. The stored and computed hashes are compared in constant time.

The plaintext exists once, in the return value of :meth:`ApiKeyService.create`,
to be shown to the operator once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from objectos.errors import ExpiredToken, InvalidToken, PermissionDenied

Clock = Callable[[], float]

PREFIX = "oos"
# token_hex(8) ids; token_urlsafe(32) secrets are 43 characters of [A-Za-z0-9_-].
_KEY_FORMAT = re.compile(r"oos_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# Compared against when the id is unknown, so that case does the same work.
_UNKNOWN_KEY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored API key: who it acts for, what it may do, and its hashed secret."""

    key_id: str
    secret_hash: str
    owner: str
    scopes: frozenset[str]
    name: str = ""
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    def missing_scopes(self, required: Iterable[str]) -> list[str]:
        """The scopes in ``required`` this key was not granted, sorted."""
        return sorted(set(required) - self.scopes)


def generate() -> tuple[str, str]:
    """A new ``(key_id, plaintext key)``; the plaintext is ``oos_<key_id>_<secret>``."""
    key_id = secrets.token_hex(8)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def parse(presented: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a presented key; InvalidToken if it is not shaped like one."""
    match = _KEY_FORMAT.fullmatch(presented) if isinstance(presented, str) else None
    if match is None:
        raise InvalidToken("invalid api key", details={"reason": "malformed api key"})
    return match.group(1), match.group(2)


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret part: hex SHA-256."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


async def verify(
    presented: str,
    lookup: Callable[[str], Awaitable[ApiKeyRecord | None]],
    *,
    now: float | None = None,
    required_scopes: Iterable[str] = (),
) -> ApiKeyRecord:
    """The record of a valid, live key that has ``required_scopes``.

    Raises InvalidToken (malformed, unknown, wrong secret, revoked),
    ExpiredToken, or PermissionDenied (``details.missingScopes``). Revocation
    and expiry are reported only after the secret matched, so they tell
    nothing to someone who merely knows a key id.
    """
    key_id, secret = parse(presented)
    record = await lookup(key_id)
    stored_hash = record.secret_hash if record is not None else _UNKNOWN_KEY_HASH
    matches = hmac.compare_digest(stored_hash, hash_secret(secret))
    if record is None or not matches:
        raise InvalidToken("invalid api key", details={"reason": "invalid api key"})
    now = time.time() if now is None else now
    if record.revoked_at is not None:
        raise InvalidToken("invalid api key", details={"reason": "api key revoked"})
    if record.expires_at is not None and now >= record.expires_at:
        raise ExpiredToken("api key expired", details={"reason": "api key expired"})
    missing = record.missing_scopes(required_scopes)
    if missing:
        raise PermissionDenied("api key lacks required scopes", details={"missingScopes": missing})
    return record


@runtime_checkable
class ApiKeyStore(Protocol):
    """Persistence of API key records (in memory here; SQL later)."""

    async def add(self, record: ApiKeyRecord) -> None: ...

    async def get(self, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke(self, key_id: str, at: float) -> bool:
        """Mark a key revoked; False if it does not exist or already was."""
        ...


class InMemoryApiKeyStore:
    """An :class:`ApiKeyStore` in a dict, for tests and single-process use."""

    def __init__(self) -> None:
        self._records: dict[str, ApiKeyRecord] = {}

    async def add(self, record: ApiKeyRecord) -> None:
        self._records[record.key_id] = record

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        return self._records.get(key_id)

    async def revoke(self, key_id: str, at: float) -> bool:
        record = self._records.get(key_id)
        if record is None or record.revoked_at is not None:
            return False
        self._records[key_id] = replace(record, revoked_at=at)
        return True

    def records(self) -> list[ApiKeyRecord]:
        """Everything stored (for inspection in tests and notebooks)."""
        return list(self._records.values())


class ApiKeyService:
    """Creates, verifies and revokes service-account API keys."""

    def __init__(self, store: ApiKeyStore | None = None, clock: Clock = time.time) -> None:
        self._store: ApiKeyStore = InMemoryApiKeyStore() if store is None else store
        self._clock = clock

    async def create(
        self,
        owner: str,
        scopes: Iterable[str] = (),
        *,
        name: str = "",
        ttl_s: float | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Store a new key for ``owner``; returns its record and the plaintext (shown once)."""
        key_id, plaintext = generate()
        now = self._clock()
        record = ApiKeyRecord(
            key_id=key_id,
            secret_hash=hash_secret(parse(plaintext)[1]),
            owner=owner,
            scopes=frozenset(scopes),
            name=name,
            created_at=now,
            expires_at=now + ttl_s if ttl_s is not None else None,
        )
        await self._store.add(record)
        return record, plaintext

    async def verify(self, presented: str, required_scopes: Iterable[str] = ()) -> ApiKeyRecord:
        """See :func:`verify`."""
        return await verify(
            presented, self._store.get, now=self._clock(), required_scopes=required_scopes
        )

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key at once; False if unknown or already revoked."""
        return await self._store.revoke(key_id, self._clock())


__all__ = [
    "PREFIX",
    "ApiKeyRecord",
    "ApiKeyService",
    "ApiKeyStore",
    "InMemoryApiKeyStore",
    "generate",
    "hash_secret",
    "parse",
    "verify",
]
