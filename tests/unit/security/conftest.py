"""Test doubles for the security tests: a hand-moved clock and ready-made services.

Everything here is real code of the hub (key files in ``tmp_path``, in-memory
stores); only time is faked, so no test sleeps.
"""

from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from objectos.security.keys import FileKeyStore, KeyRing
from objectos.security.tokens import InMemoryRefreshTokenStore, TokenService

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebToken

ISSUER = "https://hub.example.test"
AUDIENCE = "objectos"
IDP_ISSUER = "https://idp.example.test/realms/acme"
IDP_CLIENT_ID = "objectos-hub"
START = 1_700_000_000.0


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


@pytest.fixture
def key_store(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore.in_data_dir(tmp_path / "data")


@pytest.fixture
def keyring(key_store: FileKeyStore, clock: ManualClock) -> KeyRing:
    return KeyRing.open(key_store, clock=clock, retire_after_s=3600.0)


@pytest.fixture
def refresh_store() -> InMemoryRefreshTokenStore:
    return InMemoryRefreshTokenStore()


@pytest.fixture
def tokens(
    keyring: KeyRing, clock: ManualClock, refresh_store: InMemoryRefreshTokenStore
) -> TokenService:
    return TokenService(
        keyring,
        ISSUER,
        AUDIENCE,
        access_ttl=900,
        refresh_ttl=86400,
        clock=clock,
        refresh_store=refresh_store,
    )


class IdentityProvider:
    """A small but real OpenID provider: discovery and JWKS served over HTTP.

    The app is a Starlette ASGI app reached through ``httpx.ASGITransport``,
    so the verifier performs genuine HTTP exchanges. ``requests`` counts hits
    per path; setting ``status`` to 500 simulates an outage; while ``gate`` is
    an unset event, every response waits for it (a slow provider);
    ``publish_alg=False`` leaves ``alg`` out of the JWKS entries, as many
    providers do.
    """

    def __init__(self, clock: ManualClock, issuer: str = IDP_ISSUER) -> None:
        self.clock = clock
        self.issuer = issuer
        self.advertised_issuer = issuer
        self.status = 200
        self.gate: asyncio.Event | None = None
        self.publish_alg = True
        self.requests: Counter[str] = Counter()
        self.keys: list[Any] = []
        self.add_key("RS256", kid="rsa-1")
        # Keycloak-style issuer with a path: the routes live under it.
        prefix = urlsplit(issuer).path
        self.app = Starlette(
            routes=[
                Route(f"{prefix}/.well-known/openid-configuration", self._discovery),
                Route(f"{prefix}/protocol/certs", self._jwks),
            ]
        )

    def add_key(self, alg: str, kid: str) -> Any:
        kty, size = {"RS256": ("RSA", 2048), "ES256": ("EC", "P-256"), "PS256": ("RSA", 2048)}[alg]
        key = JsonWebKey.generate_key(kty, size, is_private=True, options={"kid": kid})
        key.options["alg"] = alg
        self.keys.append(key)
        return key

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=self.issuer)

    def token(
        self,
        key: Any = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An ID token signed by ``key`` (default: the first key).

        ``claims`` override the defaults; a claim set to None is left out.
        """
        key = key or self.keys[0]
        now = int(self.clock())
        payload = {
            "iss": self.issuer,
            "aud": IDP_CLIENT_ID,
            "sub": "idp-user-42",
            "iat": now,
            "exp": now + 300,
            "email": "ada@example.test",
            "email_verified": True,
            "name": "Ada Lovelace",
            "groups": ["engineering", "admins"],
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        full_header = {"alg": key.options["alg"], "kid": key.kid, **(header or {})}
        # Without a kid in the key, authlib leaves the header's kid alone.
        private = {k: v for k, v in key.as_dict(is_private=True).items() if k != "kid"}
        signed: bytes = JsonWebToken([full_header["alg"]]).encode(full_header, payload, private)
        return signed.decode()

    async def _discovery(self, request: Request) -> Response:
        self.requests["discovery"] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return Response(status_code=self.status)
        return JSONResponse(
            {
                "issuer": self.advertised_issuer,
                "jwks_uri": f"{self.issuer}/protocol/certs",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self.requests["jwks"] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return Response(status_code=self.status)
        entries = []
        for key in self.keys:
            entry = {**key.as_dict(), "use": "sig"}
            if self.publish_alg:
                entry["alg"] = key.options["alg"]
            entries.append(entry)
        return JSONResponse({"keys": entries})


@pytest.fixture
def idp(clock: ManualClock) -> IdentityProvider:
    return IdentityProvider(clock)
