"""Password hashing with argon2id.

The sign-in route does, in this order::

    throttle.check(account, ip)
    user = await users.find(account)
    if user is None:
        hasher.dummy_verify(password)          # same cost as a real check
        raise Unauthenticated("invalid credentials")
    ok, new_hash = hasher.verify_and_update(user.password_hash, password)

``dummy_verify`` exists so that "no such account" costs as much time as "wrong
password": without it the response time tells an attacker which accounts
exist. Hashing costs tens of milliseconds of CPU by design; callers inside an
event loop run these methods in a worker thread (``asyncio.to_thread``) — the
argon2 C code releases the GIL, so threads really run in parallel.
"""

from __future__ import annotations

import logging
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

logger = logging.getLogger(__name__)


class PasswordHasher:
    """Hashes and checks passwords with argon2id.

    The defaults are argon2-cffi's, which follow RFC 9106's low-memory profile
    (3 passes over 64 MiB, 4 lanes). Raising any of them later makes
    :meth:`needs_rehash` true for older hashes, so they are upgraded on the
    user's next successful sign-in.
    """

    def __init__(
        self,
        *,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_cost_kib: int = argon2.DEFAULT_MEMORY_COST,
        parallelism: int = argon2.DEFAULT_PARALLELISM,
    ) -> None:
        """Configure the argon2id cost; ``memory_cost_kib`` is in KiB."""
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        # Made with the *current* parameters, so a dummy check costs exactly
        # what checking a freshly hashed password costs. Made here rather than
        # on first use so that first use is not twice as slow (a timing tell).
        self._dummy_hash = self.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        """A PHC-format argon2id hash with a fresh random salt."""
        return self._argon2.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``.

        A malformed stored hash is reported as a mismatch (sign-in must fail
        closed) and logged, because it means the user table is damaged.
        """
        try:
            return self._argon2.verify(stored_hash, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError):
            logger.error("stored password hash is not a valid argon2 hash; refusing sign-in")
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` was made with other parameters than the current ones."""
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True

    def verify_and_update(self, stored_hash: str, password: str) -> tuple[bool, str | None]:
        """Check a password and, when it matches an outdated hash, rehash it.

        Returns ``(ok, new_hash)``; ``new_hash`` is set only when the caller
        should store it. This is the only moment the plaintext is available to
        upgrade a hash, so sign-in is where upgrades happen.
        """
        if not self.verify(stored_hash, password):
            return False, None
        if self.needs_rehash(stored_hash):
            return True, self.hash(password)
        return True, None

    def dummy_verify(self, password: str = "") -> bool:
        """Spend the time of a real check and fail; for accounts that do not exist.

        Always returns False, so it can stand in for :meth:`verify` directly.
        """
        self.verify(self._dummy_hash, password)
        return False


__all__ = ["PasswordHasher"]
