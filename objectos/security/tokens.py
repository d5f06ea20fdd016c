"""The hub's own tokens: short-lived signed access tokens, long-lived opaque refresh tokens.

**Access tokens** are JWTs signed by the :class:`~objectos.security.keys.KeyRing`'s
current key, carrying ``iss aud sub iat nbf exp jti typ roles`` plus caller
claims. Any replica verifies them with no database round trip, which is why
they live minutes, not days.

**Refresh tokens** are random strings (256 bits) that mean nothing by
themselves; the :class:`RefreshTokenStore` keeps their SHA-256 (a leaked table
yields no usable token; plain SHA-256 suffices because the input has full
entropy, unlike a password). Each sign-in starts a *family*; every refresh
spends the presented token and returns a new one of the same family. A spent
token presented again means two parties hold the family — one of them a
thief — so the whole family is revoked and both must sign in again (RFC 9700
§4.14.2, "refresh token rotation").

Errors are :class:`~objectos.errors.InvalidToken` or
:class:`~objectos.errors.ExpiredToken` with ``details["reason"]`` saying what
was wrong; the token itself never appears in an error or a log line.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable

from authlib.deprecate import AuthlibDeprecationWarning

from objectos.errors import ConfigError, ExpiredToken, InvalidToken
from objectos.security.keys import Clock, KeyRing

with warnings.catch_warnings():
    # See keys.py: authlib.jose's deprecation notice (move to joserfc in 2.0) is noise here.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebToken, JWTClaims, Key
    from authlib.jose.errors import (
        BadSignatureError,
        DecodeError,
        ExpiredTokenError,
        InvalidClaimError,
        InvalidTokenError,
        JoseError,
        MissingAlgorithmError,
        MissingClaimError,
        UnsupportedAlgorithmError,
    )

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE = "access"
#: Claims the service sets itself; ``extra_claims`` may not override them.
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "typ", "roles"})
#: Longer inputs are refused before any parsing (a cheap guard against huge headers).
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True)
class Claims:
    """What a verified access token says about its bearer."""

    subject: str
    roles: tuple[str, ...]
    issuer: str
    audience: str
    token_id: str
    issued_at: int
    expires_at: int
    extra: Mapping[str, Any] = field(default_factory=dict)


class TokenPair(NamedTuple):
    """What sign-in and refresh hand to the client; unpacks as ``access, refresh``."""

    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class RefreshTokenRecord:
    """One refresh token as stored: its hash, never the token.

    ``rotated_at`` is set when it was exchanged for a successor; ``revoked_at``
    when its family was revoked (sign-out, reuse, account-wide revocation).
    """

    token_hash: str
    family_id: str
    user_id: str
    roles: tuple[str, ...]
    extra_claims: Mapping[str, Any]
    issued_at: float
    expires_at: float
    rotated_at: float | None = None
    revoked_at: float | None = None


@runtime_checkable
class RefreshTokenStore(Protocol):
    """Persistence of refresh tokens (in memory here; SQL later).

    :meth:`mark_rotated` must be atomic (a conditional UPDATE in SQL): it is
    what makes two concurrent refreshes with one token end as one success
    and one detected reuse rather than two successes.
    """

    async def add(self, record: RefreshTokenRecord) -> None:
        """Store a new token."""
        ...

    async def get(self, token_hash: str) -> RefreshTokenRecord | None:
        """The token with this hash, spent and revoked ones included."""
        ...

    async def mark_rotated(self, token_hash: str, at: float) -> bool:
        """Spend a token: True if it was live (neither rotated nor revoked) and now is spent."""
        ...

    async def revoke_family(self, family_id: str, at: float) -> int:
        """Revoke every token of a family; returns how many were live."""
        ...

    async def revoke_user(self, user_id: str, at: float) -> int:
        """Revoke every token of a user; returns how many were live."""
        ...

    async def delete_expired(self, before: float) -> int:
        """Forget tokens that expired before ``before``; returns how many."""
        ...


class InMemoryRefreshTokenStore:
    """A :class:`RefreshTokenStore` in a dict, for tests and single-process use.

    Its methods contain no ``await``, so each runs atomically on the event loop.
    """

    def __init__(self) -> None:
        self._records: dict[str, RefreshTokenRecord] = {}

    async def add(self, record: RefreshTokenRecord) -> None:
        self._records[record.token_hash] = record

    async def get(self, token_hash: str) -> RefreshTokenRecord | None:
        return self._records.get(token_hash)

    async def mark_rotated(self, token_hash: str, at: float) -> bool:
        record = self._records.get(token_hash)
        if record is None or record.rotated_at is not None or record.revoked_at is not None:
            return False
        self._records[token_hash] = replace(record, rotated_at=at)
        return True

    async def revoke_family(self, family_id: str, at: float) -> int:
        return self._revoke_where(lambda record: record.family_id == family_id, at)

    async def revoke_user(self, user_id: str, at: float) -> int:
        return self._revoke_where(lambda record: record.user_id == user_id, at)

    async def delete_expired(self, before: float) -> int:
        expired = [h for h, record in self._records.items() if record.expires_at < before]
        for token_hash in expired:
            del self._records[token_hash]
        return len(expired)

    def records(self) -> list[RefreshTokenRecord]:
        """Everything stored (for inspection in tests and notebooks)."""
        return list(self._records.values())

    def _revoke_where(self, matches: Callable[[RefreshTokenRecord], bool], at: float) -> int:
        live = 0
        for token_hash, record in self._records.items():
            if matches(record) and record.revoked_at is None:
                live += record.rotated_at is None
                self._records[token_hash] = replace(record, revoked_at=at)
        return live


def hash_refresh_token(token: str) -> str:
    """The stored form of a refresh token: hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invalid(reason: str, message: str = "invalid token") -> InvalidToken:
    """An :class:`InvalidToken` whose details say why (and never contain the token)."""
    return InvalidToken(message, details={"reason": reason})


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def decode_jwt(
    token: Any,
    algorithms: Iterable[str],
    resolve_key: Callable[[Mapping[str, Any]], Key],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway_s: float = 0.0,
    required: Iterable[str] = (),
) -> JWTClaims:
    """Verify a compact JWS and its registered claims with authlib; shared with OIDC.

    ``resolve_key(header)`` picks the verification key from the (not yet
    verified) header, raising InvalidToken to refuse. Only ``algorithms`` are
    accepted, so ``none`` and HMAC never are unless listed. ``iss``, ``aud``,
    ``sub``, ``exp`` and the ``required`` claims must be present.
    Raises InvalidToken / ExpiredToken with a reason.
    """
    # A JWE (5 segments) or anything else is refused before authlib sees it:
    # we only ever accept signed tokens.
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        raise invalid("malformed token")
    jwt = JsonWebToken(sorted(algorithms))
    try:
        claims = jwt.decode(
            token,
            lambda header, _payload: resolve_key(header),
            claims_options={
                **{name: {"essential": True} for name in required},
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": audience},
                "sub": {"essential": True},
                "exp": {"essential": True},
            },
        )
        claims.validate(now=now, leeway=leeway_s)
    except (UnsupportedAlgorithmError, MissingAlgorithmError):
        raise invalid("algorithm not allowed") from None
    except BadSignatureError:
        raise invalid("bad signature") from None
    except ExpiredTokenError:
        raise ExpiredToken("token expired", details={"reason": "token expired"}) from None
    except InvalidTokenError:  # authlib uses it for nbf / iat in the future
        raise invalid("token not yet valid") from None
    except MissingClaimError as exc:
        raise invalid(f"missing claim: {_claim_name(exc)}") from None
    except InvalidClaimError as exc:
        raise invalid(f"invalid claim: {exc.claim_name}") from None
    except (DecodeError, JoseError, ValueError, TypeError, KeyError):
        raise invalid("malformed token") from None
    # authlib accepts a token in its very last second (exp == now); RFC 7519
    # §4.1.4 says "on or after which the JWT MUST NOT be accepted".
    if now >= claims["exp"] + leeway_s:
        raise ExpiredToken("token expired", details={"reason": "token expired"})
    return claims


