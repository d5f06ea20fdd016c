"""Test doubles for the security tests: a hand-moved clock and ready-made services.

Everything here is real code of the hub (key files in ``tmp_path``, in-memory
stores); only time is faked, so no test sleeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from objectos.security.keys import FileKeyStore, KeyRing
from objectos.security.tokens import InMemoryRefreshTokenStore, TokenService

ISSUER = "https://hub.example.test"
AUDIENCE = "objectos"
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
