"""Per-client rate limiting of the HTTP surface that holds across Serve replicas.

Each client gets one token bucket per route family: ``rate`` requests per
second sustained, ``burst`` at once (:class:`~objectos.protocol.manifest.RateLimitSettings`).
A client is its authenticated user, else its API key, else its address
(:func:`client_identity`). When authentication happens in the routes, after
this middleware, :func:`verified_identity` verifies the credential here first
(once per request: the route reuses the result). A refused request gets
``429 rate_limit_exceeded`` in the error envelope with ``Retry-After``.

The buckets live in one shared :class:`BucketStore` (in production the
``ratelimiter`` Ray actor), because a limit that each of N replicas enforces
on its own lets a client through N times. Asking the store on every request
would add an actor call to every request, so each replica **leases** tokens in
small batches (:class:`TokenLeases`): it takes up to ``lease`` tokens at once,
spends them locally, and asks again when they run out.

Precision, and what it costs:

* Every admitted request spent a token the store handed out, so tokens cannot
  be minted; a replica holds at most one lease per client, and unspent
  tokens go back to the store. So in any window a client gets at most
  ``burst + rate * window`` requests (the exact bucket) plus the tokens
  replicas held when the window began: at most ``replicas * lease`` more.
* A client can be refused early by at most the unspent tokens other replicas
  hold, ``(replicas - 1) * lease``, and only until those leases expire
  (``max_lease_s``) and are handed back (with that replica's next store call
  for the client). The lease is capped at a quarter of the burst to keep
  this small.
* Store calls: one per ``lease`` admitted requests per client and replica;
  a refused client is remembered until its ``Retry-After``, so a flood of
  refused requests costs no store calls.
* If the store does not answer within ``store_timeout_s`` the replica falls
  back to a bucket of its own for ``fallback_s``: the API stays up, and for
  that while a client may get up to ``replicas`` times its limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from objectos.api.envelope import failure
from objectos.errors import RateLimitExceeded
from objectos.protocol.manifest import RateLimitRule, RateLimitSettings

logger = logging.getLogger("objectos.ratelimit")

Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Where the auth layer leaves the *verified* caller (``request.state.auth``:
#: an object with ``actor.user_id``, ``method`` and ``credential_id``).
AUTH_STATE = "auth"
Identify = Callable[[Scope], Awaitable[str]]


@dataclass(frozen=True)
class Grant:
    """What the store handed out: ``tokens`` (0 = refused) and, when refused,
    ``retry_after`` seconds until one token will be there."""

    tokens: int
    retry_after: float = 0.0


@runtime_checkable
class BucketStore(Protocol):
    """Token buckets shared by every replica; each call is atomic for the store."""

    async def lease(self, key: str, want: int, rate: float, burst: int, refund: int = 0) -> Grant:
        """Put back ``refund`` unspent tokens, then take up to ``want`` tokens
        from the bucket of ``key`` (``rate`` per second, at most ``burst``)."""
        ...


class MemoryBucketStore:
    """Exact token buckets in one process: the engine of the shared Ray actor,
    and a store for a single process.

    Buckets that have refilled completely are indistinguishable from new
    ones and are forgotten (a little at every call); beyond ``max_keys`` the
    least recently used bucket goes too, so memory follows active clients.
    """

    # Float dust from time differences must not refuse a token that is due.
    _EPSILON = 1e-9

    def __init__(self, clock: Clock = time.monotonic, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key -> [tokens, last update, rate, burst]; ordered by last use.
        self._buckets: OrderedDict[str, tuple[float, float, float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def lease(self, key: str, want: int, rate: float, burst: int, refund: int = 0) -> Grant:
        """See :meth:`BucketStore.lease`."""
        return self.take(key, want, rate, burst, refund)

    def take(self, key: str, want: int, rate: float, burst: int, refund: int = 0) -> Grant:
        """The synchronous body of :meth:`lease`."""
        if want < 1 or refund < 0 or rate <= 0 or burst < 1:
            raise ValueError("want >= 1, refund >= 0, rate > 0 and burst >= 1 are required")
        now = self._clock()
        tokens, last, _, _ = self._buckets.pop(key, (float(burst), now, rate, burst))
        # A clock that steps back must not mint tokens.
        tokens = min(float(burst), tokens + max(0.0, now - last) * rate + refund)
        last = max(last, now)
        granted = min(want, int(tokens + self._EPSILON))
        if granted > 0:
            tokens = max(0.0, tokens - granted)
            grant = Grant(granted)
        else:
            grant = Grant(0, _round_up_to_microsecond((1.0 - tokens) / rate))
        self._buckets[key] = (tokens, last, rate, burst)
        self._forget_full_buckets(now)
        return grant

    def _forget_full_buckets(self, now: float) -> None:
        # At most two of the least recently used per call: O(1) amortised.
        for _ in range(2):
            if not self._buckets:
                return
            key, (tokens, last, rate, burst) = next(iter(self._buckets.items()))
            if tokens + max(0.0, now - last) * rate >= burst or len(self._buckets) > self._max_keys:
                del self._buckets[key]
            else:
                return


def _round_up_to_microsecond(seconds: float) -> float:
    # Waiting exactly retry_after must always be enough.
    return math.ceil(seconds * 1e6) / 1e6 + 1e-6


@dataclass
class _Lease:
    tokens: int = 0
    expires: float = 0.0
    refused_until: float = 0.0
    pending: asyncio.Future[None] | None = None


class TokenLeases:
    """One replica's view of the shared buckets: leased tokens spent locally.

    :meth:`acquire` answers from the local lease when it can and calls the
    store when the lease is spent or expired; concurrent requests of one
    client share a single store call. See the module docstring for the
    precision this buys and costs.
    """

    def __init__(
        self,
        store: BucketStore,
        *,
        lease: int = 10,
        max_lease_s: float = 1.0,
        store_timeout_s: float = 1.0,
        fallback_s: float = 5.0,
        clock: Clock = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        """``lease`` is the most tokens taken per store call (also capped at
        ``burst // 4``); ``clock`` must be monotonic."""
        if lease < 1 or max_lease_s <= 0 or store_timeout_s <= 0 or fallback_s < 0:
            raise ValueError("lease >= 1 and positive durations are required")
        self._store = store
        self._lease = lease
        self._max_lease_s = max_lease_s
        self._store_timeout_s = store_timeout_s
        self._fallback_s = fallback_s
        self._clock = clock
        self._max_keys = max_keys
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._local = MemoryBucketStore(clock, max_keys=max_keys)
        self._store_down_until = 0.0
        self.store_calls = 0
        self.store_failures = 0

    def __len__(self) -> int:
        return len(self._leases)

    def lease_size(self, rule: RateLimitRule) -> int:
        """Tokens asked for per store call under ``rule``."""
        return max(1, min(self._lease, rule.burst // 4))

    async def acquire(self, key: str, rule: RateLimitRule) -> float:
        """Spend one token of ``key``'s bucket: 0.0 when allowed, else the
        seconds until a token will be there."""
        while True:
            entry = self._entry(key)
            now = self._clock()
            if entry.tokens > 0 and now < entry.expires:
                entry.tokens -= 1
                return 0.0
            if now < entry.refused_until:
                return entry.refused_until - now
            if entry.pending is not None:
                # Someone is asking the store for this key right now; their
                # lease is ours to share. shield: our cancellation must not
                # cancel the future the other waiters wait on.
                await asyncio.shield(entry.pending)
                continue
            return await self._renew(key, entry, rule)

    async def _renew(self, key: str, entry: _Lease, rule: RateLimitRule) -> float:
        refund, entry.tokens = entry.tokens, 0
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry.pending = done
        try:
            grant = await self._take(key, rule, refund)
        finally:
            entry.pending = None
            done.set_result(None)
        now = self._clock()
        if grant.tokens == 0:
            entry.refused_until = now + grant.retry_after
            return grant.retry_after
        entry.tokens = grant.tokens - 1
        # Expiry does not bound the overshoot (one lease per replica does, see
        # the module doc); it stops tokens idling here while the client's
        # other requests land on other replicas.
        entry.expires = now + self._max_lease_s
        return 0.0

    async def _take(self, key: str, rule: RateLimitRule, refund: int) -> Grant:
        want = self.lease_size(rule)
        if self._clock() < self._store_down_until:
            return self._local.take(key, want, rule.rate, rule.burst)
        self.store_calls += 1
        try:
            async with asyncio.timeout(self._store_timeout_s):
                return await self._store.lease(key, want, rule.rate, rule.burst, refund)
        except Exception as exc:
            # Limits are protection, not the service: keep serving, each
            # replica on its own, and try the store again a little later.
            self.store_failures += 1
            self._store_down_until = self._clock() + self._fallback_s
            logger.warning(
                "rate-limit store unavailable (%s); limiting per replica for %.0f s",
                type(exc).__name__,
                self._fallback_s,
            )
            return self._local.take(key, want, rule.rate, rule.burst)

    def _entry(self, key: str) -> _Lease:
        entry = self._leases.get(key)
        if entry is None:
            entry = self._leases[key] = _Lease()
            self._forget_idle()
        else:
            self._leases.move_to_end(key)
        return entry

    def _forget_idle(self) -> None:
        # A key whose lease is spent or expired and whose refusal is over
        # carries nothing worth keeping. (Unspent expired tokens are dropped
        # with it: under-admission, never over-admission.)
        now = self._clock()
        for _ in range(2):
            if len(self._leases) <= 1:
                return
            key, entry = next(iter(self._leases.items()))
            idle = entry.pending is None and now >= entry.expires and now >= entry.refused_until
            if idle or len(self._leases) > self._max_keys:
                del self._leases[key]
            else:
                return


def client_identity(scope: Scope, trusted_proxies: Iterable[Network] = ()) -> str:
    """Who a request counts against: ``user:<id>``, ``apikey:<id>`` or ``ip:<address>``.

    Users and API keys come from ``scope["state"]["auth"]``, which the auth
    layer sets only *after verifying* the credential — never from the raw
    credential: a forged token must not choose whose bucket it spends. An
    API key acting for a user counts as that user. Anything else counts
    against the address: the peer, or — when the peer is a trusted proxy —
    the nearest X-Forwarded-For entry not added by a trusted proxy. An IPv6
    client controls its whole /64, so that is one address here.
    """
    auth = (scope.get("state") or {}).get(AUTH_STATE)
    if auth is not None:
        user_id = getattr(getattr(auth, "actor", None), "user_id", None)
        if user_id:
            return f"user:{user_id}"
        key_id = getattr(auth, "credential_id", None)
        if key_id and getattr(auth, "method", None) == "api_key":
            return f"apikey:{key_id}"
    return "ip:" + _client_address(scope, tuple(trusted_proxies))


class FailedVerifications:
    """Per address, how many bad credentials it may still have verified (a token bucket).

    Verifying a credential costs a signature check or a database lookup (an API
    key) *before* the request is counted. An address that keeps sending bad ones
    (``burst``, refilled at ``rate`` per second) has its credentials counted against
    its address unverified, so a flood of made-up keys costs buckets, not lookups.
    Kept per replica, in memory, for at most ``max_addresses``.
    """

    def __init__(
        self,
        *,
        burst: float = 20.0,
        rate: float = 1.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, address: str) -> float:
        level, at = self._buckets.get(address, (self.burst, self._clock()))
        return min(self.burst, level + (self._clock() - at) * self.rate)

    def may_verify(self, address: str) -> bool:
        """Whether ``address`` has bad-credential allowance left."""
        return self._level(address) >= 1.0

    def failed(self, address: str) -> None:
        """A credential from ``address`` did not verify."""
        self._buckets[address] = (self._level(address) - 1.0, self._clock())
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)


def verified_identity(
    verify: Callable[[Request], Awaitable[None]],
    trusted_proxies: Iterable[str] = (),
    failures: FailedVerifications | None = None,
) -> Identify:
    """An ``identify`` for :class:`RateLimit` that verifies the caller itself.

    ``verify(request)`` checks the request's credential and, if it is good,
    leaves the :class:`Authentication`-like result in ``request.state.auth``
    (e.g. :meth:`objectos.api.auth.HubAuthenticator.remember`); it must not
    raise for a bad one. Then :func:`client_identity` decides: a verified
    principal has its own bucket, anything else counts against its address.
    A request without credential headers costs no verification, nor does one
    from an address that sent too many bad credentials lately (``failures``).
    """
    trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
    failures = failures if failures is not None else FailedVerifications()

    async def identify(scope: Scope) -> str:
        for name, _ in scope.get("headers") or ():
            if name in (b"authorization", b"x-api-key"):
                address = _client_address(scope, trusted)
                if failures.may_verify(address):
                    await verify(Request(scope))
                    if (scope.get("state") or {}).get(AUTH_STATE) is None:
                        failures.failed(address)
                break
        return client_identity(scope, trusted)

    return identify


def _client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    address = _parse_ip(peer)
    if trusted and address is not None and _is_trusted(address, trusted):
        hops: list[str] = []
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                hops.extend(h.strip() for h in value.decode("latin-1").split(","))
        # Walk from the nearest hop back while the hop we came from is trusted.
        for hop in reversed(hops):
            parsed = _parse_ip(hop)
            if parsed is None:
                break  # garbage: stop at the last address we could believe
            address = parsed
            if not _is_trusted(parsed, trusted):
                break
    if address is None:
        return peer
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]
) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


