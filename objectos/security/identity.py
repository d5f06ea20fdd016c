"""Who may use the hub: accounts, sessions, service accounts and external identities.

:class:`IdentityService` is what the auth routes call. It ties the primitives
of this package together — :class:`~objectos.security.passwords.PasswordHasher`,
:class:`~objectos.security.tokens.TokenService`,
:class:`~objectos.security.throttle.SignInThrottle`,
:class:`~objectos.security.apikeys.ApiKeyService` — over a :class:`UserStore`.

Accounts live in their own table (``_auth_users``, see
:mod:`objectos.security.store`), not in a metadata object: everything a
metadata object holds flows into the change log, sync pulls, realtime events,
audit and the generic data API, and a password hash must reach none of them.
A ``user`` object of the base preset can later mirror the public columns
(same ids) for lookups and sharing rules.

Sign-in, in order::

    throttle.check(email, ip)                    # 429 while locked out
    user = users.find_by_email(email)            # case-insensitive
    no user / no password / disabled -> hasher.dummy_verify  (same cost), failure
    hasher.verify_and_update -> wrong: failure; outdated hash: store the new one
    throttle.record_success; tokens.issue_session(user.id, user.roles)

Every failure answers "invalid email or password" (401 ``unauthenticated``),
whatever the cause, and costs one argon2 verification, so neither the text
nor the time tells whether an account exists. Argon2 runs in a worker thread.

Roles are copied into access tokens and into the refresh-token family, so
:meth:`IdentityService.set_roles` and :meth:`IdentityService.deactivate` end
the user's sessions: the next sign-in carries the new roles. Refresh also
refuses accounts that were disabled behind the service's back.

Security-relevant steps are reported as :class:`AuthEvent` s to an injected
``on_event`` callback (audit, metrics); they never contain a password, a
hash or a token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from objectos.data.schema import new_id
from objectos.errors import (
    DuplicateValue,
    FieldError,
    InvalidField,
    InvalidToken,
    MissingRequiredField,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    ValidationError,
)
from objectos.protocol.auth import AuthSettings, OIDCProviderSettings, PasswordPolicy
from objectos.security.apikeys import ApiKeyRecord, ApiKeyService
from objectos.security.oidc import ExternalIdentity
from objectos.security.passwords import PasswordHasher
from objectos.security.throttle import SignInThrottle
from objectos.security.tokens import RefreshTokenStore, TokenPair, TokenService, hash_refresh_token

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
UserKind = Literal["user", "service"]

#: RFC 5321 caps a forward path at 256 octets, so an address is at most 254.
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
#: Sign-in refuses longer passwords before hashing: no policy allows them.
MAX_PASSWORD_LENGTH = 4096
#: The same shape check as the data engine's ``email`` fields.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_ROLE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

INVALID_CREDENTIALS = "invalid email or password"


def normalize_email(email: str) -> str:
    """The form emails are unique in and looked up by: trimmed and case-folded."""
    return email.strip().casefold()


@dataclass(frozen=True)
class UserRecord:
    """An account as stored. ``password_hash`` never leaves the identity layer.

    ``kind`` is ``user`` for people (password and/or external identities) and
    ``service`` for service accounts, which authenticate with API keys only.
    Times are seconds since the epoch.
    """

    id: str
    email: str | None
    name: str | None
    roles: tuple[str, ...] = ()
    kind: UserKind = "user"
    active: bool = True
    password_hash: str | None = field(default=None, repr=False)
    created_at: float = 0.0
    updated_at: float = 0.0

    def public(self) -> dict[str, Any]:
        """What clients may see (``/me``, sign-in): everything but the hash."""
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "roles": list(self.roles),
            "kind": self.kind,
            "active": self.active,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
        }


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


@runtime_checkable
class UserStore(Protocol):
    """Persistence of accounts and of links to external identities."""

    async def add(self, user: UserRecord) -> None:
        """Store a new account; DuplicateValue (field ``email``) if the email is taken."""
        ...

    async def get(self, user_id: str) -> UserRecord | None: ...

    async def find_by_email(self, email: str) -> UserRecord | None:
        """The account whose email equals ``email`` case-insensitively."""
        ...

    async def replace_password_hash(
        self, user_id: str, new_hash: str, *, expected: str | None, at: float
    ) -> bool:
        """Set the hash only if the stored one is still ``expected`` (no lost update)."""
        ...

    async def update(
        self,
        user_id: str,
        *,
        at: float,
        roles: Iterable[str] | None = None,
        active: bool | None = None,
        name: str | None = None,
    ) -> UserRecord | None:
        """Change the given columns; the updated account, or None if there is none."""
        ...

    async def find_linked(self, issuer: str, subject: str) -> UserRecord | None:
        """The account an external identity is linked to."""
        ...

    async def link(self, issuer: str, subject: str, user_id: str, *, at: float) -> bool:
        """Link an external identity to an existing account; False if already linked."""
        ...

    async def provision(
        self, issuer: str, subject: str, user: UserRecord, *, at: float
    ) -> tuple[UserRecord, bool]:
        """The account linked to the identity, creating ``user`` and the link if there is none.

        One atomic step: two replicas meeting a new identity at once end with
        one account. ``user.email`` is dropped if another account has it.
        Returns ``(account, created)``.
        """
        ...


@dataclass(frozen=True)
class AuthEvent:
    """Something an auditor wants to know about, e.g. ``auth.sign_in_failed``.

    Types: ``user.signed_up``, ``user.created``, ``user.provisioned``,
    ``user.roles_changed``, ``user.deactivated``, ``user.activated``,
    ``auth.signed_in``, ``auth.sign_in_failed``, ``auth.locked_out``,
    ``auth.refreshed``, ``auth.refresh_reuse_detected``, ``auth.signed_out``,
    ``auth.password_rehashed``, ``service_account.created``,
    ``api_key.created``, ``api_key.revoked``.
    """

    type: str
    at: float
    user_id: str | None = None
    email: str | None = None
    ip: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "at": self.at,
            "userId": self.user_id,
            "email": self.email,
            "ip": self.ip,
            "details": dict(self.details),
        }


EventSink = Callable[[AuthEvent], Awaitable[None]]


@dataclass(frozen=True)
class Session:
    """What sign-in and refresh hand out: tokens and the account they are for."""

    user: UserRecord
    tokens: TokenPair
    expires_in: float

    def to_dict(self) -> dict[str, Any]:
        """The token response body (RFC 6749 §5.1 names, camelCased like the rest of the API)."""
        return {
            "accessToken": self.tokens.access_token,
            "refreshToken": self.tokens.refresh_token,
            "tokenType": "Bearer",
            "expiresIn": int(self.expires_in),
            "user": self.user.public(),
        }


def check_email(email: Any, field_name: str = "email") -> list[FieldError]:
    """Field errors of an email address (empty when it is acceptable)."""
    if email is None or (isinstance(email, str) and not email.strip()):
        return [FieldError(field_name, "required", "an email address is required")]
    if not isinstance(email, str):
        return [FieldError(field_name, "invalid_type", "must be a string")]
    text = email.strip()
    if len(text) > MAX_EMAIL_LENGTH:
        return [FieldError(field_name, "too_long", f"at most {MAX_EMAIL_LENGTH} characters")]
    if not _EMAIL.match(text):
        return [FieldError(field_name, "invalid_format", "not an email address")]
    return []


def check_password(password: Any, policy: PasswordPolicy, email: str | None) -> list[FieldError]:
    """Field errors of a new password under ``policy`` (empty when it is acceptable)."""
    if password is None or password == "":
        return [FieldError("password", "required", "a password is required")]
    if not isinstance(password, str):
        return [FieldError("password", "invalid_type", "must be a string")]
    if len(password) < policy.minLength:
        return [FieldError("password", "too_short", f"at least {policy.minLength} characters")]
    if len(password) > policy.maxLength:
        return [FieldError("password", "too_long", f"at most {policy.maxLength} characters")]
    if policy.forbidEmail and email:
        folded = password.casefold()
        address = normalize_email(email)
        local = address.split("@", 1)[0]
        if address in folded or (len(local) >= 3 and local in folded):
            return [FieldError("password", "contains_email", "must not contain the email address")]
    return []


def check_roles(roles: Iterable[Any]) -> tuple[str, ...]:
    """Roles as a sorted, de-duplicated tuple; InvalidField if one is not a role name."""
    checked = []
    for role in roles:
        if not isinstance(role, str) or not _ROLE.match(role):
            raise InvalidField(
                "invalid role name",
                field_errors=[
                    FieldError("roles", "invalid_format", f"{role!r} is not a role name")
                ],
            )
        checked.append(role)
    return tuple(sorted(set(checked)))


def _validation(errors: list[FieldError]) -> ValidationError:
    cls = MissingRequiredField if all(e.code == "required" for e in errors) else InvalidField
    return cls("; ".join(f"{e.field}: {e.message}" for e in errors), field_errors=errors)


def _account_disabled() -> Unauthenticated:
    return Unauthenticated("account is disabled", details={"reason": "account disabled"})


class IdentityService:
    """Sign-up, sign-in, refresh, sign-out, accounts, service accounts and external users.

    One instance per process (Serve replica). It keeps no state that other
    replicas need: accounts, refresh tokens, failure counts and API keys
    live in the injected stores. The only per-process state is a short-lived
    cache of external identity links (``link_cache_ttl_s``).
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        users: UserStore,
        tokens: TokenService,
        refresh_tokens: RefreshTokenStore,
        throttle: SignInThrottle,
        api_keys: ApiKeyService,
        hasher: PasswordHasher,
        clock: Clock = time.time,
        on_event: EventSink | None = None,
        purge: Callable[[float], Awaitable[Mapping[str, int]]] | None = None,
        purge_interval_s: float = 3600.0,
        link_cache_ttl_s: float = 60.0,
        link_cache_size: int = 10_000,
        resources: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        """Wire the service. ``refresh_tokens`` must be the store ``tokens`` uses.

        ``purge(now)`` forgets expired rows (refresh tokens, stale counters);
        sign-in runs it when ``purge_interval_s`` has passed since the last
        run, so no background task is needed. ``resources`` are closed by
        :meth:`aclose` (the database engine and HTTP client a factory opened).
        """
        self.settings = settings
        self._users = users
        self._tokens = tokens
        self._refresh_tokens = refresh_tokens
        self._throttle = throttle
        self._api_keys = api_keys
        self._hasher = hasher
        self._clock = clock
        self._on_event = on_event
        self._purge = purge
        self._purge_interval_s = purge_interval_s
        self._last_purge = clock()
        self._providers: dict[str, OIDCProviderSettings] = {p.issuer: p for p in settings.oidc}
        self._link_ttl_s = link_cache_ttl_s
        self._link_cache_size = link_cache_size
        self._links: OrderedDict[tuple[str, str], tuple[float, UserRecord]] = OrderedDict()
        self._resources = list(resources)

    async def aclose(self) -> None:
        """Close the resources handed to the constructor, last opened first."""
        while self._resources:
            close = self._resources.pop()
            try:
                await close()
            except Exception:  # closing the rest matters more than one failure
                logger.exception("closing an identity resource failed")

    @property
    def users(self) -> UserStore:
        """The account store (a role directory reads memberships from it)."""
        return self._users

    @property
    def tokens(self) -> TokenService:
        """The token service (JWKS, verification of the hub's own tokens)."""
        return self._tokens

    # -- accounts ---------------------------------------------------------------------

    async def sign_up(
        self, email: Any, password: Any, name: Any = None, *, ip: str | None = None
    ) -> UserRecord:
        """Create an account with the default roles; 403 when sign-up is closed.

        Bad input is a ValidationError naming each field; a taken email is
        DuplicateValue (409) with a field error on ``email``.
        """
        if not self.settings.allowSignUp:
            raise PermissionDenied("sign-up is disabled", details={"reason": "sign-up disabled"})
        user = await self._create(
            email, password, name, roles=self.settings.defaultRoles, kind="user"
        )
        await self._emit("user.signed_up", user_id=user.id, email=user.email, ip=ip)
        return user

    async def create_user(
        self,
        email: Any,
        password: Any = None,
        name: Any = None,
        roles: Iterable[str] = (),
    ) -> UserRecord:
        """An account made by an operator (bootstrap admin, CLI, notebook): any roles.

        ``password=None`` makes an account that can only sign in through a
        linked external identity.
        """
        user = await self._create(
            email, password, name, roles=roles, kind="user", password_required=False
        )
        await self._emit("user.created", user_id=user.id, email=user.email)
        return user

    async def _create(
        self,
        email: Any,
        password: Any,
        name: Any,
        *,
        roles: Iterable[str],
        kind: UserKind,
        password_required: bool = True,
    ) -> UserRecord:
        errors = check_email(email)
        if password is not None or password_required:
            errors += check_password(
                password, self.settings.passwordPolicy, email if isinstance(email, str) else None
            )
        errors += _check_name(name)
        if errors:
            raise _validation(errors)
        checked_roles = check_roles(roles)
        assert isinstance(email, str)
        if await self._users.find_by_email(email) is not None:
            # Checked before hashing so a taken email costs no argon2 work;
            # the store's unique index still decides a race.
            raise duplicate_email()
        password_hash = (
            await asyncio.to_thread(self._hasher.hash, password) if password is not None else None
        )
        now = self._clock()
        user = UserRecord(
            id=new_id(),
            email=email.strip(),
            name=name.strip() if isinstance(name, str) and name.strip() else None,
            roles=checked_roles,
            kind=kind,
            password_hash=password_hash,
            created_at=now,
            updated_at=now,
        )
        await self._users.add(user)
        return user

    async def me(self, user_id: str) -> UserRecord:
        """The caller's account, read fresh; Unauthenticated if it is gone or disabled."""
        user = await self._users.get(user_id)
        if user is None:
            raise Unauthenticated("account not found", details={"reason": "unknown account"})
        if not user.active:
            raise _account_disabled()
        return user

    async def get_user(self, user_id: str) -> UserRecord:
        """An account by id; NotFound if there is none."""
        user = await self._users.get(user_id)
        if user is None:
            raise NotFound("no such account", details={"userId": user_id})
        return user

    async def set_roles(self, user_id: str, roles: Iterable[str]) -> UserRecord:
        """Replace an account's roles and end its sessions (tokens carry roles)."""
        checked = check_roles(roles)
        user = await self._users.update(user_id, at=self._clock(), roles=checked)
        if user is None:
            raise NotFound("no such account", details={"userId": user_id})
        revoked = await self._tokens.revoke_all(user_id)
        self._forget_links(user_id)
        await self._emit(
            "user.roles_changed",
            user_id=user_id,
            details={"roles": list(checked), "ended": revoked},
        )
        return user

    async def deactivate(self, user_id: str) -> UserRecord:
        """Disable an account: no sign-in, refresh or API key; its sessions end now.

        Access tokens already issued stay valid until they expire (at most
        ``accessTtlS``): they are verified without a database read.
        """
        user = await self._users.update(user_id, at=self._clock(), active=False)
        if user is None:
            raise NotFound("no such account", details={"userId": user_id})
        revoked = await self._tokens.revoke_all(user_id)
        self._forget_links(user_id)
        await self._emit("user.deactivated", user_id=user_id, details={"ended": revoked})
        return user

    async def activate(self, user_id: str) -> UserRecord:
        """Enable a disabled account again."""
        user = await self._users.update(user_id, at=self._clock(), active=True)
        if user is None:
            raise NotFound("no such account", details={"userId": user_id})
        self._forget_links(user_id)
        await self._emit("user.activated", user_id=user_id)
        return user

    # -- sessions ---------------------------------------------------------------------

    async def sign_in(self, email: Any, password: Any, *, ip: str | None = None) -> Session:
        """Check a password and start a session; see the module docstring for the order.

        Raises ValidationError (malformed input, not counted as a failure),
        RateLimitExceeded (429, ``details.retryAfter``) while the account or
        the IP is locked out, or Unauthenticated for any wrong credential.
        """
        errors: list[FieldError] = []
        if email is None or email == "":
            errors.append(FieldError("email", "required", "an email address is required"))
        elif not isinstance(email, str):
            errors.append(FieldError("email", "invalid_type", "must be a string"))
        elif len(email) > MAX_EMAIL_LENGTH:
            errors.append(FieldError("email", "too_long", f"at most {MAX_EMAIL_LENGTH} characters"))
        if password is None or password == "":
            errors.append(FieldError("password", "required", "a password is required"))
        elif not isinstance(password, str):
            errors.append(FieldError("password", "invalid_type", "must be a string"))
        elif len(password) > MAX_PASSWORD_LENGTH:
            errors.append(
                FieldError("password", "too_long", f"at most {MAX_PASSWORD_LENGTH} characters")
            )
        if errors:
            raise _validation(errors)
        assert isinstance(email, str) and isinstance(password, str)
        await self._maybe_purge()
        await self._throttle.check(email, ip)
        user = await self._users.find_by_email(email)
        if user is None or user.password_hash is None or not user.active:
            await asyncio.to_thread(self._hasher.dummy_verify, password)
            reason = "unknown account" if user is None else "account cannot sign in"
            raise await self._sign_in_failed(email, ip, user, reason)
        ok, new_hash = await asyncio.to_thread(
            self._hasher.verify_and_update, user.password_hash, password
        )
        if not ok:
            raise await self._sign_in_failed(email, ip, user, "wrong password")
        await self._throttle.record_success(email, ip)
        if new_hash is not None:
            stored = await self._users.replace_password_hash(
                user.id, new_hash, expected=user.password_hash, at=self._clock()
            )
            if stored:
                await self._emit("auth.password_rehashed", user_id=user.id, ip=ip)
        session = await self._start_session(user, user.roles)
        await self._emit("auth.signed_in", user_id=user.id, email=user.email, ip=ip)
        return session

    async def _sign_in_failed(
        self, email: str, ip: str | None, user: UserRecord | None, reason: str
    ) -> Unauthenticated:
        lockout = await self._throttle.record_failure(email, ip)
        user_id = user.id if user is not None else None
        await self._emit(
            "auth.sign_in_failed", user_id=user_id, email=email, ip=ip, details={"reason": reason}
        )
        if lockout is not None:
            await self._emit(
                "auth.locked_out",
                user_id=user_id,
                email=email,
                ip=ip,
                details={"until": lockout.until, "level": lockout.level},
            )
        # The reason goes to the audit event only: the client learns nothing
        # about which part was wrong.
        return Unauthenticated(INVALID_CREDENTIALS, details={"reason": "invalid credentials"})

    async def _start_session(self, user: UserRecord, roles: Iterable[str]) -> Session:
        tokens = await self._tokens.issue_session(user.id, roles)
        return Session(user=user, tokens=tokens, expires_in=self._tokens.access_ttl_s)

    async def refresh(self, refresh_token: Any, *, ip: str | None = None) -> Session:
        """Spend a refresh token for a new pair; a spent token revokes its whole family.

        Raises InvalidToken (unknown, revoked, reused), ExpiredToken, or
        Unauthenticated when the account was disabled meanwhile.
        """
        if not isinstance(refresh_token, str) or not refresh_token:
            raise MissingRequiredField(
                "refreshToken is required",
                field_errors=[
                    FieldError("refreshToken", "required", "a refresh token is required")
                ],
            )
        record = await self._refresh_tokens.get(hash_refresh_token(refresh_token))
        user: UserRecord | None = None
        if record is not None and record.revoked_at is None:
            user = await self._users.get(record.user_id)
            if user is None or not user.active:
                await self._refresh_tokens.revoke_family(record.family_id, self._clock())
                raise _account_disabled()
        try:
            tokens = await self._tokens.rotate_refresh(refresh_token)
        except InvalidToken as exc:
            if record is not None and exc.details.get("reason") == "refresh token reuse detected":
                await self._emit(
                    "auth.refresh_reuse_detected",
                    user_id=record.user_id,
                    ip=ip,
                    details={"family": record.family_id},
                )
            raise
        # rotate_refresh refuses unknown and revoked tokens, so both were read above.
        assert record is not None and user is not None
        await self._emit("auth.refreshed", user_id=user.id, ip=ip)
        return Session(user=user, tokens=tokens, expires_in=self._tokens.access_ttl_s)

    async def sign_out(self, refresh_token: Any, *, ip: str | None = None) -> bool:
        """End the session (refresh-token family) of ``refresh_token``.

        Idempotent: an unknown or already revoked token is not an error
        (returns False). Access tokens already issued expire on their own.
        """
        if not isinstance(refresh_token, str) or not refresh_token:
            raise MissingRequiredField(
                "refreshToken is required",
                field_errors=[
                    FieldError("refreshToken", "required", "a refresh token is required")
                ],
            )
        record = await self._refresh_tokens.get(hash_refresh_token(refresh_token))
        ended = await self._tokens.revoke(refresh_token)
        if ended and record is not None:
            await self._emit(
                "auth.signed_out", user_id=record.user_id, ip=ip, details={"everywhere": False}
            )
        return ended

    async def sign_out_everywhere(self, user_id: str, *, ip: str | None = None) -> int:
        """End every session of an account; returns how many live refresh tokens ended."""
        revoked = await self._tokens.revoke_all(user_id)
        await self._emit(
            "auth.signed_out",
            user_id=user_id,
            ip=ip,
            details={"everywhere": True, "ended": revoked},
        )
        return revoked

    # -- service accounts and API keys ------------------------------------------------

    async def create_service_account(self, name: Any, roles: Iterable[str] = ()) -> UserRecord:
        """An account for a program: no email, no password, API keys only."""
        errors = _check_name(name)
        if not isinstance(name, str) or not name.strip():
            errors.append(FieldError("name", "required", "a service account needs a name"))
        if errors:
            raise _validation(errors)
        assert isinstance(name, str)
        now = self._clock()
        user = UserRecord(
            id=new_id(),
            email=None,
            name=name.strip(),
            roles=check_roles(roles),
            kind="service",
            created_at=now,
            updated_at=now,
        )
        await self._users.add(user)
        await self._emit("service_account.created", user_id=user.id, details={"name": user.name})
        return user

    async def create_api_key(
        self,
        owner_id: str,
        scopes: Iterable[str] = (),
        *,
        name: str = "",
        ttl_s: float | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """A key for a service account; returns its record and the plaintext, shown once."""
        owner = await self._users.get(owner_id)
        if owner is None:
            raise NotFound("no such service account", details={"userId": owner_id})
        if owner.kind != "service":
            raise InvalidField(
                "API keys belong to service accounts",
                field_errors=[FieldError("owner", "invalid_value", "not a service account")],
            )
        if ttl_s is not None and (not math.isfinite(ttl_s) or ttl_s <= 0):
            raise InvalidField(
                "ttl must be positive",
                field_errors=[FieldError("ttlS", "invalid_value", "must be a positive number")],
            )
        record, plaintext = await self._api_keys.create(owner_id, scopes, name=name, ttl_s=ttl_s)
        await self._emit(
            "api_key.created",
            user_id=owner_id,
            details={"keyId": record.key_id, "scopes": sorted(record.scopes), "name": name},
        )
        return record, plaintext

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key at once; False if unknown or already revoked."""
        revoked = await self._api_keys.revoke(key_id)
        if revoked:
            await self._emit("api_key.revoked", details={"keyId": key_id})
        return revoked

    async def verify_api_key(
        self, presented: str, required_scopes: Iterable[str] = ()
    ) -> tuple[ApiKeyRecord, UserRecord]:
        """The key and its live owner; InvalidToken / ExpiredToken / Unauthenticated otherwise."""
        record = await self._api_keys.verify(presented, required_scopes)
        owner = await self._users.get(record.owner)
        if owner is None or not owner.active:
            raise _account_disabled()
        return record, owner

    # -- external identities (OIDC) ---------------------------------------------------

    def external_roles(self, identity: ExternalIdentity) -> tuple[str, ...]:
        """Hub roles a provider's token grants: its roles claim through ``roleMap``."""
        provider = self._providers.get(identity.issuer)
        if provider is None:
            return ()
        # The verifier reads ``rolesClaim`` into ``groups`` (its groups_claim).
        names = list(identity.groups)
        if provider.roleMap is not None:
            names = [provider.roleMap[name] for name in names if name in provider.roleMap]
        roles = [*provider.defaultRoles, *(name for name in names if _ROLE.match(name))]
        return tuple(sorted(set(roles)))

    async def external_user(self, identity: ExternalIdentity) -> UserRecord:
        """The hub account of an external identity, provisioned on first sight.

        Accounts are matched by (issuer, subject) only, never by email: an
        email claim is whatever the provider lets its users type, and
        matching on it would let one provider's user take over another
        account. A verified email is copied to a new account when free.
        Links are cached for ``link_cache_ttl_s``.
        """
        key = (identity.issuer, identity.subject)
        now = self._clock()
        cached = self._links.get(key)
        if cached is not None and cached[0] > now:
            self._links.move_to_end(key)
            user = cached[1]
        else:
            user = await self._linked_or_provisioned(identity, now)
            self._links[key] = (now + self._link_ttl_s, user)
            self._links.move_to_end(key)
            while len(self._links) > self._link_cache_size:
                self._links.popitem(last=False)
        if not user.active:
            raise _account_disabled()
        return user

    async def _linked_or_provisioned(self, identity: ExternalIdentity, now: float) -> UserRecord:
        user = await self._users.find_linked(identity.issuer, identity.subject)
        if user is not None:
            return user
        provider = self._providers.get(identity.issuer)
        if provider is None or not provider.autoProvision:
            raise Unauthenticated(
                "no hub account is linked to this identity",
                details={"reason": "identity not linked", "issuer": identity.issuer},
            )
        email = identity.email if identity.email_verified and identity.email else None
        if email is not None and check_email(email):
            email = None
        name = (identity.name or "").strip()[:MAX_NAME_LENGTH] or None
        fresh = UserRecord(
            id=new_id(), email=email, name=name, roles=(), created_at=now, updated_at=now
        )
        user, created = await self._users.provision(
            identity.issuer, identity.subject, fresh, at=now
        )
        if created:
            await self._emit(
                "user.provisioned",
                user_id=user.id,
                email=user.email,
                details={"issuer": identity.issuer, "subject": identity.subject},
            )
        return user

    async def link_identity(self, user_id: str, issuer: str, subject: str) -> bool:
        """Link an external identity to an existing account (needed when autoProvision is off)."""
        await self.get_user(user_id)
        linked = await self._users.link(issuer, subject, user_id, at=self._clock())
        self._links.pop((issuer, subject), None)
        return linked

    async def sign_in_external(
        self, identity: ExternalIdentity, *, ip: str | None = None
    ) -> Session:
        """Exchange a verified external token for a hub session (OIDC login).

        The session's roles are the provider's (mapped) plus the account's
        own; like every session they are fixed until the next sign-in.
        """
        user = await self.external_user(identity)
        roles = sorted({*user.roles, *self.external_roles(identity)})
        session = await self._start_session(user, roles)
        await self._emit(
            "auth.signed_in",
            user_id=user.id,
            email=user.email,
            ip=ip,
            details={"issuer": identity.issuer},
        )
        return session

    def _forget_links(self, user_id: str) -> None:
        for key in [k for k, (_, user) in self._links.items() if user.id == user_id]:
            del self._links[key]

    # -- housekeeping -----------------------------------------------------------------

    async def purge_expired(self) -> Mapping[str, int]:
        """Forget expired refresh tokens and stale sign-in counters now."""
        now = self._clock()
        self._last_purge = now
        if self._purge is None:
            return {"refreshTokens": await self._refresh_tokens.delete_expired(now)}
        return await self._purge(now)

    async def _maybe_purge(self) -> None:
        if self._clock() - self._last_purge < self._purge_interval_s:
            return
        try:
            counts = await self.purge_expired()
        except Exception:  # housekeeping must never fail a sign-in
            logger.exception("purging expired auth rows failed")
            return
        logger.info("purged expired auth rows: %s", dict(counts))

    async def _emit(
        self,
        type_: str,
        *,
        user_id: str | None = None,
        email: str | None = None,
        ip: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if self._on_event is None:
            return
        event = AuthEvent(
            type=type_,
            at=self._clock(),
            user_id=user_id,
            email=email,
            ip=ip,
            details=dict(details or {}),
        )
        try:
            await self._on_event(event)
        except Exception:  # an audit sink that fails must not fail the sign-in it reports
            logger.exception("auth event sink failed for %s", type_)


def _check_name(name: Any) -> list[FieldError]:
    if name is None:
        return []
    if not isinstance(name, str):
        return [FieldError("name", "invalid_type", "must be a string")]
    if len(name.strip()) > MAX_NAME_LENGTH:
        return [FieldError("name", "too_long", f"at most {MAX_NAME_LENGTH} characters")]
    return []


def duplicate_email() -> DuplicateValue:
    """The error for a taken email (409 ``duplicate_value``, field ``email``)."""
    return DuplicateValue(
        "an account with this email already exists",
        details={"field": "email"},
        field_errors=[FieldError("email", "duplicate_value", "already registered")],
    )


__all__ = [
    "INVALID_CREDENTIALS",
    "MAX_EMAIL_LENGTH",
    "MAX_NAME_LENGTH",
    "AuthEvent",
    "EventSink",
    "IdentityService",
    "Session",
    "UserRecord",
    "UserStore",
    "check_email",
    "check_password",
    "check_roles",
    "duplicate_email",
    "normalize_email",
]
