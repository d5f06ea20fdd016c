"""Identity primitives: passwords, signing keys, tokens, OIDC, throttling, API keys.

A pure library (no routes, no Ray): the auth routes and the Socket.IO
handshake call into it. Each module holds one noun; this package re-exports
what callers need.
"""

from objectos.security.apikeys import (
    ApiKeyRecord,
    ApiKeyService,
    ApiKeyStore,
    InMemoryApiKeyStore,
)
from objectos.security.keys import FileKeyStore, KeyRing, KeyStore, SigningKey
from objectos.security.oidc import ExternalIdentity, OIDCVerifier, TokenVerifier
from objectos.security.passwords import PasswordHasher
from objectos.security.throttle import (
    CounterStore,
    InMemoryCounterStore,
    SignInThrottle,
    TokenBucket,
)
from objectos.security.tokens import (
    Claims,
    InMemoryRefreshTokenStore,
    RefreshTokenStore,
    TokenPair,
    TokenService,
)

__all__ = [
    "ApiKeyRecord",
    "ApiKeyService",
    "ApiKeyStore",
    "Claims",
    "CounterStore",
    "ExternalIdentity",
    "FileKeyStore",
    "InMemoryApiKeyStore",
    "InMemoryCounterStore",
    "InMemoryRefreshTokenStore",
    "KeyRing",
    "KeyStore",
    "OIDCVerifier",
    "PasswordHasher",
    "RefreshTokenStore",
    "SignInThrottle",
    "SigningKey",
    "TokenBucket",
    "TokenPair",
    "TokenService",
    "TokenVerifier",
]
