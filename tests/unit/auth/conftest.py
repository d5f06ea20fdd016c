"""Test doubles for the identity tests: a hand-moved clock, hubs on real databases, an IdP.

Everything is the hub's real code on a real database (a SQLite file in
``tmp_path``, or a fresh PostgreSQL schema when ``OBJECTOS_TEST_POSTGRES_URL``
is set). Only time is faked, so no test sleeps, and argon2 is configured
cheap so that a brute-force test does not take seconds per guess.

- ``make_hub(**settings)`` builds one "replica": :func:`build_identity` plus
  the auth routes in a Starlette app, and an httpx client that reaches it
  through ``ASGITransport``. Two calls on one database and data directory
  are two replicas of one hub.
- :class:`LocalIssuer` is a small but real OpenID provider (discovery +
  JWKS over HTTP, in process) that signs ID tokens.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from authlib.deprecate import AuthlibDeprecationWarning
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from objectos.api.auth import AuthRoutes, HubAuthenticator, build_identity
from objectos.data import create_engine
from objectos.protocol.auth import AuthSettings
from objectos.security.identity import AuthEvent, IdentityService
from objectos.security.store import AuthDatabase

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebToken

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")
START = 1_700_000_000.0
PASSWORD = "correct horse battery staple"
IDP_ISSUER = "https://idp.example.test/realms/acme"
IDP_CLIENT_ID = "objectos-hub"
#: argon2 at its cheapest: the tests exercise the logic, not the cost.
FAST_HASHING = {"timeCost": 1, "memoryCostKib": 64, "parallelism": 1}


class ManualClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


EngineFactory = Callable[[], AsyncEngine]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not POSTGRES_URL, reason="OBJECTOS_TEST_POSTGRES_URL is not set"
                ),
            ],
        ),
    ]
)
async def new_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[EngineFactory]:
    """Opens engines on one empty database: a SQLite file, or a PostgreSQL schema of
    its own (dropped after). Each engine has its own pool, as a replica's would."""
    engines: list[AsyncEngine] = []
    schema = f"objectos_auth_{uuid.uuid4().hex[:12]}"
    admin = None
    if request.param == "postgresql":
        assert POSTGRES_URL is not None
        admin = create_async_engine(POSTGRES_URL)
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def make() -> AsyncEngine:
        if admin is None:
            engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        else:
            assert POSTGRES_URL is not None
            engine = create_engine(
                POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}}
            )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.dispose()
    if admin is not None:
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
def database(new_engine: EngineFactory) -> AsyncEngine:
    """An engine on the test database."""
    return new_engine()


@pytest.fixture
async def auth_db(database: AsyncEngine) -> AuthDatabase:
    """The identity tables on ``database`` (created on first use)."""
    return AuthDatabase(database)


def auth_settings(**overrides: Any) -> AuthSettings:
    """Test settings: sign-up open, cheap hashing, 3 failures lock for 60 s."""
    values: dict[str, Any] = {
        "issuer": "https://hub.example.test",
        "allowSignUp": True,
        "leewayS": 0,
        "passwordHashing": FAST_HASHING,
        "throttle": {"maxFailures": 3, "lockoutS": 60, "maxLockoutS": 600},
    }
    values.update(overrides)
    return AuthSettings.model_validate(values)


@dataclass
class Hub:
    """One replica: its services, its app and a client talking to the app."""

    identity: IdentityService
    authenticator: HubAuthenticator
    app: Starlette
    client: httpx.AsyncClient
    events: list[AuthEvent] = field(default_factory=list)

    def client_from(self, ip: str) -> httpx.AsyncClient:
        """Another client of the same app, connecting from ``ip``."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(ip, 40000)),
            base_url="http://hub.test",
        )

    async def sign_up(self, email: str = "ada@example.test", password: str = PASSWORD) -> Any:
        response = await self.client.post(
            "/api/v1/auth/sign-up", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.text
        return response.json()["data"]

    async def sign_in(
        self, email: str = "ada@example.test", password: str = PASSWORD
    ) -> httpx.Response:
        return await self.client.post(
            "/api/v1/auth/sign-in", json={"email": email, "password": password}
        )

    async def session(self, email: str = "ada@example.test") -> dict[str, Any]:
        """Sign up (if needed) and in; the token response's data."""
        response = await self.sign_in(email)
        if response.status_code == 401:
            await self.sign_up(email)
            response = await self.sign_in(email)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def me(self, headers: dict[str, str]) -> httpx.Response:
        return await self.client.get("/api/v1/auth/me", headers=headers)


MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(
    database: AsyncEngine, new_engine: EngineFactory, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[MakeHub]:
    """``await make_hub(http_client=None, own_engine=False, on_event=None, **settings)``.

    Every hub shares the database and the data directory (the key file);
    ``own_engine=True`` gives it its own connection pool, as a separate
    process would have.
    """
    opened: list[Hub] = []

    async def make(
        http_client: httpx.AsyncClient | None = None,
        own_engine: bool = False,
        on_event: Callable[[AuthEvent], Awaitable[None]] | None = None,
        **overrides: Any,
    ) -> Hub:
        events: list[AuthEvent] = []

        async def record(event: AuthEvent) -> None:
            events.append(event)
            if on_event is not None:
                await on_event(event)

        identity, authenticator = build_identity(
            auth_settings(**overrides),
            new_engine() if own_engine else database,
            tmp_path / "data",
            clock=clock,
            http_client=http_client,
            on_event=record,
        )
        app = Starlette(routes=AuthRoutes(identity, authenticator).routes())
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub.test"
        )
        hub = Hub(identity, authenticator, app, client, events)
        opened.append(hub)
        return hub

    yield make
    for hub in opened:
        await hub.client.aclose()
        await hub.identity.aclose()


@pytest.fixture
async def hub(make_hub: MakeHub) -> Hub:
    return await make_hub()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["success"] is False, body
    error: dict[str, Any] = body["error"]
    return error


class LocalIssuer:
    """An OpenID provider in process: discovery and JWKS over HTTP, and a token signer.

    ``requests`` counts JWKS fetches; setting ``status`` to 500 takes the
    provider down. Tokens carry Keycloak-style nested roles
    (``realm_access.roles``) unless a test overrides the claims.
    """

    def __init__(self, clock: ManualClock, issuer: str = IDP_ISSUER) -> None:
        self.clock = clock
        self.issuer = issuer
        self.requests = 0
        self.status = 200
        self.key = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "k1"})
        self.app = Starlette(
            routes=[
                Route("/realms/acme/.well-known/openid-configuration", self._discovery),
                Route("/realms/acme/certs", self._jwks),
            ]
        )

    def http_client(self) -> httpx.AsyncClient:
        """The client the hub uses to reach this provider."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))

    def token(self, key: Any = None, **claims: Any) -> str:
        """An ID token; ``claims`` override the defaults, None leaves a claim out."""
        now = int(self.clock())
        payload = {
            "iss": self.issuer,
            "aud": IDP_CLIENT_ID,
            "sub": "idp-user-42",
            "iat": now,
            "exp": now + 300,
            "email": "grace@example.test",
            "email_verified": True,
            "name": "Grace Hopper",
            "realm_access": {"roles": ["hub-admins", "offline_access"]},
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        signer = key or self.key
        header = {"alg": "RS256", "kid": "k1"}
        private = {k: v for k, v in signer.as_dict(is_private=True).items() if k != "kid"}
        signed: bytes = JsonWebToken(["RS256"]).encode(header, payload, private)
        return signed.decode()

    async def _discovery(self, request: Request) -> Response:
        if self.status != 200:
            return Response(status_code=self.status)
        return JSONResponse(
            {"issuer": self.issuer, "jwks_uri": "https://idp.example.test/realms/acme/certs"}
        )

    async def _jwks(self, request: Request) -> Response:
        self.requests += 1
        if self.status != 200:
            return Response(status_code=self.status)
        return JSONResponse({"keys": [{**self.key.as_dict(), "use": "sig", "alg": "RS256"}]})


@pytest.fixture
def issuer(clock: ManualClock) -> LocalIssuer:
    return LocalIssuer(clock)


OIDC_PROVIDER = {
    "issuer": IDP_ISSUER,
    "audience": IDP_CLIENT_ID,
    "rolesClaim": "realm_access.roles",
    "roleMap": {"hub-admins": "admin"},
    "defaultRoles": ["staff"],
    "leewayS": 0,
}
