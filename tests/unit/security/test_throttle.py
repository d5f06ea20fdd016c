"""Sign-in lockouts (per account, per IP, escalating) and token-bucket arithmetic."""

from __future__ import annotations

import pytest

from objectos.errors import RateLimitExceeded
from objectos.security.throttle import InMemoryCounterStore, Lockout, SignInThrottle, TokenBucket

from .conftest import ManualClock


@pytest.fixture
def throttle(clock: ManualClock) -> SignInThrottle:
    return SignInThrottle(
        max_failures=3, window_s=600, lockout_s=60, clock=clock, max_lockout_s=300
    )


async def retry_after(throttle: SignInThrottle, account: str, ip: str | None = None) -> int:
    with pytest.raises(RateLimitExceeded) as caught:
        await throttle.check(account, ip)
    assert caught.value.status == 429
    return int(caught.value.details["retryAfter"])


async def fail(throttle: SignInThrottle, account: str, ip: str | None, times: int) -> None:
    for _ in range(times):
        await throttle.record_failure(account, ip)


async def test_failures_below_the_limit_do_not_lock(throttle: SignInThrottle) -> None:
    await fail(throttle, "ada", "10.0.0.1", 2)
    await throttle.check("ada", "10.0.0.1")


async def test_the_limit_locks_the_account_for_lockout_s(
    throttle: SignInThrottle, clock: ManualClock
) -> None:
    await fail(throttle, "ada", "10.0.0.1", 2)
    started = await throttle.record_failure("ada", "10.0.0.1")
    assert started == Lockout(started_at=clock.now, until=clock.now + 60, level=1)

    assert await retry_after(throttle, "ada", "10.0.0.2") == 60  # any IP
    clock.advance(59.5)
    assert await retry_after(throttle, "ada") == 1  # rounded up, never 0
    clock.advance(0.5)
    await throttle.check("ada")
    await throttle.check("grace", "10.0.0.1")  # the IP is under its own limit


async def test_the_window_slides(throttle: SignInThrottle, clock: ManualClock) -> None:
    await fail(throttle, "ada", None, 2)
    clock.advance(600)  # those two fall out of the window
    await fail(throttle, "ada", None, 2)
    await throttle.check("ada")
    clock.advance(1)
    await throttle.record_failure("ada", None)
    assert await retry_after(throttle, "ada") == 60


async def test_repeated_lockouts_double_up_to_the_maximum(
    throttle: SignInThrottle, clock: ManualClock
) -> None:
    expected = [60, 120, 240, 300, 300]
    for seconds in expected:
        await fail(throttle, "ada", None, 3)
        assert await retry_after(throttle, "ada") == seconds
        clock.advance(seconds)
        await throttle.check("ada")


async def test_escalation_is_forgotten_after_a_quiet_period(
    throttle: SignInThrottle, clock: ManualClock
) -> None:
    await fail(throttle, "ada", None, 3)
    clock.advance(60 + 300)  # lockout over, then max_lockout_s of good behaviour
    await fail(throttle, "ada", None, 3)
    assert await retry_after(throttle, "ada") == 60


async def test_success_resets_the_account_but_not_the_ip(
    clock: ManualClock,
) -> None:
    throttle = SignInThrottle(max_failures=3, ip_max_failures=4, lockout_s=60, clock=clock)
    await fail(throttle, "ada", "10.0.0.1", 2)
    await throttle.record_success("ada", "10.0.0.1")
    await fail(throttle, "ada", "10.0.0.1", 1)
    await throttle.check("ada")  # 1 failure since the success, not 3

    # ... but the IP has seen 3 failures, and one more locks it for everyone.
    await throttle.record_failure("bob", "10.0.0.1")
    assert await retry_after(throttle, "carol", "10.0.0.1") == 60
    await throttle.check("carol", "10.0.0.2")


async def test_one_ip_spraying_many_accounts_is_locked(clock: ManualClock) -> None:
    throttle = SignInThrottle(max_failures=5, lockout_s=30, clock=clock)  # ip limit 20
    for index in range(19):
        await throttle.record_failure(f"user{index}", "203.0.113.9")
    await throttle.check("user99", "203.0.113.9")
    await throttle.record_failure("user19", "203.0.113.9")
    assert await retry_after(throttle, "user99", "203.0.113.9") == 30


async def test_account_names_differing_in_case_count_together(throttle: SignInThrottle) -> None:
    await throttle.record_failure("Ada@Example.test", None)
    await throttle.record_failure("ada@example.test ", None)
    await throttle.record_failure("ADA@EXAMPLE.TEST", None)
    assert await retry_after(throttle, "ada@example.test") == 60


