"""Identity over HTTP: the ``/api/v1/auth`` routes and the request authenticator.

``build_identity(settings, database, data_dir)`` makes everything a Serve
replica needs from the manifest's ``auth:`` section: an
:class:`~objectos.security.identity.IdentityService` and a
:class:`HubAuthenticator`. Replicas share the database (accounts, refresh
tokens, failure counts, API keys) and the key file in the data directory;
nothing else, so any replica can answer any request.

Routes (bodies are JSON objects; unknown keys are refused):

=================================  ============================================================
``POST /api/v1/auth/sign-up``      ``{email, password, name?}`` -> 201 account (sign-up must be
                                   allowed by ``allowSignUp``)
``POST /api/v1/auth/sign-in``      ``{email, password}`` -> tokens + account; 429 + Retry-After
                                   while locked out
``POST /api/v1/auth/sign-in/oidc`` ``{idToken}`` from a configured provider -> hub tokens
``POST /api/v1/auth/refresh``      ``{refreshToken}`` -> new tokens (the old one is spent)
``POST /api/v1/auth/sign-out``     ``{refreshToken}`` ends that session; ``{everywhere: true}``
                                   with a bearer token ends all of the caller's sessions
``GET  /api/v1/auth/me``           the caller's account and how they authenticated
``GET  /api/v1/auth/jwks``         the public signing keys (also ``/.well-known/jwks.json``)
=================================  ============================================================

:class:`HubAuthenticator` turns a request into an
:class:`~objectos.data.actor.Actor`: ``Authorization: Bearer <JWT>`` (the
hub's own or a configured OIDC provider's), ``Authorization: ApiKey <key>``
or ``X-API-Key: <key>`` (an API key also works as a bearer token, for clients
such as Prometheus that only send bearer tokens). Missing or bad credentials raise
:class:`~objectos.errors.Unauthenticated` / ``InvalidToken`` /
``ExpiredToken`` (401); :func:`~objectos.api.envelope.www_authenticate`
(re-exported here) gives the matching ``WWW-Authenticate`` challenge (RFC 6750 §3).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from objectos.api.discovery import API_BASE
from objectos.api.envelope import failure, respond, www_authenticate
from objectos.data.actor import Actor
from objectos.errors import (
    FieldError,
    InvalidField,
    InvalidToken,
    MissingRequiredField,
    ObjectOSError,
    Unauthenticated,
    ValidationError,
)
from objectos.protocol.auth import AuthSettings
from objectos.security.apikeys import ApiKeyService
from objectos.security.identity import AuthEvent, IdentityService
from objectos.security.keys import FileKeyStore, KeyRing
from objectos.security.oidc import ExternalIdentity, OIDCVerifier, TokenVerifier
from objectos.security.passwords import PasswordHasher
from objectos.security.store import AuthDatabase
from objectos.security.throttle import SignInThrottle
from objectos.security.tokens import Claims, TokenService

logger = logging.getLogger("objectos.auth")

AUTH_BASE = f"{API_BASE}/auth"
JWKS_WELL_KNOWN = "/.well-known/jwks.json"
#: Route families for discovery (``MOUNTED_ROUTES`` of the HTTP app).
AUTH_ROUTES = {"auth": AUTH_BASE, "jwks": JWKS_WELL_KNOWN}
#: Auth request bodies are a few short strings; anything bigger is refused unread.
MAX_BODY_BYTES = 16 * 1024
API_KEY_PREFIX = "oos_"
#: ``request.state`` attributes: the verified :class:`Authentication`, or the
#: error a credential was refused with.
AUTH_STATE = "auth"
AUTH_ERROR_STATE = "auth_error"

Handler = Callable[[Request], Awaitable[Response]]
AuthMethod = Literal["token", "oidc", "api_key"]


@dataclass(frozen=True)
class Authentication:
    """Who made a request and how; :meth:`HubAuthenticator.authenticate` stores it in
    ``request.state.auth``.

    ``scopes`` is None for tokens (no restriction beyond roles) and the key's
    scopes for API keys; ``expires_at`` is when the credential stops working
    (None for API keys without expiry).
    """

    actor: Actor
    method: AuthMethod
    issuer: str | None = None
    expires_at: float | None = None
    scopes: frozenset[str] | None = None
    credential_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "roles": sorted(self.actor.roles),
            "issuer": self.issuer,
            "expiresAt": self.expires_at,
            "scopes": sorted(self.scopes) if self.scopes is not None else None,
        }


def client_ip(request: Request, trusted_proxies: Sequence[str] = ()) -> str | None:
    """The client's address, for per-IP sign-in throttling.

    ``X-Forwarded-For`` is believed only when the direct peer is a trusted
    proxy, and then read from the right, skipping trusted hops: everything
    left of the first untrusted address may have been written by the client.
    """
    peer = request.client.host if request.client is not None else None
    networks = [ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies]
    if peer is None or not networks or not _in_networks(peer, networks):
        return peer
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled header: fall back to what we saw ourselves
        if not _in_networks(hop, networks):
            return hop
    return hops[0] if hops else peer


def _in_networks(
    address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class HubAuthenticator:
    """Turns a request's credentials into an :class:`~objectos.data.actor.Actor`.

    Hub access tokens are verified locally (signature, claims; no database
    read), provider tokens against the provider's cached JWKS plus one
    cached account lookup, API keys with two primary-key reads (key, owner)
    so a revocation or deactivation counts from the next request.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        identity: IdentityService,
        keyring: KeyRing,
        *,
        realm: str = "objectos",
    ) -> None:
        self._verifier = verifier
        self._identity = identity
        self._keyring = keyring
        self.realm = realm

    async def authenticate(self, request: Request) -> Actor:
        """The actor behind ``request``; raises Unauthenticated / InvalidToken / ExpiredToken.

        Also stores the full :class:`Authentication` in ``request.state.auth``.
        A request is verified once: a second call (after :meth:`remember`)
        answers from the state.
        """
        state = request.state
        known = getattr(state, AUTH_STATE, None)
        if isinstance(known, Authentication):
            return known.actor
        failed = getattr(state, AUTH_ERROR_STATE, None)
        if isinstance(failed, ObjectOSError):
            raise failed
        auth = await self.authentication(request)
        setattr(state, AUTH_STATE, auth)
        return auth.actor

    async def remember(self, request: Request) -> None:
        """Verify the request's credential ahead of its route (the rate limiter's
        ``identify``), leaving the result in ``request.state`` for :meth:`authenticate`.

        A request without a credential is left alone (the route decides
        whether it needs one); a bad credential is remembered as such and
        refused by the route that asks. Never raises.
        """
        headers = request.headers
        if "authorization" not in headers and "x-api-key" not in headers:
            return
        try:
            await self.authenticate(request)
        except ObjectOSError as exc:
            setattr(request.state, AUTH_ERROR_STATE, exc)
        except Exception:  # the route verifies again and reports it
            logger.warning("verifying a credential ahead of the route failed", exc_info=True)

    async def __call__(self, request: Request) -> Actor:
        """Same as :meth:`authenticate`, so the authenticator is the data routes'
        ``Authenticator`` as it is."""
        return await self.authenticate(request)

    async def authentication(self, request: Request) -> Authentication:
        """Like :meth:`authenticate`, returning everything that is known about the caller."""
        authorization = request.headers.getlist("authorization")
        api_keys = request.headers.getlist("x-api-key")
        if len(authorization) + len(api_keys) > 1:
            # RFC 6750 §2: clients must not use more than one method at once;
            # guessing which one counts would be a place for confusion.
            raise InvalidToken(
                "send exactly one credential", details={"reason": "more than one credential"}
            )
        if api_keys:
            return await self.authenticate_api_key(api_keys[0].strip())
        if not authorization:
            raise Unauthenticated(
                "authentication required", details={"reason": "missing credentials"}
            )
        scheme, _, credential = authorization[0].strip().partition(" ")
        credential = credential.strip()
        if not credential:
            raise InvalidToken("invalid token", details={"reason": "malformed token"})
        if scheme.lower() == "bearer":
            if credential.startswith(API_KEY_PREFIX):
                return await self.authenticate_api_key(credential)
            return await self.authenticate_bearer(credential)
        if scheme.lower() == "apikey":
            return await self.authenticate_api_key(credential)
        raise InvalidToken(
            "unsupported authorization scheme",
            details={"reason": "unsupported authorization scheme"},
        )

    async def authenticate_token(self, token: str) -> Authentication:
        """A credential without its header (the Socket.IO handshake's ``auth.token``):
        an API key if it looks like one, else a bearer token."""
        if not isinstance(token, str) or not token:
            raise Unauthenticated(
                "authentication required", details={"reason": "missing credentials"}
            )
        if token.startswith(API_KEY_PREFIX):
            return await self.authenticate_api_key(token)
        return await self.authenticate_bearer(token)

    async def authenticate_bearer(self, token: str) -> Authentication:
        """A hub access token or a configured provider's token."""
        verified = await self._verifier.verify(token)
        if isinstance(verified, Claims):
            return Authentication(
                actor=Actor.user(verified.subject, verified.roles),
                method="token",
                issuer=verified.issuer,
                expires_at=float(verified.expires_at),
                credential_id=verified.token_id,
            )
        user = await self._identity.external_user(verified)
        roles = {*user.roles, *self._identity.external_roles(verified)}
        return Authentication(
            actor=Actor.user(user.id, roles),
            method="oidc",
            issuer=verified.issuer,
            expires_at=float(verified.expires_at),
        )

    async def authenticate_api_key(self, key: str) -> Authentication:
        """A service account's API key."""
        record, owner = await self._identity.verify_api_key(key)
        return Authentication(
            actor=Actor.user(owner.id, owner.roles),
            method="api_key",
            expires_at=record.expires_at,
            scopes=record.scopes,
            credential_id=record.key_id,
        )

    async def verify_external(self, token: str) -> ExternalIdentity:
        """A provider's token (for the OIDC sign-in exchange); hub tokens are refused."""
        verified = await self._verifier.verify(token)
        if not isinstance(verified, ExternalIdentity):
            raise InvalidToken(
                "expected a token of an external provider",
                details={"reason": "not an external token"},
            )
        return verified

    @property
    def keyring(self) -> KeyRing:
        """The hub's signing keys (an operator rotates them here)."""
        return self._keyring

    def jwks(self) -> dict[str, Any]:
        """The JWKS document of the hub's signing keys."""
        return self._keyring.public_jwks()


