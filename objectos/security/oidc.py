"""Tokens from external OpenID Connect providers, and the one verifier for every bearer token.

:class:`OIDCVerifier` checks an ID token or JWT access token issued by one
external provider (Keycloak, Entra ID, Google, ...) against that provider's
published keys (JWKS), found at ``jwks_uri`` or through discovery at
``{issuer}/.well-known/openid-configuration``. The JWKS is cached for
``cache_ttl_s``; a token naming a key id the cache does not know makes it
re-fetch — providers rotate keys — but at most once per
``min_refresh_interval_s``, so a stream of tokens with invented kids cannot
make the hub hammer the provider (or itself). When the provider is down, a
cached JWKS keeps being used past its TTL rather than failing every request.

:class:`TokenVerifier` is what the HTTP and Socket.IO edges call: it picks the
verifier by the token's *unverified* ``iss`` (the hub's own
:class:`~objectos.security.tokens.TokenService` or one provider) and lets that
verifier check everything, the issuer included, against its own keys. The
unverified ``iss`` selects a verifier and is used for nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

from objectos.errors import ConfigError, ServiceUnavailable
from objectos.security.keys import Clock
from objectos.security.tokens import MAX_TOKEN_LENGTH, Claims, TokenService, decode_jwt, invalid

with warnings.catch_warnings():
    # See keys.py: authlib.jose's deprecation notice (move to joserfc in 2.0) is noise here.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.jose import JsonWebKey, Key
    from authlib.jose.errors import DecodeError
    from authlib.jose.util import extract_header, extract_segment

logger = logging.getLogger(__name__)

#: Asymmetric algorithms accepted by default. HMAC is never accepted: the
#: hub does not share secrets with providers, and an HMAC "key" taken from a
#: JWKS would be public (the algorithm-confusion attack).
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
#: Which JWK key type each algorithm needs.
_KEY_TYPE_OF = {
    **{f"{family}{bits}": "RSA" for family in ("RS", "PS") for bits in (256, 384, 512)},
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}


@dataclass(frozen=True)
class ExternalIdentity:
    """Who an external provider says the bearer is.

    ``issuer`` + ``subject`` identify the person; the auth layer maps them
    to a hub user. ``claims`` holds every verified claim for mappings the
    fields below do not cover.
    """

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    groups: tuple[str, ...]
    expires_at: int
    claims: Mapping[str, Any] = field(default_factory=dict)


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and payload of a compact JWS, NOT verified; None if unreadable."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    header_segment, payload_segment, _signature = token.encode("ascii", "replace").split(b".")
    try:
        header = extract_header(header_segment, DecodeError)
        payload = json.loads(extract_segment(payload_segment, DecodeError))
    except (DecodeError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    return header, payload


def _claim_at_path(claims: Mapping[str, Any], path: str) -> Any:
    """``realm_access.roles`` -> claims["realm_access"]["roles"] (Keycloak nests roles)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class OIDCVerifier:
    """Verifies tokens of one external OpenID Connect provider."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        http_client: httpx.AsyncClient,
        *,
        jwks_uri: str | None = None,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        groups_claim: str = "groups",
        cache_ttl_s: float = 3600.0,
        min_refresh_interval_s: float = 60.0,
        leeway_s: float = 60.0,
        request_timeout_s: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        """Trust tokens from ``issuer`` that name ``audience`` (our client id).

        Without ``jwks_uri`` it is discovered from the issuer. ``groups_claim``
        is a claim name or a dotted path (``realm_access.roles``).
        ``http_client`` is owned by the caller, who closes it.
        """
        unknown = [alg for alg in algorithms if alg not in _KEY_TYPE_OF]
        if unknown or not algorithms:
            raise ConfigError(
                "OIDC algorithms must be asymmetric signature algorithms",
                details={"issuer": issuer, "refused": unknown, "allowed": sorted(_KEY_TYPE_OF)},
            )
        self._issuer = issuer
        self._audience = audience
        self._http = http_client
        self._jwks_uri = jwks_uri
        self._algorithms = frozenset(algorithms)
        self._groups_claim = groups_claim
        self._cache_ttl_s = cache_ttl_s
        self._min_refresh_interval_s = min_refresh_interval_s
        self._leeway_s = leeway_s
        self._timeout_s = request_timeout_s
        self._clock = clock
        self._keys: dict[str | None, Key] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._finished_fetches = 0
        self._lock = asyncio.Lock()

    @property
    def issuer(self) -> str:
        return self._issuer

    async def verify(self, token: str) -> ExternalIdentity:
        """The identity in a valid token; raises InvalidToken / ExpiredToken, or
        ServiceUnavailable when the provider's keys cannot be fetched at all."""
        peeked = _peek(token)
        if peeked is None:
            raise invalid("malformed token")
        header, _payload = peeked
        alg = header.get("alg")
        # Refuse before any network traffic: a forged header must not be
        # able to make us fetch anything.
        if alg not in self._algorithms:
            raise invalid("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid("malformed token")
        key = await self._key_for(kid)
        self._check_key_fits(key, alg)

        def resolve(verified_header: Mapping[str, Any]) -> Key:
            # authlib hands back the header it parsed; it is the one we peeked.
            if verified_header.get("alg") != alg:
                raise invalid("algorithm not allowed")
            return key

        claims = decode_jwt(
            token,
            [alg],
            resolve,
            issuer=self._issuer,
            audience=self._audience,
            now=self._clock(),
            leeway_s=self._leeway_s,
        )
        return self._identity(dict(claims))

    def _identity(self, claims: dict[str, Any]) -> ExternalIdentity:
        groups = _claim_at_path(claims, self._groups_claim)
        if isinstance(groups, str):
            groups = groups.split()
        elif not isinstance(groups, list):
            groups = []
        email = claims.get("email")
        name = claims.get("name") or claims.get("preferred_username")
        return ExternalIdentity(
            issuer=self._issuer,
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
            name=name if isinstance(name, str) else None,
            groups=tuple(str(group) for group in groups),
            expires_at=int(claims["exp"]),
            claims=claims,
        )

    def _check_key_fits(self, key: Key, alg: str) -> None:
        tokens = key.tokens
        if tokens.get("kty") != _KEY_TYPE_OF[alg]:
            raise invalid("algorithm does not fit the key")
        if tokens.get("alg") not in (None, alg):
            raise invalid("algorithm does not fit the key")
        if alg == "EdDSA" and tokens.get("crv") not in ("Ed25519", "Ed448"):
            raise invalid("algorithm does not fit the key")

    async def _key_for(self, kid: str | None) -> Key:
        if self._keys is None or self._clock() - self._fetched_at >= self._cache_ttl_s:
            await self._refresh()
        if self._keys is None:
            raise ServiceUnavailable(
                "identity provider keys are unavailable",
                details={"issuer": self._issuer, "reason": "no JWKS fetched yet"},
            )
        key = self._lookup(kid)
        if key is None and kid is not None:
            # The provider may have rotated its keys since we cached them.
            await self._refresh()
            key = self._lookup(kid)
        if key is None:
            raise invalid("unknown key id" if kid is not None else "missing key id")
        return key

    def _lookup(self, kid: str | None) -> Key | None:
        keys = self._keys or {}
        if kid is None:
            # A provider with a single key may leave kid out; with several
            # keys the choice would be a guess, so it is refused.
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    async def _refresh(self) -> None:
        """Fetch the JWKS, unless one was tried within ``min_refresh_interval_s``.

        Requests that arrive while a fetch is in flight wait for it and use
        its result instead of fetching again.
        """
        seen = self._finished_fetches
        async with self._lock:
            if self._finished_fetches != seen:
                return  # a fetch finished while we waited for the lock
            now = self._clock()
            if (
                self._attempted_at is not None
                and now - self._attempted_at < self._min_refresh_interval_s
            ):
                return
            self._attempted_at = now
            try:
                keys = await self._fetch_keys()
            except ServiceUnavailable as exc:
                if self._keys is None:
                    raise
                logger.warning(
                    "could not refresh JWKS of %s (%s); using the cached keys",
                    self._issuer,
                    exc.details.get("reason"),
                )
                return
            finally:
                self._finished_fetches += 1
            self._keys = keys
            self._fetched_at = self._clock()

    async def _fetch_keys(self) -> dict[str | None, Key]:
        document = await self._get_json(self._jwks_uri or await self._discover_jwks_uri())
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise self._unavailable("JWKS has no keys list")
        keys: dict[str | None, Key] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = JsonWebKey.import_key(entry)
            except Exception:  # one unusable key (e.g. an unknown kty) must not hide the others
                logger.warning("skipping an unusable key in the JWKS of %s", self._issuer)
                continue
            keys[entry.get("kid")] = key
        return keys

    async def _discover_jwks_uri(self) -> str:
        url = self._issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url)
        # OpenID Connect Discovery §4.3: the document must name the issuer we
        # asked about, or someone else's keys could be substituted.
        if document.get("issuer") != self._issuer:
            raise self._unavailable("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise self._unavailable("discovery document has no jwks_uri")
        self._jwks_uri = jwks_uri
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            raise self._unavailable(f"{type(exc).__name__} fetching {url}") from exc
        if response.status_code != 200:
            raise self._unavailable(f"HTTP {response.status_code} from {url}")
        try:
            document = response.json()
        except ValueError as exc:
            raise self._unavailable(f"{url} did not return JSON") from exc
        if not isinstance(document, dict):
            raise self._unavailable(f"{url} did not return a JSON object")
        return document

    def _unavailable(self, reason: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            "identity provider keys are unavailable",
            details={"issuer": self._issuer, "reason": reason},
        )


class TokenVerifier:
    """Verifies any bearer token the hub accepts: its own or a configured provider's."""

    def __init__(self, hub: TokenService, providers: Iterable[OIDCVerifier] = ()) -> None:
        """Route tokens whose ``iss`` is a provider's to it, everything else to ``hub``."""
        self._hub = hub
        self._providers: dict[str, OIDCVerifier] = {}
        for provider in providers:
            if provider.issuer == hub.issuer or provider.issuer in self._providers:
                raise ConfigError(
                    "two token verifiers claim one issuer", details={"issuer": provider.issuer}
                )
            self._providers[provider.issuer] = provider

    async def verify(self, token: str) -> Claims | ExternalIdentity:
        """Hub claims or an external identity; raises InvalidToken / ExpiredToken."""
        peeked = _peek(token)
        issuer = peeked[1].get("iss") if peeked is not None else None
        if peeked is None or issuer == self._hub.issuer:
            return self._hub.verify_access(token)
        provider = self._providers.get(issuer) if isinstance(issuer, str) else None
        if provider is None:
            raise invalid("unknown issuer")
        return await provider.verify(token)


__all__ = [
    "DEFAULT_ALGORITHMS",
    "ExternalIdentity",
    "OIDCVerifier",
    "TokenVerifier",
]
