"""Slowing down guessing: sign-in lockouts and a generic token bucket.

:class:`SignInThrottle` counts failed sign-ins per account and per client IP in
a sliding window. ``max_failures`` failures inside ``window_s`` lock the
account (or IP) for ``lockout_s``; every further lockout while the previous
one is remembered doubles, up to ``max_lockout_s``. Per account stops a
distributed guesser aiming at one person; per IP (with a higher limit, since
offices and carrier NAT share addresses) stops one client spraying many
accounts. A success clears the account's failures but not the IP's —
otherwise an attacker holding any one valid account could reset the IP
counter between guesses. Failures count for account names that do not
exist too, so a lockout says nothing about whether an account exists.

Counts live behind :class:`CounterStore` so replicas can share them later
(Redis sorted sets, a SQL table or a Ray actor); :class:`InMemoryCounterStore`
serves a single process.

:class:`TokenBucket` is the classic rate limiter for REST endpoints: ``rate``
tokens per second refill a bucket of ``burst``; it is O(1) per call and forgets
idle keys on its own.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from objectos.errors import RateLimitExceeded

Clock = Callable[[], float]


@dataclass(frozen=True)
class Lockout:
    """A key is locked from ``started_at`` until ``until``.

    ``level`` counts consecutive lockouts (1, 2, ...); each doubles the last.
    """

    started_at: float
    until: float
    level: int


@runtime_checkable
class CounterStore(Protocol):
    """Failure events and lockouts per key, shareable across replicas.

    Each method is one atomic step for the store (one Redis MULTI, one SQL
    statement), so two replicas counting at once never lose a failure.
    """

    async def add_event(self, key: str, at: float, since: float, keep: int) -> int:
        """Record an event at ``at``, forget events at or before ``since`` and
        return how many events remain in ``(since, at]``. A store may forget
        all but the newest ``keep`` events (the caller never needs more)."""
        ...

    async def get_lockout(self, key: str, now: float) -> Lockout | None:
        """The lockout remembered for ``key`` at ``now`` (possibly over already), if any."""
        ...

    async def set_lockout(self, key: str, lockout: Lockout, forget_at: float) -> None:
        """Remember ``lockout`` for ``key`` until ``forget_at``."""
        ...

    async def reset(self, key: str) -> None:
        """Forget the events and the lockout of ``key``."""
        ...


@dataclass
class _Entry:
    events: deque[float] = field(default_factory=deque)
    lockout: Lockout | None = None
    forget_lockout_at: float = 0.0


class InMemoryCounterStore:
    """A :class:`CounterStore` in one process's memory, bounded to ``max_keys``.

    Beyond ``max_keys`` the least recently touched key is forgotten, so a
    spray of random account names or addresses cannot exhaust memory; the
    price is that such a spray can make the store forget older counts.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_keys = max_keys

    def __len__(self) -> int:
        return len(self._entries)

    async def add_event(self, key: str, at: float, since: float, keep: int) -> int:
        entry = self._touch(key)
        events = entry.events
        events.append(at)
        while events and (events[0] <= since or len(events) > keep):
            events.popleft()
        return len(events)

    async def get_lockout(self, key: str, now: float) -> Lockout | None:
        entry = self._entries.get(key)
        if entry is None or entry.lockout is None or now >= entry.forget_lockout_at:
            return None
        return entry.lockout

    async def set_lockout(self, key: str, lockout: Lockout, forget_at: float) -> None:
        entry = self._touch(key)
        entry.lockout = lockout
        entry.forget_lockout_at = forget_at

    async def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def _touch(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry


class SignInThrottle:
    """Locks accounts and client IPs out after repeated failed sign-ins.

    The sign-in route calls :meth:`check` before looking at the password,
    then :meth:`record_failure` or :meth:`record_success`.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 900.0,
        lockout_s: float = 60.0,
        clock: Clock = time.time,
        *,
        max_lockout_s: float = 3600.0,
        ip_max_failures: int | None = None,
        store: CounterStore | None = None,
    ) -> None:
        """``ip_max_failures`` defaults to 4 x ``max_failures``.

        ``clock`` is wall time (not monotonic) because a shared store compares
        times written by different processes.
        """
        if ip_max_failures is not None and ip_max_failures < 1:
            raise ValueError("ip_max_failures must be at least 1")
        if max_failures < 1 or window_s <= 0 or lockout_s <= 0 or max_lockout_s < lockout_s:
            raise ValueError("throttle limits must be positive and max_lockout_s >= lockout_s")
        self._max_failures = max_failures
        self._ip_max_failures = 4 * max_failures if ip_max_failures is None else ip_max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._max_lockout_s = max_lockout_s
        self._clock = clock
        self._store: CounterStore = InMemoryCounterStore() if store is None else store

    async def check(self, account: str, ip: str | None = None) -> None:
        """Raise RateLimitExceeded (``details.retryAfter``, whole seconds) while locked out."""
        now = self._clock()
        wait = 0.0
        for key, _limit in self._scopes(account, ip):
            lockout = await self._store.get_lockout(key, now)
            if lockout is not None and lockout.until > now:
                wait = max(wait, lockout.until - now)
        if wait > 0:
            raise RateLimitExceeded(
                "too many failed sign-in attempts; try again later",
                details={"retryAfter": math.ceil(wait)},
            )

    async def record_failure(self, account: str, ip: str | None = None) -> Lockout | None:
        """Count a failed sign-in; returns the lockout it started, if it started one."""
        now = self._clock()
        started: Lockout | None = None
        for key, limit in self._scopes(account, ip):
            previous = await self._store.get_lockout(key, now)
            # Failures up to the previous lockout were punished by it; each
            # lockout starts a fresh count.
            since = now - self._window_s
            if previous is not None:
                since = max(since, previous.started_at)
            failures = await self._store.add_event(key, now, since, keep=limit)
            if failures < limit:
                continue
            level = previous.level + 1 if previous is not None else 1
            duration = min(self._lockout_s * 2 ** (level - 1), self._max_lockout_s)
            lockout = Lockout(started_at=now, until=now + duration, level=level)
            # Remembered a while after it ends, so a quick relapse escalates.
            await self._store.set_lockout(
                key, lockout, forget_at=lockout.until + self._max_lockout_s
            )
            if started is None or lockout.until > started.until:
                started = lockout
        return started

    async def record_success(self, account: str, ip: str | None = None) -> None:
        """Clear the account's failures and lockout history; the IP's are kept (see module doc)."""
        del ip  # accepted so routes can pass the same arguments to all three methods
        await self._store.reset(self._account_key(account))

    def _scopes(self, account: str, ip: str | None) -> list[tuple[str, int]]:
        scopes = [(self._account_key(account), self._max_failures)]
        if ip:
            scopes.append((_ip_key(ip), self._ip_max_failures))
        return scopes

    @staticmethod
    def _account_key(account: str) -> str:
        # Sign-in looks accounts up case-insensitively; counting "Ada" and
        # "ada" apart would multiply an attacker's guesses.
        return "account:" + account.strip().casefold()


def _ip_key(ip: str) -> str:
    """An IPv6 client controls its whole /64, so it is counted as one address."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return "ip:" + ip.strip()
    if address.version == 6:
        return "ip:" + str(ipaddress.IPv6Network((address, 64), strict=False))
    return "ip:" + str(address)


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens per second, at most ``burst`` saved up.

    Not thread-safe; one per event loop. Buckets that have refilled
    completely are indistinguishable from new ones, so they are dropped
    (a little at every call), keeping memory proportional to active keys.
    """

    # Time differences in floats leave dust: a bucket refilled for exactly
    # the advertised retry_after must not come up a hair short.
    _EPSILON = 1e-9

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Clock = time.monotonic,
        *,
        max_keys: int = 100_000,
    ) -> None:
        """``rate`` in tokens per second; ``burst`` is also how many a new key starts with."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, time of last update); ordered by last use.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def try_acquire(self, key: str, n: float = 1) -> tuple[bool, float]:
        """Take ``n`` tokens if there are enough: ``(True, 0.0)``; else
        ``(False, seconds until there will be)``. Nothing is taken on refusal."""
        if n <= 0 or n > self._burst:
            raise ValueError(f"n must be in (0, burst={self._burst}]")
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        # A clock that steps back must not mint tokens: neither now (no
        # negative elapsed time) nor later (the reference time never moves back).
        tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        last = max(last, now)
        if tokens + self._EPSILON >= n:
            self._buckets[key] = (max(0.0, tokens - n), last)
            allowed, retry_after = True, 0.0
        else:
            self._buckets[key] = (tokens, last)
            allowed, retry_after = False, _round_up_to_microsecond((n - tokens) / self._rate)
        self._forget_full_buckets(now)
        return allowed, retry_after

    def _forget_full_buckets(self, now: float) -> None:
        # Look at no more than two of the least recently used buckets per
        # call: each bucket is added once and dropped once, so this stays
        # O(1) amortised while idle keys still disappear.
        for _ in range(2):
            if not self._buckets:
                return
            oldest_key, (tokens, last) = next(iter(self._buckets.items()))
            refilled = tokens + max(0.0, now - last) * self._rate >= self._burst
            if refilled or len(self._buckets) > self._max_keys:
                del self._buckets[oldest_key]
            else:
                return


def _round_up_to_microsecond(seconds: float) -> float:
    # An epoch timestamp (~1.7e9) as a float is only exact to ~0.24 us, so
    # "now + retry_after - last" can come out shorter than retry_after. One
    # extra microsecond makes waiting exactly retry_after always enough.
    return math.ceil(seconds * 1e6) / 1e6 + 1e-6


__all__ = [
    "CounterStore",
    "InMemoryCounterStore",
    "Lockout",
    "SignInThrottle",
    "TokenBucket",
]
