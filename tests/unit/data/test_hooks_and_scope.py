"""Hooks shape and veto operations; scope (row-level security) holds on every path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from objectos.data import DataEngine
from objectos.data.query import QuerySpec, parse_query_ast
from objectos.errors import PermissionDenied, RecordNotFound, ValidationError

from .conftest import OpenEngine
from .doubles import ALICE, BOB, RecordingHooks


async def test_before_insert_may_change_the_record(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()

    def stamp(payload: dict[str, Any]) -> dict[str, Any]:
        payload["input"]["doc"]["description"] = f"created by {payload['session']['userId']}"
        return payload

    hooks.before["data.beforeInsert.account"] = stamp
    data = await open_engine(hooks=hooks)

    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    assert account["description"] == "created by alice"


async def test_hook_changes_are_validated_like_client_input(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()

    def break_it(payload: dict[str, Any]) -> dict[str, Any]:
        payload["input"]["doc"]["website"] = "nowhere"
        return payload

    hooks.before["data.beforeInsert.account"] = break_it
    data = await open_engine(hooks=hooks)

    with pytest.raises(ValidationError):
        await data.insert("account", {"name": "Acme"}, actor=ALICE)


async def test_before_hooks_can_veto_updates_and_deletes(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()

    def locked(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["previous"]["name"] == "Locked":
            raise PermissionDenied("this account is locked")
        return payload

    hooks.before["data.beforeUpdate.account"] = locked
    hooks.before["data.beforeDelete.account"] = locked
    data = await open_engine(hooks=hooks)
    account = await data.insert("account", {"name": "Locked"}, actor=ALICE)

    with pytest.raises(PermissionDenied):
        await data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=ALICE)
    with pytest.raises(PermissionDenied):
        await data.delete("account", account["id"], actor=ALICE)

    assert (await data.find_one("account", account["id"], actor=ALICE))["version"] == 1


async def test_hook_events_and_payloads(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()
    data = await open_engine(hooks=hooks)

    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=ALICE)
    await data.find_one("account", account["id"], actor=ALICE)
    await data.delete("account", account["id"], actor=ALICE)

    assert hooks.events() == [
        "data.beforeInsert.account",
        "data.afterInsert.account",
        "data.beforeUpdate.account",
        "data.afterUpdate.account",
        "data.beforeFind.account",
        "data.afterFind.account",
        "data.beforeDelete.account",
        "data.afterDelete.account",
    ]
    after_update = hooks.calls[3][1]
    assert after_update["previous"]["phone"] is None
    assert after_update["result"]["phone"] == "+1 555 0100"
    assert after_update["changedFields"] == ["phone"]
    assert after_update["session"] == {"userId": "alice", "roles": ["sales"], "system": False}


async def test_cascaded_deletes_reach_after_hooks(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()
    data = await open_engine(hooks=hooks)
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    deal = await data.insert("opportunity", {"name": "x", "account": account["id"]}, actor=ALICE)
    await data.insert(
        "opportunity_line_item",
        {"opportunity": deal["id"], "product": "Widget", "unit_price": 1},
        actor=ALICE,
    )
    hooks.calls.clear()

    await data.delete("opportunity", deal["id"], actor=ALICE)

    assert hooks.events() == [
        "data.beforeDelete.opportunity",
        "data.afterDelete.opportunity_line_item",
        "data.afterDelete.opportunity",
    ]


async def test_before_find_may_narrow_the_query(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()

    def only_tech(payload: dict[str, Any]) -> dict[str, Any]:
        query: QuerySpec = payload["input"]["query"]
        payload["input"]["query"] = replace(query, where={"industry": {"$eq": "technology"}})
        return payload

    hooks.before["data.beforeFind.account"] = only_tech
    data = await open_engine(hooks=hooks)
    await data.insert("account", {"name": "Acme", "industry": "technology"}, actor=ALICE)
    await data.insert("account", {"name": "Bank", "industry": "finance"}, actor=ALICE)

    page = await data.find("account", actor=ALICE)

    assert [r["name"] for r in page.records] == ["Acme"]


def owned_by(user: str) -> Any:
    """A scope: every object limited to records ``user`` owns."""

    def scope(object_name: str, table: sa.Table) -> Any:
        return table.c.owner == user

    return scope


async def test_scope_limits_reads(data: DataEngine) -> None:
    mine = await data.insert("account", {"name": "Mine"}, actor=ALICE)
    theirs = await data.insert("account", {"name": "Theirs"}, actor=BOB)
    scope = owned_by("alice")

    page = await data.find("account", actor=ALICE, scope=scope)

    assert [r["id"] for r in page.records] == [mine["id"]]
    assert await data.count("account", actor=ALICE, scope=scope) == 1
    with pytest.raises(RecordNotFound):
        await data.find_one("account", theirs["id"], actor=ALICE, scope=scope)
    rows = await data.aggregate(
        "account",
        parse_query_ast({"aggregations": [{"function": "count", "alias": "n"}]}),
        actor=ALICE,
        scope=scope,
    )
    assert rows == [{"n": 1}]


async def test_scope_limits_updates_and_deletes(data: DataEngine) -> None:
    theirs = await data.insert("account", {"name": "Theirs"}, actor=BOB)
    scope = owned_by("alice")

    with pytest.raises(RecordNotFound):
        await data.update(
            "account", theirs["id"], {"phone": "+1 555 0100"}, actor=ALICE, scope=scope
        )
    with pytest.raises(RecordNotFound):
        await data.delete("account", theirs["id"], actor=ALICE, scope=scope)
    results = await data.batch(
        "account", [{"operation": "delete", "id": theirs["id"]}], actor=ALICE, scope=scope
    )

    assert results[0].status == "failed"
    assert (await data.find_one("account", theirs["id"], actor=BOB))["version"] == 1


async def test_scope_applies_to_expanded_and_referenced_records(data: DataEngine) -> None:
    theirs = await data.insert("account", {"name": "Theirs"}, actor=BOB)
    contact = await data.insert("contact", {"last_name": "Doe", "account": theirs["id"]}, actor=BOB)
    scope_as_filter = {"owner": "bob"}

    def bob_sees_contacts_only(object_name: str, table: sa.Table) -> Any:
        return scope_as_filter if object_name == "contact" else sa.false()

    found = await data.find_one(
        "contact", contact["id"], actor=BOB, expand=["account"], scope=bob_sees_contacts_only
    )
    assert found["account"] == theirs["id"]  # not expanded: the account is out of scope

    with pytest.raises(ValidationError) as info:
        await data.insert(
            "contact",
            {"last_name": "Roe", "account": theirs["id"]},
            actor=BOB,
            scope=bob_sees_contacts_only,
        )
    assert info.value.field_errors[0].code == "invalid_reference"
