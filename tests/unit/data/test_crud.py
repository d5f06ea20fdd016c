"""Create, read, update and delete records of the sample CRM."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data import DataEngine
from objectos.data.query import QuerySpec, parse_list_params, parse_query_ast
from objectos.errors import InvalidField, ObjectNotFound, RecordNotFound

from .doubles import ALICE, BOB, SYSTEM


async def test_insert_returns_the_stored_record_with_system_fields(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme", "annual_revenue": 1250.5}, actor=ALICE)

    assert account["name"] == "Acme"
    assert account["annual_revenue"] == 1250.5
    assert account["industry"] == "other"  # the option marked default: true
    assert account["version"] == 1
    assert account["owner"] == account["created_by"] == account["updated_by"] == "alice"
    assert account["created_at"] == account["updated_at"]
    assert account["created_at"].endswith("Z")
    assert len(account["id"]) == 36 and account["id"][14] == "7"  # a UUIDv7


async def test_ids_are_time_ordered(data: DataEngine) -> None:
    first = await data.insert("account", {"name": "First"}, actor=ALICE)
    second = await data.insert("account", {"name": "Second"}, actor=ALICE)

    assert first["id"] < second["id"]


async def test_a_client_may_choose_the_id_of_a_new_record(data: DataEngine) -> None:
    account = await data.insert("account", {"id": "acct-offline-1", "name": "Offline"}, actor=ALICE)

    assert account["id"] == "acct-offline-1"
    assert (await data.find_one("account", "acct-offline-1", actor=ALICE))["name"] == "Offline"


async def test_find_one_reads_what_insert_wrote(data: DataEngine) -> None:
    created = await data.insert(
        "opportunity",
        {
            "name": "Fleet renewal",
            "account": (await data.insert("account", {"name": "Acme"}, actor=ALICE))["id"],
            "amount": 1000,
            "close_date": "2026-03-31",
        },
        actor=ALICE,
    )

    assert await data.find_one("opportunity", created["id"], actor=ALICE) == created
    assert created["close_date"] == "2026-03-31"


async def test_update_changes_fields_and_bumps_the_version(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    updated = await data.update(
        "account", account["id"], {"website": "https://acme.example"}, actor=BOB
    )

    assert updated["website"] == "https://acme.example"
    assert updated["version"] == 2
    assert updated["updated_by"] == "bob"
    assert updated["owner"] == "alice"
    assert updated["created_at"] == account["created_at"]


async def test_an_update_that_changes_nothing_is_a_no_op(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    again = await data.update("account", account["id"], {"name": "Acme"}, actor=ALICE)

    assert again == account
    assert (await data.change_log.since(0)).changes[-1].operation == "create"


async def test_delete_removes_the_record_and_returns_its_last_state(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    deleted = await data.delete("account", account["id"], actor=ALICE)

    assert deleted == account
    with pytest.raises(RecordNotFound) as info:
        await data.find_one("account", account["id"], actor=ALICE)
    assert info.value.status == 404


async def test_missing_records_and_objects_are_404s(data: DataEngine) -> None:
    with pytest.raises(RecordNotFound):
        await data.update("account", "nope", {"name": "x"}, actor=ALICE)
    with pytest.raises(RecordNotFound):
        await data.delete("account", "nope", actor=ALICE)
    with pytest.raises(ObjectNotFound):
        await data.insert("spaceship", {"name": "x"}, actor=ALICE)


async def test_clients_cannot_write_system_computed_or_unknown_fields(data: DataEngine) -> None:
    with pytest.raises(InvalidField) as info:
        await data.insert(
            "opportunity",
            {
                "name": "x",
                "version": 7,
                "created_by": "mallory",
                "owner": "mallory",
                "expected_revenue": 1,
                "colour": "red",
            },
            actor=ALICE,
        )

    refused = {e.field: e.message for e in info.value.field_errors}
    assert set(refused) == {"version", "created_by", "owner", "expected_revenue", "colour"}
    assert "computed" in refused["expected_revenue"]
    assert info.value.code == "invalid_field"


async def test_updates_cannot_change_the_id(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    with pytest.raises(InvalidField):
        await data.update("account", account["id"], {"id": "other"}, actor=ALICE)


async def test_system_actors_may_set_the_owner(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme", "owner": "carol"}, actor=SYSTEM)

    assert account["owner"] == "carol"
    assert account["created_by"] == "seed"


async def test_records_are_json_friendly(data: DataEngine) -> None:
    clock_time = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    account = await data.insert("account", {"name": "Acme", "employees": 42}, actor=ALICE)
    case = await data.insert(
        "case",
        {
            "subject": "Broken",
            "account": account["id"],
            "status": "closed",
            "resolution": "Fixed",
            "closed_at": clock_time.isoformat(),
        },
        actor=ALICE,
    )

    assert account["employees"] == 42 and isinstance(account["employees"], int)
    assert case["closed_at"] == "2026-05-01T07:30:00Z"  # stored and returned in UTC


async def test_find_filters_sorts_and_pages(data: DataEngine) -> None:
    for name, revenue in [("Acme", 300), ("Globex", 100), ("Initech", 200), ("Umbrella", None)]:
        await data.insert("account", {"name": name, "annual_revenue": revenue}, actor=ALICE)

    page = await data.find(
        "account",
        parse_list_params({"sort": "-annual_revenue", "top": "2", "count": "true"}),
        actor=ALICE,
    )

    assert [r["name"] for r in page.records] == ["Acme", "Initech"]
    assert page.total == 4
    assert page.has_more and page.next_cursor is not None
    rest = await data.find(
        "account",
        parse_list_params({"sort": "-annual_revenue", "top": "2", "cursor": page.next_cursor}),
        actor=ALICE,
    )
    assert [r["name"] for r in rest.records] == ["Globex", "Umbrella"]
    assert not rest.has_more and rest.next_cursor is None
    assert page.pagination() == {
        "total": 4,
        "limit": 2,
        "offset": 0,
        "hasMore": True,
        "nextCursor": page.next_cursor,
    }


async def test_find_selects_fields_and_searches(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme Rockets", "description": "rockets"}, actor=ALICE)
    await data.insert("account", {"name": "Globex", "description": "anvils"}, actor=ALICE)

    page = await data.find(
        "account", parse_list_params({"search": "ANVIL", "select": "name"}), actor=ALICE
    )

    assert [set(r) for r in page.records] == [{"id", "name"}]
    assert page.records[0]["name"] == "Globex"


async def test_expand_embeds_lookups_with_one_query_per_field(
    data: DataEngine, database: AsyncEngine
) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    globex = await data.insert("account", {"name": "Globex"}, actor=ALICE)
    for account in (acme, globex, acme):
        await data.insert("contact", {"last_name": "Doe", "account": account["id"]}, actor=ALICE)
    await data.insert("contact", {"last_name": "Loner"}, actor=ALICE)
    selects: list[str] = []

    def record_select(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(data.read_engine, "before_cursor_execute", record_select)
    try:
        page = await data.find(
            "contact",
            parse_query_ast({"fields": ["last_name"], "expand": {"account": {"fields": ["name"]}}}),
            actor=ALICE,
        )
    finally:
        event.remove(data.read_engine, "before_cursor_execute", record_select)

    assert [r["account"] for r in page.records] == [
        {"id": acme["id"], "name": "Acme"},
        {"id": globex["id"], "name": "Globex"},
        {"id": acme["id"], "name": "Acme"},
        None,
    ]
    assert len(selects) == 2  # the page, then one IN query for all its accounts


async def test_count_and_aggregate(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    for stage, amount in [("prospecting", 100), ("prospecting", 50), ("qualification", 10)]:
        await data.insert(
            "opportunity",
            {"name": f"{stage} {amount}", "account": acme["id"], "stage": stage, "amount": amount},
            actor=ALICE,
        )

    assert await data.count("opportunity", {"stage": "prospecting"}, actor=ALICE) == 2
    rows = await data.aggregate(
        "opportunity",
        parse_query_ast(
            {
                "groupBy": ["stage"],
                "aggregations": [{"function": "sum", "field": "amount", "alias": "total"}],
            }
        ),
        actor=ALICE,
    )
    assert rows == [
        {"stage": "prospecting", "total": 150},
        {"stage": "qualification", "total": 10},
    ]


async def test_find_with_no_spec_returns_the_first_page(data: DataEngine) -> None:
    await data.insert("industry_code", {"code": "5112", "title": "Software"}, actor=SYSTEM)

    page = await data.find("industry_code", actor=ALICE)

    assert [r["code"] for r in page.records] == ["5112"]
    assert page.limit == QuerySpec().limit
