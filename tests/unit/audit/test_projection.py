"""Writes become audit events by tailing the change log: all of them, once each."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.audit import AuditProjection, AuditQuery, AuditStore
from objectos.audit.events import FieldChange
from objectos.data import DataEngine

from .conftest import ALICE, SEED, eventually


async def everything(store: AuditStore, **filters: str) -> list:
    page = await store.search(AuditQuery.from_params({**filters, "limit": 1000, "order": "asc"}))
    return page.events


async def test_each_write_becomes_an_event_with_old_and_new_values(
    data: DataEngine, store: AuditStore, projection: AuditProjection
) -> None:
    account = await data.insert("account", {"name": "Acme", "phone": "+1 555 0100"}, actor=ALICE)
    await data.update("account", account["id"], {"phone": "+1 555 0199"}, actor=ALICE)
    await data.delete("account", account["id"], actor=SEED)

    assert await projection.catch_up() == 3

    created, updated, deleted = await everything(store)
    assert [e.action for e in (created, updated, deleted)] == [
        "record.created",
        "record.updated",
        "record.deleted",
    ]
    assert FieldChange("phone", None, "+1 555 0100") in created.changes
    assert updated.changes == (FieldChange("phone", "+1 555 0100", "+1 555 0199"),)
    assert FieldChange("name", "Acme", None) in deleted.changes
    assert (updated.actor, updated.object, updated.record_id) == ("alice", "account", account["id"])
    assert (updated.ip, updated.user_agent, updated.request_id) == (
        "203.0.113.7",
        "curl/8.5",
        "req-1",
    )
    assert updated.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (deleted.actor, deleted.ip) == ("seed", None)
    assert [e.seq for e in (created, updated, deleted)] == [1, 2, 3]
    assert updated.details == {"version": 2}


async def test_cascades_and_roll_ups_are_audited_like_any_write(
    data: DataEngine, store: AuditStore, projection: AuditProjection
) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=SEED)
    opportunity = await data.insert(
        "opportunity",
        {"name": "Deal", "account": account["id"], "stage": "prospecting", "amount": 100},
        actor=SEED,
    )
    await data.insert(
        "opportunity_line_item",
        {"opportunity": opportunity["id"], "product": "Anvil", "quantity": 2, "unit_price": 5},
        actor=ALICE,
    )
    await projection.catch_up()

    # The line item's insert re-computed the opportunity's summary in the same transaction.
    trail = await everything(store, object="opportunity", recordId=opportunity["id"])
    assert [e.action for e in trail] == ["record.created", "record.updated"]
    assert trail[1].request_id == "req-1"
    assert FieldChange("line_item_count", 0, 1) in trail[1].changes
    assert FieldChange("line_item_total", 0, 10) in trail[1].changes


async def test_projecting_again_never_stores_an_event_twice(
    data: DataEngine, store: AuditStore
) -> None:
    for name in ("Acme", "Globex", "Initech"):
        await data.insert("account", {"name": name}, actor=ALICE)
    first = AuditProjection(data.change_log, store, batch_size=2)
    await first.step()  # one batch of two is committed with its cursor ...

    # ... then the process dies; a new projection resumes from the stored cursor.
    second = AuditProjection(data.change_log, store, batch_size=2)
    assert await second.catch_up() == 1
    # Even replaying from the start (a lost cursor) adds nothing: seq is unique.
    await store.project([], 0)
    assert await store.append([*(await everything(store))]) == 0

    assert [e.seq for e in await everything(store)] == [1, 2, 3]
    assert await store.cursor() == 3


async def test_change_log_entries_pruned_before_projection_leave_a_gap_event(
    data: DataEngine, store: AuditStore, projection: AuditProjection
) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.insert("account", {"name": "Globex"}, actor=ALICE)
    await data.change_log.prune(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    await data.insert("account", {"name": "Initech"}, actor=ALICE)

    await projection.catch_up()

    [gap] = await everything(store, action="audit.gap")
    [created] = await everything(store, action="record.*")
    assert (gap.details["fromSeq"], gap.details["toSeq"]) == (1, 2)
    assert created.seq == 3


async def test_the_running_projection_follows_new_writes(
    data: DataEngine, store: AuditStore
) -> None:
    projection = AuditProjection(data.change_log, store, poll_interval_s=0.02)
    async with projection:
        await data.insert("account", {"name": "Acme"}, actor=ALICE)
        await eventually(lambda: everything(store))
        assert projection.status()["running"]
    assert not projection.running
    assert [e.action for e in await everything(store)] == ["record.created"]


async def test_a_projection_starts_once(data: DataEngine, store: AuditStore) -> None:
    projection = AuditProjection(data.change_log, store)
    await projection.start()
    try:
        with pytest.raises(RuntimeError):
            await projection.start()
    finally:
        await projection.stop()


async def test_a_failing_database_is_retried_not_fatal(
    data: DataEngine, database: AsyncEngine
) -> None:
    # The audit tables do not exist yet: every step fails until they are created.
    store = AuditStore(database)
    projection = AuditProjection(data.change_log, store, poll_interval_s=0.01)
    await data.insert("account", {"name": "Acme"}, actor=ALICE)
    async with projection:
        await eventually(lambda: projection.status()["lastError"])
        await store.create()
        await eventually(lambda: everything(store))
        assert projection.running
