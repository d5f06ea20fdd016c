"""Non-write events: buffered off the request path, written in batches, durable on request."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.audit import AuditEvent, AuditQuery, AuditStore, SQLAuditSink, auth_event_recorder
from objectos.security.identity import AuthEvent

from .conftest import eventually


async def stored(store: AuditStore) -> list[AuditEvent]:
    return (await store.search(AuditQuery(limit=1000, order="asc"))).events


def denied(n: int = 0) -> AuditEvent:
    return AuditEvent.new(
        "permission.denied",
        actor="bob",
        object="account",
        record_id=f"a{n}",
        context={"ip": "203.0.113.7", "requestId": f"r{n}"},
        details={"code": "permission_denied", "operation": "update"},
    )


async def test_recorded_events_are_written_in_batches_and_flushed_on_stop(
    store: AuditStore,
) -> None:
    sink = SQLAuditSink(store, flush_interval_s=60)  # only size or stop triggers a write
    await sink.start()
    for n in range(3):
        await sink.record(denied(n))
    assert sink.status()["pending"] == 3  # recording did no I/O

    await sink.stop()

    assert [e.record_id for e in await stored(store)] == ["a0", "a1", "a2"]
    assert sink.status() | {"lastError": None} == {
        "running": False,
        "pending": 0,
        "written": 3,
        "dropped": 0,
        "lastError": None,
    }


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    store: AuditStore,
) -> None:
    async with SQLAuditSink(store, flush_interval_s=60, max_batch=5) as sink:
        for n in range(5):
            await sink.record(denied(n))
        async with asyncio.timeout(30):
            await sink.flush()
        assert len(await stored(store)) == 5


async def test_record_durably_returns_after_the_commit(store: AuditStore) -> None:
    async with SQLAuditSink(store, flush_interval_s=60) as sink:
        event = denied()
        await sink.record_durably(event)

        assert [e.id for e in await stored(store)] == [event.id]


async def test_events_wait_out_a_database_failure(database: AsyncEngine) -> None:
    store = AuditStore(database)  # no tables yet: every write fails
    async with SQLAuditSink(store, flush_interval_s=0.01) as sink:
        await sink.record(denied())
        await eventually(lambda: sink.status()["lastError"])
        assert sink.status()["pending"] == 1

        await store.create()
        async with asyncio.timeout(30):
            await sink.flush()

    assert len(await stored(store)) == 1


async def test_a_full_buffer_drops_new_events_instead_of_growing(database: AsyncEngine) -> None:
    store = AuditStore(database)  # failing writes: nothing drains
    sink = SQLAuditSink(
        store, flush_interval_s=0.01, max_batch=2, max_pending=2, overflow_wait_s=0.01
    )
    await sink.start()
    for n in range(3):
        await sink.record(denied(n))

    assert sink.status()["dropped"] == 1
    assert sink.status()["pending"] == 2
    await store.create()
    await sink.stop()
    assert [e.record_id for e in await stored(store)] == ["a0", "a1"]


async def test_a_sink_must_run_to_take_events(store: AuditStore) -> None:
    sink = SQLAuditSink(store)
    with pytest.raises(RuntimeError):
        await sink.record(denied())
    await sink.start()
    with pytest.raises(RuntimeError):
        await sink.start()
    await sink.stop()
    with pytest.raises(RuntimeError):
        await sink.record(denied())


async def test_sign_ins_and_failures_from_the_identity_service_become_events(
    store: AuditStore,
) -> None:
    async with SQLAuditSink(store) as sink:
        on_event = auth_event_recorder(sink)
        now = time.time()
        await on_event(AuthEvent("auth.signed_in", now, user_id="u1", ip="203.0.113.7"))
        await on_event(
            AuthEvent(
                "auth.sign_in_failed",
                now + 1,
                email="who@example.com",
                ip="198.51.100.9",
                details={"reason": "bad_password"},
            )
        )

    signed_in, failed = await stored(store)
    assert (signed_in.action, signed_in.actor, signed_in.object, signed_in.record_id) == (
        "auth.signed_in",
        "u1",
        "user",
        "u1",
    )
    assert signed_in.ip == "203.0.113.7"
    assert abs(signed_in.at.timestamp() - now) < 1e-3
    assert (failed.action, failed.actor, failed.ip) == (
        "auth.sign_in_failed",
        "who@example.com",
        "198.51.100.9",
    )
    assert failed.details == {"reason": "bad_password", "email": "who@example.com"}


async def test_an_autostarting_sink_starts_on_its_first_event(store: AuditStore) -> None:
    sink = SQLAuditSink(store, autostart=True)  # e.g. built in a Serve replica's __init__

    await sink.record(denied())
    await sink.stop()

    assert len(await stored(store)) == 1


async def test_an_event_no_database_would_take_is_stored_cleaned_not_retried_forever(
    store: AuditStore,
) -> None:
    # A record id from a URL path with NUL, a lone surrogate, NaN and a non-JSON value:
    # refused as they are, they would block every event queued behind them.
    odd = AuditEvent.new(
        "permission.denied",
        actor="bob\ud800",
        record_id="a\x00b",
        details={"score": float("nan"), "when": time, "nested": {"x": "y\x00"}},
    )
    async with SQLAuditSink(store) as sink:
        await sink.record_durably(odd)
        await sink.record_durably(denied())

    first, second = await stored(store)
    assert (first.actor, first.record_id) == ("bob?", "ab")
    assert first.details["score"] is None and first.details["nested"] == {"x": "y"}
    assert first.details["when"].startswith("<module")
    assert second.record_id == "a0"
