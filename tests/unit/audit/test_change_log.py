"""The change log keeps what an auditor needs: old values and the writer's request."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data import Actor, DataEngine
from objectos.data.changelog import AUDIT_COLUMNS, ChangeLog
from objectos.metadata import MetadataRegistry

from .conftest import ALICE, SEED


async def test_an_update_logs_the_old_values_of_the_changed_fields(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme", "phone": "+1 555 0100"}, actor=SEED)
    await data.update(
        "account", account["id"], {"phone": "+1 555 0199", "employees": 12}, actor=ALICE
    )

    update = (await data.change_log.since(1)).changes[0]

    assert update.changed_fields == ["employees", "phone"]
    assert update.previous == {"phone": "+1 555 0100", "employees": None}
    assert update.record is not None and update.record["phone"] == "+1 555 0199"


async def test_a_delete_logs_the_whole_record_as_it_was(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme", "employees": 3}, actor=SEED)

    await data.delete("account", account["id"], actor=ALICE)

    delete = (await data.change_log.since(1)).changes[0]
    assert delete.previous is not None
    assert delete.previous["name"] == "Acme" and delete.previous["employees"] == 3


async def test_a_create_has_no_previous_values(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)

    assert (await data.change_log.since(0)).changes[0].previous is None


async def test_every_write_carries_the_request_of_its_actor(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.insert("account", {"name": "Globex"}, actor=SEED)

    mine, seeded = (await data.change_log.since(0)).changes

    assert mine.context == {
        "ip": "203.0.113.7",
        "userAgent": "curl/8.5",
        "requestId": "req-1",
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert seeded.context == {}


async def test_old_values_and_addresses_stay_out_of_sync_and_realtime_payloads(
    data: DataEngine,
) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=ALICE)

    payload = (await data.change_log.since(1)).changes[0].to_dict()

    assert "previous" not in payload and "context" not in payload


async def test_an_older_change_log_gets_the_audit_columns_in_place(
    database: AsyncEngine, crm: MetadataRegistry
) -> None:
    # A database made before the audit columns existed, with one logged write.
    async with database.begin() as conn:
        await conn.execute(
            sa.text(
                "CREATE TABLE _change_log (seq BIGINT PRIMARY KEY, object VARCHAR NOT NULL, "
                "record_id VARCHAR(36) NOT NULL, operation VARCHAR(8) NOT NULL, "
                "record_version INTEGER NOT NULL, changed_fields JSON NOT NULL, record JSON, "
                "actor VARCHAR, at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO _change_log VALUES (1, 'account', 'a1', 'create', 1, "
                "'[\"name\"]', '{\"name\": \"Old\"}', 'bob', :at)"
            ),
            {"at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)},
        )
        await conn.execute(
            sa.text("CREATE TABLE _sequence (name VARCHAR PRIMARY KEY, value BIGINT)")
        )
        await conn.execute(sa.text("INSERT INTO _sequence VALUES ('change_log', 1)"))
    data = DataEngine(database, crm)

    plan = await data.migrate()

    assert [str(step) for step in plan.steps if step.object == "_change_log"] == [
        "add_column _change_log.previous: audit column",
        "add_column _change_log.context: audit column",
    ]
    old = (await data.change_log.since(0)).changes[0]
    assert (old.actor, old.record, old.previous, old.context) == ("bob", {"name": "Old"}, None, {})
    await data.insert("account", {"name": "New"}, actor=ALICE)
    assert (await data.change_log.since(1)).changes[0].context["ip"] == "203.0.113.7"
    # A second migration finds nothing to add.
    assert not [s for s in (await data.migrate()).steps if s.object == "_change_log"]


async def test_a_reader_without_metadata_opens_the_same_log(
    data: DataEngine, database: AsyncEngine
) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)

    log = ChangeLog.open(database)

    assert [c.context.get("requestId") for c in (await log.since(0)).changes] == ["req-1"]
    assert set(AUDIT_COLUMNS) <= set(log.table.c.keys())


def test_the_request_context_does_not_change_who_the_actor_is() -> None:
    plain = Actor.user("alice", ["sales_rep"])
    in_request = plain.with_context(ip="198.51.100.1", requestId="r-9")

    # Permission caches key on actors: one subject, whatever request it comes in.
    assert in_request == plain and hash(in_request) == hash(plain)
    assert in_request.context == {"ip": "198.51.100.1", "requestId": "r-9"}
    assert plain.context == {}
    assert in_request.with_context(requestId=None).context == {"ip": "198.51.100.1"}


def test_context_values_are_cleaned_so_they_can_never_fail_a_write() -> None:
    actor = Actor.user(
        "alice", context={"userAgent": "x" * 2000, "ip": None, "requestId": "a\x00b\ud800"}
    )

    assert len(actor.context["userAgent"]) == 512
    assert "ip" not in actor.context
    assert actor.context["requestId"] == "ab?"
    with pytest.raises(TypeError):
        Actor.user("alice", context={"ip": 127001})  # type: ignore[dict-item]


def test_existing_constructors_still_work() -> None:
    assert Actor("bob").context == {}
    assert Actor("bob", frozenset({"r"}), True) == Actor(
        user_id="bob", roles=frozenset({"r"}), system=True
    )
    assert Actor.system_actor().to_dict() == {"userId": "system", "roles": [], "system": True}
