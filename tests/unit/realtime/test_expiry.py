"""Sessions end when their token does (SessionExpiry), and expired tokens are refused."""

from __future__ import annotations

import asyncio
import time

import pytest

from objectos.errors import ExpiredToken
from objectos.realtime.expiry import SessionExpiry, check_not_expired, expired_payload


async def test_sessions_end_at_their_expiry_and_forgotten_ones_do_not() -> None:
    ended: list[tuple[str, str, float]] = []

    async def end(namespace: str, sid: str) -> None:
        ended.append((namespace, sid, time.time()))

    expiry = SessionExpiry(end)
    now = time.time()
    expiry.watch("/realtime", "a", now + 0.2)
    expiry.watch("/realtime", "b", now + 0.2)
    expiry.watch("/yjs|doc", "c", None)  # never expires: no timer
    expiry.watch("/realtime", "d", now - 5)  # already expired: ended at once
    expiry.forget("/realtime", "b")  # disconnected first
    assert expiry.watched == 2
    await asyncio.sleep(0.4)
    assert [(ns, sid) for ns, sid, _ in ended] == [("/realtime", "d"), ("/realtime", "a")]
    assert ended[1][2] >= now + 0.2
    assert expiry.watched == 0 and expiry.ended == 2


async def test_a_failing_end_is_logged_and_close_cancels_timers() -> None:
    async def broken(namespace: str, sid: str) -> None:
        raise RuntimeError("socket gone")

    expiry = SessionExpiry(broken)
    expiry.watch("/realtime", "x", time.time())
    expiry.watch("/realtime", "later", time.time() + 60)
    await asyncio.sleep(0.05)
    assert expiry.ended == 1
    await expiry.close()
    assert expiry.watched == 0


def test_expired_tokens_are_refused_and_reported_with_their_code() -> None:
    check_not_expired(None)
    check_not_expired(time.time() + 10)
    with pytest.raises(ExpiredToken):
        check_not_expired(time.time() - 1)
    payload = expired_payload("sync-update")
    assert payload["code"] == "expired_token" and payload["event"] == "sync-update"
