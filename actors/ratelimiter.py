"""The rate-limit bucket store shared by every HTTP replica: one named Ray actor.

:class:`RateLimiterActor` holds exact token buckets
(:class:`~objectos.api.ratelimit.MemoryBucketStore`) in one process, so every
replica spends from the same bucket. Replicas reach it through
:class:`RayBucketStore`, which leases tokens in batches (see
``objectos.api.ratelimit``), so it sees one call per batch, not per request.

The actor is detached and restarted by Ray. A restart forgets the buckets
(every client starts with a full burst again); while it is down, replicas
limit on their own (``TokenLeases`` fallback). Both trade precision for an
API that stays up, which is the right way round for a limiter.
"""

from __future__ import annotations

from typing import Any

from ray.exceptions import RayError

from actors.factory import get_or_create_rate_limiter
from objectos.api.ratelimit import Grant, MemoryBucketStore


class RateLimiterActor:
    """Token buckets keyed by ``<client>@<route family>``.

    Methods are synchronous: Ray runs them one at a time, which is what makes
    each lease atomic, and a lease is a few microseconds of arithmetic.
    """

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.store = MemoryBucketStore(max_keys=max_keys)
        self.leases = 0

    def lease(
        self, key: str, want: int, rate: float, burst: int, refund: int = 0
    ) -> tuple[int, float]:
        """``(tokens, retry_after)``: see :meth:`objectos.api.ratelimit.BucketStore.lease`."""
        self.leases += 1
        grant = self.store.take(key, want, rate, burst, refund)
        return grant.tokens, grant.retry_after

    def stats(self) -> dict[str, int]:
        """How many buckets are live and how many leases were served."""
        return {"buckets": len(self.store), "leases": self.leases}


class RayBucketStore:
    """A :class:`~objectos.api.ratelimit.BucketStore` over the ``ratelimiter`` actor.

    Construction finds or creates the actor without waiting for it, so it
    boots while the replica starts instead of during the first request
    (creating an actor takes 0.5-2 s on a busy machine; a first lease slower
    than the replica's store timeout would put it on its own limits for a
    while). After an actor error the handle is looked up again.
    """

    def __init__(self) -> None:
        self._actor: Any = None
        try:
            self._actor = get_or_create_rate_limiter()
        except Exception:
            self._actor = None  # no Ray here (yet): the first lease tries again

    async def lease(self, key: str, want: int, rate: float, burst: int, refund: int = 0) -> Grant:
        """Lease up to ``want`` tokens of ``key``'s bucket from the shared actor."""
        if self._actor is None:
            self._actor = get_or_create_rate_limiter()
        try:
            tokens, retry_after = await self._actor.lease.remote(key, want, rate, burst, refund)
        except RayError:
            self._actor = None
            raise
        return Grant(tokens, retry_after)