async def test_one_ipv6_64_counts_as_one_address(clock: ManualClock) -> None:
    throttle = SignInThrottle(max_failures=1, ip_max_failures=2, lockout_s=10, clock=clock)
    await throttle.record_failure("a", "2001:db8:1:2::1")
    await throttle.record_failure("b", "2001:db8:1:2:ffff::9")
    assert await retry_after(throttle, "c", "2001:db8:1:2::77") == 10
    await throttle.check("c", "2001:db8:1:3::1")  # another /64


async def test_the_in_memory_store_stays_bounded() -> None:
    store = InMemoryCounterStore(max_keys=100)
    for index in range(1000):
        await store.add_event(f"ip:{index}", at=1.0, since=0.0, keep=5)
    assert len(store) == 100
    # The most recent keys survive.
    assert await store.add_event("ip:999", at=2.0, since=0.0, keep=5) == 2


def test_invalid_limits_are_refused(clock: ManualClock) -> None:
    with pytest.raises(ValueError):
        SignInThrottle(max_failures=0, clock=clock)
    with pytest.raises(ValueError):
        SignInThrottle(lockout_s=600, max_lockout_s=60, clock=clock)


# --- TokenBucket -------------------------------------------------------------


def test_a_new_key_gets_the_full_burst_then_waits_for_refill(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=2, burst=5, clock=clock)
    assert [bucket.try_acquire("k") for _ in range(5)] == [(True, 0.0)] * 5
    allowed, retry = bucket.try_acquire("k")
    assert not allowed and retry == pytest.approx(0.5, abs=1e-5)

    clock.advance(0.25)
    allowed, retry = bucket.try_acquire("k")
    assert not allowed and retry == pytest.approx(0.25, abs=1e-5)  # the refusal took nothing

    clock.advance(0.25)
    assert bucket.try_acquire("k") == (True, 0.0)


def test_waiting_exactly_retry_after_is_enough(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=3, burst=1, clock=clock)
    for _ in range(50):
        assert bucket.try_acquire("k")[0]
        allowed, retry = bucket.try_acquire("k")
        assert not allowed
        clock.advance(retry)


def test_refill_is_capped_at_burst(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    bucket.try_acquire("k", 3)
    clock.advance(3600)
    assert bucket.try_acquire("k", 3) == (True, 0.0)
    assert bucket.try_acquire("k")[0] is False


def test_acquiring_several_tokens_at_once(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=1, burst=10, clock=clock)
    assert bucket.try_acquire("k", 7) == (True, 0.0)
    allowed, retry = bucket.try_acquire("k", 5)
    assert not allowed and retry == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError):
        bucket.try_acquire("k", 11)  # could never succeed
    with pytest.raises(ValueError):
        bucket.try_acquire("k", 0)


def test_keys_are_independent(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.try_acquire("alice")[0]
    assert not bucket.try_acquire("alice")[0]
    assert bucket.try_acquire("bob")[0]


def test_a_clock_stepping_back_mints_no_tokens(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    bucket.try_acquire("k")
    clock.advance(-100)
    assert not bucket.try_acquire("k")[0]
    clock.advance(100)  # back where it was: still no time has passed for the bucket
    assert not bucket.try_acquire("k")[0]
    clock.advance(1)
    assert bucket.try_acquire("k")[0]


def test_idle_buckets_are_forgotten(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=1, burst=2, clock=clock)
    for index in range(1000):
        bucket.try_acquire(f"client-{index}")
    assert len(bucket) == 1000
    clock.advance(2)  # every bucket has refilled completely
    for _ in range(600):
        bucket.try_acquire("busy")
        clock.advance(0.001)
    assert len(bucket) < 10


def test_the_bucket_map_is_capped(clock: ManualClock) -> None:
    bucket = TokenBucket(rate=1, burst=1, clock=clock, max_keys=50)
    for index in range(500):
        bucket.try_acquire(f"client-{index}")
    assert len(bucket) <= 51


async def test_a_shared_store_is_used_even_while_empty(clock: ManualClock) -> None:
    # Two replicas sharing one store see each other's failures.
    shared = InMemoryCounterStore()
    replica_a = SignInThrottle(max_failures=2, lockout_s=60, clock=clock, store=shared)
    replica_b = SignInThrottle(max_failures=2, lockout_s=60, clock=clock, store=shared)
    await replica_a.record_failure("ada", None)
    await replica_b.record_failure("ada", None)
    assert await retry_after(replica_a, "ada") == 60