def _claim_name(exc: MissingClaimError) -> str:
    # authlib only keeps the name inside its description: "Missing 'sub' claim".
    description = exc.description or ""
    return description.split("'")[1] if description.count("'") >= 2 else "?"


class TokenService:
    """Issues and verifies the hub's tokens.

    One instance per process; it keeps no per-token state itself (refresh
    tokens live in the injected store), so replicas are interchangeable.
    """

    def __init__(
        self,
        keyring: KeyRing,
        issuer: str,
        audience: str,
        access_ttl: float | timedelta = 900.0,
        refresh_ttl: float | timedelta = 30 * 86400.0,
        clock: Clock = time.time,
        *,
        refresh_store: RefreshTokenStore | None = None,
        leeway_s: float = 0.0,
    ) -> None:
        """Tie tokens to an issuer and audience; TTLs are seconds or timedeltas.

        ``leeway_s`` tolerates clock skew between replicas on exp/nbf/iat.
        The keyring must keep retired keys at least as long as an access
        token lives, or a rotation would cut live sessions short.
        """
        self._keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self._access_ttl = _seconds(access_ttl)
        self._refresh_ttl = _seconds(refresh_ttl)
        self._clock = clock
        self._store: RefreshTokenStore = (
            InMemoryRefreshTokenStore() if refresh_store is None else refresh_store
        )
        self._leeway_s = leeway_s
        if self._access_ttl <= 0 or self._refresh_ttl <= 0:
            raise ConfigError("token lifetimes must be positive")
        if keyring.retire_after_s < self._access_ttl:
            raise ConfigError(
                "keys would retire before the tokens they signed expire",
                details={
                    "retireAfterS": keyring.retire_after_s,
                    "accessTtlS": self._access_ttl,
                },
            )

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    @property
    def access_ttl_s(self) -> float:
        """Lifetime of an access token (the ``expires_in`` of a token response)."""
        return self._access_ttl

    def issue_access(
        self,
        user_id: str,
        roles: Iterable[str] = (),
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token for ``user_id``.

        ``extra_claims`` may not use :data:`RESERVED_CLAIMS`, nor names authlib
        treats as sensitive (``password``, ``secret``, ``token``, ...).
        """
        extra = dict(extra_claims or {})
        clash = RESERVED_CLAIMS & extra.keys()
        if clash:
            raise ValueError(f"extra_claims may not set {sorted(clash)}")
        key = self._keyring.current
        now = int(self._clock())
        payload = {
            **extra,
            "iss": self._issuer,
            "aud": self._audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + int(self._access_ttl),
            "jti": secrets.token_urlsafe(16),
            "typ": ACCESS_TOKEN_TYPE,
            "roles": list(roles),
        }
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        token: bytes = JsonWebToken([key.alg]).encode(header, payload, key.jwk)
        return token.decode("ascii")

    def verify_access(self, token: str) -> Claims:
        """The claims of a valid access token; raises InvalidToken / ExpiredToken otherwise."""
        claims = decode_jwt(
            token,
            self._keyring.algorithms,
            self._resolve_key,
            issuer=self._issuer,
            audience=self._audience,
            now=self._clock(),
            leeway_s=self._leeway_s,
            required=("iat", "jti", "typ"),
        )
        if claims.get("typ") != ACCESS_TOKEN_TYPE:
            raise invalid("wrong token type")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise invalid("invalid claim: roles")
        return Claims(
            subject=claims["sub"],
            roles=tuple(roles),
            issuer=claims["iss"],
            audience=self._audience,
            token_id=claims["jti"],
            issued_at=claims["iat"],
            expires_at=claims["exp"],
            extra={k: v for k, v in claims.items() if k not in RESERVED_CLAIMS},
        )

    def _resolve_key(self, header: Mapping[str, Any]) -> Key:
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise invalid("missing key id")
        key = self._keyring.find(kid)
        if key is None:
            raise invalid("unknown key id")
        # The algorithm is the key's, never the token's choice: this is what
        # defeats "HS256 signed with the public key" (algorithm confusion).
        if header.get("alg") != key.alg:
            raise invalid("algorithm not allowed")
        return key.jwk

    async def issue_session(
        self,
        user_id: str,
        roles: Iterable[str] = (),
        extra_claims: Mapping[str, Any] | None = None,
    ) -> TokenPair:
        """Sign-in: an access token and the first refresh token of a new family.

        ``roles`` and ``extra_claims`` are remembered with the family and
        copied into the access tokens that later refreshes issue.
        """
        roles = tuple(roles)
        extra = dict(extra_claims or {})
        access = self.issue_access(user_id, roles, extra)
        refresh = await self._add_refresh(
            family_id=secrets.token_urlsafe(16), user_id=user_id, roles=roles, extra=extra
        )
        return TokenPair(access, refresh)

    async def rotate_refresh(self, refresh_token: str) -> TokenPair:
        """Spend a refresh token for a new access token and a new refresh token.

        A token that was already spent is taken as stolen: its whole family
        is revoked and InvalidToken says "refresh token reuse detected".
        """
        token_hash = hash_refresh_token(refresh_token)
        record = await self._store.get(token_hash)
        now = self._clock()
        if record is None:
            raise invalid("unknown refresh token")
        if record.revoked_at is not None:
            raise invalid("refresh token revoked")
        if record.rotated_at is not None:
            raise await self._reuse_detected(record, now)
        if now >= record.expires_at:
            raise ExpiredToken("refresh token expired", details={"reason": "refresh token expired"})
        if not await self._store.mark_rotated(token_hash, now):
            # Someone spent or revoked it between our read and our write.
            raise await self._reuse_detected(record, now)
        access = self.issue_access(record.user_id, record.roles, record.extra_claims)
        refresh = await self._add_refresh(
            family_id=record.family_id,
            user_id=record.user_id,
            roles=record.roles,
            extra=record.extra_claims,
        )
        return TokenPair(access, refresh)

    async def revoke(self, refresh_token: str) -> bool:
        """Sign-out: revoke the session (family) of this refresh token.

        Returns False for an unknown token, so sign-out is idempotent.
        """
        record = await self._store.get(hash_refresh_token(refresh_token))
        if record is None:
            return False
        await self._store.revoke_family(record.family_id, self._clock())
        return True

    async def revoke_all(self, user_id: str) -> int:
        """End every session of a user (password change, deactivation); returns how many."""
        return await self._store.revoke_user(user_id, self._clock())

    async def _add_refresh(
        self, *, family_id: str, user_id: str, roles: tuple[str, ...], extra: Mapping[str, Any]
    ) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        await self._store.add(
            RefreshTokenRecord(
                token_hash=hash_refresh_token(token),
                family_id=family_id,
                user_id=user_id,
                roles=roles,
                extra_claims=dict(extra),
                issued_at=now,
                expires_at=now + self._refresh_ttl,
            )
        )
        return token

    async def _reuse_detected(self, record: RefreshTokenRecord, now: float) -> InvalidToken:
        """Revoke the family of a token presented twice; the error to raise."""
        revoked = await self._store.revoke_family(record.family_id, now)
        logger.warning(
            "refresh token reuse for user %s: revoked family %s (%d live tokens)",
            record.user_id,
            record.family_id,
            revoked,
        )
        return invalid("refresh token reuse detected")


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "RESERVED_CLAIMS",
    "Claims",
    "InMemoryRefreshTokenStore",
    "RefreshTokenRecord",
    "RefreshTokenStore",
    "TokenPair",
    "TokenService",
    "decode_jwt",
    "hash_refresh_token",
]