class RateLimit:
    """ASGI middleware: refuse a client's request with 429 once its bucket is empty.

    Place it after the request-id middleware (so a 429 carries the request
    id) and after any middleware that authenticates (so the user is known:
    :func:`client_identity`). When authentication happens later, in the
    route handlers, pass ``identify`` to verify the caller here instead.
    Only HTTP requests are limited; ``settings.exempt`` prefixes never are.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: RateLimitSettings,
        store: BucketStore | None = None,
        *,
        leases: TokenLeases | None = None,
        identify: Identify | None = None,
    ) -> None:
        """``store`` is shared by the replicas (default: this process only);
        ``leases`` replaces the default :class:`TokenLeases` over ``store``;
        ``identify(scope)`` replaces :func:`client_identity` and must only
        name a user or key it has verified."""
        self.app = app
        self.settings = settings
        self.identify = identify
        self.leases = leases or TokenLeases(store or MemoryBucketStore(), lease=settings.lease)
        self._trusted = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.trustedProxies
        )
        # Longest prefix first, so the most specific family wins.
        self._families = sorted(settings.routes.items(), key=lambda item: -len(item[0]))

    def family(self, path: str) -> tuple[str, RateLimitRule] | None:
        """The route family and rule of ``path``; None when it is exempt."""
        if any(_under(path, prefix) for prefix in self.settings.exempt):
            return None
        for prefix, rule in self._families:
            if _under(path, prefix):
                return prefix, rule
        return "default", self.settings.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.settings.enabled:
            await self.app(scope, receive, send)
            return
        family = self.family(_route_path(scope))
        if family is None:
            await self.app(scope, receive, send)
            return
        name, rule = family
        if self.identify is not None:
            who = await self.identify(scope)
        else:
            who = client_identity(scope, self._trusted)
        key = f"{who}@{name}"
        wait = await self.leases.acquire(key, rule)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        exc = RateLimitExceeded(
            "too many requests; slow down and retry after the Retry-After delay",
            details={"retryAfter": math.ceil(wait), "family": name},
        )
        request_id = (scope.get("state") or {}).get("request_id")
        status, body, headers = failure(exc, request_id=request_id)
        await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


def _route_path(scope: Scope) -> str:
    # Mounted under a prefix (a Serve route_prefix), the app sees the full
    # path in "path" and the prefix in "root_path"; families are app paths.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


__all__ = [
    "AUTH_STATE",
    "BucketStore",
    "FailedVerifications",
    "Grant",
    "Identify",
    "MemoryBucketStore",
    "RateLimit",
    "TokenLeases",
    "client_identity",
    "verified_identity",
]