class AuthRoutes:
    """The ``/api/v1/auth`` endpoints over one IdentityService and HubAuthenticator.

    Every handler returns a response itself, errors included (envelope +
    ``WWW-Authenticate`` on 401, ``Retry-After`` on 429), so the handlers
    can be mounted as they are (:meth:`routes`) or wrapped by the HTTP
    app's own instrumentation (:meth:`endpoints`).
    """

    def __init__(self, identity: IdentityService, authenticator: HubAuthenticator) -> None:
        """Serve ``identity``; client IPs honour ``identity.settings.trustedProxies``."""
        self.identity = identity
        self.authenticator = authenticator
        self._trusted_proxies = tuple(identity.settings.trustedProxies)

    def endpoints(self) -> list[tuple[str, Handler, list[str]]]:
        """``(path, handler, methods)`` of every route."""
        return [
            (f"{AUTH_BASE}/sign-up", self.sign_up, ["POST"]),
            (f"{AUTH_BASE}/sign-in", self.sign_in, ["POST"]),
            (f"{AUTH_BASE}/sign-in/oidc", self.sign_in_oidc, ["POST"]),
            (f"{AUTH_BASE}/refresh", self.refresh, ["POST"]),
            (f"{AUTH_BASE}/sign-out", self.sign_out, ["POST"]),
            (f"{AUTH_BASE}/me", self.me, ["GET"]),
            (f"{AUTH_BASE}/jwks", self.jwks, ["GET"]),
            (JWKS_WELL_KNOWN, self.jwks, ["GET"]),
        ]

    def routes(self) -> list[Route]:
        """Starlette routes for :meth:`endpoints`."""
        return [
            Route(path, handler, methods=methods) for path, handler, methods in self.endpoints()
        ]

    # -- handlers ---------------------------------------------------------------------

    async def sign_up(self, request: Request) -> Response:
        async def handle() -> Response:
            body = await _json_body(request, required=("email", "password"), optional=("name",))
            user = await self.identity.sign_up(
                body["email"], body["password"], body.get("name"), ip=self._ip(request)
            )
            return _ok(request, user.public(), status=201)

        return await self._respond(request, handle)

    async def sign_in(self, request: Request) -> Response:
        async def handle() -> Response:
            body = await _json_body(request, required=("email", "password"))
            session = await self.identity.sign_in(
                body["email"], body["password"], ip=self._ip(request)
            )
            return _ok(request, session.to_dict(), no_store=True)

        return await self._respond(request, handle)

    async def sign_in_oidc(self, request: Request) -> Response:
        async def handle() -> Response:
            body = await _json_body(request, required=("idToken",))
            token = _string(body, "idToken")
            identity = await self.authenticator.verify_external(token)
            session = await self.identity.sign_in_external(identity, ip=self._ip(request))
            return _ok(request, session.to_dict(), no_store=True)

        return await self._respond(request, handle)

    async def refresh(self, request: Request) -> Response:
        async def handle() -> Response:
            body = await _json_body(request, required=("refreshToken",))
            session = await self.identity.refresh(body["refreshToken"], ip=self._ip(request))
            return _ok(request, session.to_dict(), no_store=True)

        return await self._respond(request, handle)

    async def sign_out(self, request: Request) -> Response:
        async def handle() -> Response:
            body = await _json_body(request, optional=("refreshToken", "everywhere"))
            everywhere = body.get("everywhere", False)
            if not isinstance(everywhere, bool):
                raise InvalidField(
                    "everywhere must be true or false",
                    field_errors=[FieldError("everywhere", "invalid_type", "must be a boolean")],
                )
            if everywhere:
                actor = await self.authenticator.authenticate(request)
                assert actor.user_id is not None
                ended = await self.identity.sign_out_everywhere(actor.user_id, ip=self._ip(request))
                return _ok(request, {"signedOut": True, "sessionsEnded": ended})
            if "refreshToken" not in body:
                raise MissingRequiredField(
                    "refreshToken is required (or everywhere: true)",
                    field_errors=[FieldError("refreshToken", "required", "is required")],
                )
            ended_one = await self.identity.sign_out(body["refreshToken"], ip=self._ip(request))
            return _ok(request, {"signedOut": True, "sessionsEnded": int(ended_one)})

        return await self._respond(request, handle)

    async def me(self, request: Request) -> Response:
        async def handle() -> Response:
            actor = await self.authenticator.authenticate(request)
            assert actor.user_id is not None
            user = await self.identity.me(actor.user_id)
            auth: Authentication = request.state.auth
            return _ok(request, {**user.public(), "auth": auth.to_dict()})

        return await self._respond(request, handle)

    async def jwks(self, request: Request) -> Response:
        async def handle() -> Response:
            # A bare JWKS document, not the envelope: JOSE libraries read it as is.
            return JSONResponse(
                self.authenticator.jwks(), headers={"Cache-Control": "public, max-age=300"}
            )

        return await self._respond(request, handle)

    # -- plumbing ---------------------------------------------------------------------

    def _ip(self, request: Request) -> str | None:
        return client_ip(request, self._trusted_proxies)

    async def _respond(
        self, request: Request, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        try:
            return await handle()
        except Exception as exc:
            return error_response(request, exc, realm=self.authenticator.realm)


def error_response(
    request: Request, exc: BaseException, *, realm: str = "objectos"
) -> JSONResponse:
    """The error envelope for ``exc`` with ``WWW-Authenticate`` / ``Retry-After`` as due."""
    request_id = getattr(request.state, "request_id", None)
    status, body, headers = failure(exc, request_id=request_id, realm=realm)
    return JSONResponse(body, status_code=status, headers=headers)


def _ok(request: Request, data: Any, *, status: int = 200, no_store: bool = False) -> JSONResponse:
    # RFC 6749 §5.1: responses carrying tokens must not be cached anywhere.
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"} if no_store else None
    return respond(request, data, status=status, headers=headers)


async def _json_body(
    request: Request, *, required: Iterable[str] = (), optional: Iterable[str] = ()
) -> dict[str, Any]:
    """The request's JSON object, with ``required`` keys present and no unknown keys."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(
            "the request body is not valid JSON", details={"reason": "invalid json"}
        ) from None
    if not isinstance(body, dict):
        raise ValidationError(
            "the request body must be a JSON object", details={"reason": "not an object"}
        )
    required = tuple(required)
    allowed = {*required, *optional}
    unknown = sorted(key for key in body if key not in allowed)
    if unknown:
        raise InvalidField(
            f"unknown field(s): {', '.join(unknown)}",
            field_errors=[FieldError(key, "unknown_field", "not accepted here") for key in unknown],
        )
    missing = [key for key in required if body.get(key) in (None, "")]
    if missing:
        raise MissingRequiredField(
            f"missing field(s): {', '.join(missing)}",
            field_errors=[FieldError(key, "required", "is required") for key in missing],
        )
    return body


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise InvalidField(
            f"{key} must be a string",
            field_errors=[FieldError(key, "invalid_type", "must be a string")],
        )
    return value


def _too_large() -> ValidationError:
    return ValidationError(
        "the request body is too large",
        details={"reason": "body too large", "maxBytes": MAX_BODY_BYTES},
    )


# -- the factory ------------------------------------------------------------------------


def build_identity(
    settings: AuthSettings,
    database: str | sa.URL | AsyncEngine,
    data_dir: str | os.PathLike[str],
    *,
    clock: Callable[[], float] = time.time,
    http_client: httpx.AsyncClient | None = None,
    on_event: Callable[[AuthEvent], Awaitable[None]] | None = None,
) -> tuple[IdentityService, HubAuthenticator]:
    """The identity service and authenticator of one process, from the manifest.

    ``database`` is a SQLAlchemy async URL (``{dataDir}`` is substituted, as
    in the manifest) or an engine to share (e.g. the data engine's).
    Signing keys come from ``settings.keys`` or else from
    ``<data_dir>/signing-keys.json``, generated on first start. ``http_client``
    fetches OIDC discovery documents and JWKS (default: a client owned by
    the service). No I/O happens here beyond the key file: tables are created
    on first use. ``await identity.aclose()`` releases what was opened.
    """
    data_dir = Path(data_dir)
    if isinstance(database, str):
        database = database.replace("{dataDir}", str(data_dir))
    db = AuthDatabase(database)
    if settings.keys:
        keyring = KeyRing.from_config(
            settings.keys, retire_after_s=settings.keyRetireAfterS, clock=clock
        )
    else:
        keyring = KeyRing.open(
            FileKeyStore.in_data_dir(data_dir),
            algorithm=settings.algorithm,
            retire_after_s=settings.keyRetireAfterS,
            clock=clock,
            reload_interval_s=settings.keyReloadIntervalS,
        )
    tokens = TokenService(
        keyring,
        settings.issuer,
        settings.audience,
        access_ttl=settings.accessTtlS,
        refresh_ttl=settings.refreshTtlS,
        clock=clock,
        refresh_store=db.refresh_tokens,
        leeway_s=settings.leewayS,
    )
    limits = settings.throttle
    throttle = SignInThrottle(
        max_failures=limits.maxFailures,
        window_s=limits.windowS,
        lockout_s=limits.lockoutS,
        clock=clock,
        max_lockout_s=limits.maxLockoutS,
        ip_max_failures=limits.ipMaxFailures,
        store=db.counters,
    )
    cost = settings.passwordHashing
    hasher = PasswordHasher(
        time_cost=cost.timeCost, memory_cost_kib=cost.memoryCostKib, parallelism=cost.parallelism
    )
    resources: list[Callable[[], Awaitable[None]]] = [db.aclose]
    if settings.oidc and http_client is None:
        http_client = httpx.AsyncClient(follow_redirects=False)
        resources.append(http_client.aclose)
    providers = [
        OIDCVerifier(
            provider.issuer,
            provider.audience,
            http_client,
            jwks_uri=provider.jwksUri,
            algorithms=provider.algorithms,
            groups_claim=provider.rolesClaim,
            cache_ttl_s=provider.cacheTtlS,
            leeway_s=provider.leewayS,
            clock=clock,
        )
        for provider in settings.oidc
        if http_client is not None
    ]

    async def purge(now: float) -> dict[str, int]:
        return await db.purge_expired(now, counter_horizon_s=limits.windowS)

    identity = IdentityService(
        settings,
        users=db.users,
        tokens=tokens,
        refresh_tokens=db.refresh_tokens,
        throttle=throttle,
        api_keys=ApiKeyService(db.api_keys, clock=clock),
        hasher=hasher,
        clock=clock,
        on_event=on_event,
        purge=purge,
        resources=resources,
    )
    authenticator = HubAuthenticator(
        TokenVerifier(tokens, providers), identity, keyring, realm=settings.realm
    )
    return identity, authenticator


__all__ = [
    "AUTH_BASE",
    "AUTH_ROUTES",
    "JWKS_WELL_KNOWN",
    "AuthRoutes",
    "Authentication",
    "HubAuthenticator",
    "build_identity",
    "client_ip",
    "error_response",
    "www_authenticate",
]
