"""argon2id hashing: round trip, upgrades, and equal cost for unknown accounts."""

from __future__ import annotations

import statistics
import time

import argon2
import pytest

from objectos.security.passwords import PasswordHasher

# Cheap parameters keep the suite fast; the cost model is the same.
FAST = {"time_cost": 1, "memory_cost_kib": 1024, "parallelism": 1}


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(**FAST)


def test_hash_is_argon2id_with_a_fresh_salt(hasher: PasswordHasher) -> None:
    first, second = hasher.hash("correct horse"), hasher.hash("correct horse")
    assert first.startswith("$argon2id$")
    assert first != second  # salted
    assert "correct horse" not in first


def test_verify_accepts_the_password_and_rejects_others(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse")
    assert hasher.verify(stored, "correct horse") is True
    assert hasher.verify(stored, "correct horse ") is False
    assert hasher.verify(stored, "") is False


def test_a_damaged_stored_hash_fails_closed(hasher: PasswordHasher) -> None:
    assert hasher.verify("not-a-hash", "anything") is False
    assert hasher.verify("$argon2id$v=19$m=1024,t=1,p=1$broken", "anything") is False


def test_needs_rehash_when_parameters_grow(hasher: PasswordHasher) -> None:
    stored = hasher.hash("pw")
    assert hasher.needs_rehash(stored) is False
    stronger = PasswordHasher(time_cost=2, memory_cost_kib=2048, parallelism=1)
    assert stronger.needs_rehash(stored) is True
    assert stronger.needs_rehash("garbage") is True


def test_verify_and_update_upgrades_only_on_success(hasher: PasswordHasher) -> None:
    old = hasher.hash("pw")
    stronger = PasswordHasher(time_cost=2, memory_cost_kib=2048, parallelism=1)

    assert stronger.verify_and_update(old, "wrong") == (False, None)
    ok, new_hash = stronger.verify_and_update(old, "pw")
    assert ok and new_hash is not None
    assert argon2.extract_parameters(new_hash).time_cost == 2
    assert stronger.verify_and_update(new_hash, "pw") == (True, None)


def test_dummy_verify_fails_and_runs_argon2_with_current_parameters(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        checked.append(hash)
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    assert hasher.dummy_verify("whatever") is False
    assert len(checked) == 1
    # Same parameters as a freshly hashed password, hence the same cost.
    assert hasher.needs_rehash(checked[0]) is False


def test_unknown_account_costs_about_as_much_as_a_wrong_password() -> None:
    # Real-ish cost so timer noise is small relative to the work.
    hasher = PasswordHasher(time_cost=2, memory_cost_kib=16 * 1024, parallelism=1)
    stored = hasher.hash("pw")

    def median_seconds(check: object) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            check()  # type: ignore[operator]
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    wrong_password = median_seconds(lambda: hasher.verify(stored, "nope"))
    no_account = median_seconds(lambda: hasher.dummy_verify("nope"))
    assert 0.5 < no_account / wrong_password < 2.0
