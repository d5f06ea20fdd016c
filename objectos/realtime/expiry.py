"""Sessions that end when their credential does.

A Socket.IO connection is authenticated once, at the handshake; a token that
expires later must still end the session. Both gateway namespaces (``/realtime``
and ``/yjs|<doc>``) hand every accepted connection's expiry to one
:class:`SessionExpiry`, which ends it on time::

    expiry = SessionExpiry(end_session)            # await end_session(namespace, sid)
    expiry.watch("/realtime", sid, expires_at)     # epoch seconds, or None: never
    expiry.forget("/realtime", sid)                # the connection closed first

``end_session`` is expected to tell the client why (an ``error`` event with
``expired_token``, see :func:`expired_payload`) and disconnect it; the client
reconnects with a fresh token, or is refused at connect with the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from objectos.errors import ExpiredToken

logger = logging.getLogger("objectos.realtime.expiry")

EndSession = Callable[[str, str], Awaitable[None]]
"""``await end_session(namespace, sid)``: tell the client and disconnect it."""


def expired_payload(event: str | None = None) -> dict[str, Any]:
    """The ``error`` event a client gets when its session ends with its token."""
    error = ExpiredToken("the session's token expired: connect again with a fresh one")
    payload = error.to_dict()
    if event is not None:
        payload["event"] = event
    return payload


def check_not_expired(expires_at: float | None, now: float | None = None) -> None:
    """Refuse (``ExpiredToken``) a credential past its expiry at connect.

    Token verification tolerates clock skew (a leeway); a session would be
    ended at once anyway, so connecting is refused instead of looping.
    """
    if expires_at is not None and expires_at <= (time.time() if now is None else now):
        raise ExpiredToken("the token has expired: connect again with a fresh one")


class SessionExpiry:
    """One timer per watched connection (see the module docstring)."""

    def __init__(self, end_session: EndSession, *, clock: Callable[[], float] = time.time) -> None:
        self._end_session = end_session
        self._clock = clock
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.ended = 0

    def watch(self, namespace: str, sid: str, expires_at: float | None) -> None:
        """End ``sid`` on ``namespace`` at ``expires_at`` (epoch seconds; None: never)."""
        self.forget(namespace, sid)
        if expires_at is None:
            return
        key = (namespace, sid)
        self._timers[key] = asyncio.get_running_loop().create_task(
            self._expire(key, expires_at), name=f"session-expiry-{sid}"
        )

    def forget(self, namespace: str, sid: str) -> None:
        """Stop watching (the connection closed)."""
        task = self._timers.pop((namespace, sid), None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    @property
    def watched(self) -> int:
        """How many connections have a timer."""
        return len(self._timers)

    async def close(self) -> None:
        """Cancel every timer."""
        tasks = list(self._timers.values())
        self._timers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _expire(self, key: tuple[str, str], expires_at: float) -> None:
        delay = expires_at - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        self._timers.pop(key, None)
        namespace, sid = key
        self.ended += 1
        logger.info("session %s on %s ended: its token expired", sid, namespace)
        try:
            await self._end_session(namespace, sid)
        except Exception as exc:  # the socket may be gone already
            logger.info("ending session %s on %s failed: %r", sid, namespace, exc)


__all__ = ["EndSession", "SessionExpiry", "check_not_expired", "expired_payload"]
