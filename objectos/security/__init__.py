"""Identity primitives: passwords, signing keys, tokens, OIDC, throttling, API keys;
and the permission engine of a running hub.

A pure library (no routes, no Ray): the auth routes and the Socket.IO
handshake call into it. Each module holds one noun; this package re-exports
what callers need. A process that must decide what a user may see (an HTTP
replica, the realtime gateway, a room actor) builds its engine with
:func:`start_permission_engine` (:mod:`objectos.security.directory`).
"""

from objectos.security.apikeys import (
    ApiKeyRecord,
    ApiKeyService,
    ApiKeyStore,
    InMemoryApiKeyStore,
)
from objectos.security.directory import (
    HubPermissions,
    StoreRoleDirectory,
    start_permission_engine,
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
    "HubPermissions",
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
    "StoreRoleDirectory",
    "TokenBucket",
    "TokenPair",
    "TokenService",
    "TokenVerifier",
    "start_permission_engine",
]
