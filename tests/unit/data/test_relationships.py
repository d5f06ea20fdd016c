"""Deleting a parent: restrict, cascade and set_null, all logged in one transaction."""

from __future__ import annotations

import pytest

from objectos.data import DataEngine
from objectos.errors import DeleteRestricted, RecordNotFound
from objectos.metadata import MetadataRegistry

from .conftest import OpenEngine
from .doubles import ALICE


async def test_restrict_refuses_to_delete_a_referenced_record(data: DataEngine) -> None:
    contact = await data.insert("contact", {"last_name": "Doe"}, actor=ALICE)
    await data.insert("case", {"subject": "Help", "contact": contact["id"]}, actor=ALICE)

    with pytest.raises(DeleteRestricted) as info:
        await data.delete("contact", contact["id"], actor=ALICE)

    assert info.value.status == 409
    assert info.value.details["child"] == "case"
    assert info.value.details["count"] == 1
    assert await data.find_one("contact", contact["id"], actor=ALICE)


async def test_cascade_deletes_children_and_logs_each(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    deal = await data.insert("opportunity", {"name": "x", "account": account["id"]}, actor=ALICE)
    items = [
        await data.insert(
            "opportunity_line_item",
            {"opportunity": deal["id"], "product": product, "unit_price": 1},
            actor=ALICE,
        )
        for product in ("Widget", "Gizmo")
    ]
    cursor = (await data.change_log.since(0, limit=1000)).cursor

    await data.delete("opportunity", deal["id"], actor=ALICE)

    for item in items:
        with pytest.raises(RecordNotFound):
            await data.find_one("opportunity_line_item", item["id"], actor=ALICE)
    changes = (await data.change_log.since(cursor)).changes
    assert sorted((c.object, c.operation, c.record_id) for c in changes) == sorted(
        [("opportunity_line_item", "delete", item["id"]) for item in items]
        + [("opportunity", "delete", deal["id"])]
    )
    assert len({c.seq for c in changes}) == 3


async def test_set_null_clears_the_reference_and_bumps_the_child(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    contact = await data.insert(
        "contact", {"last_name": "Doe", "account": account["id"]}, actor=ALICE
    )

    await data.delete("account", account["id"], actor=ALICE)

    orphan = await data.find_one("contact", contact["id"], actor=ALICE)
    assert orphan["account"] is None
    assert orphan["version"] == 2
    last = (await data.change_log.since(0, limit=1000)).changes[-2:]
    assert [(c.object, c.operation, c.changed_fields) for c in last] == [
        ("contact", "update", ["account"]),
        ("account", "delete", []),
    ]


async def test_a_required_lookup_restricts_by_default(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.insert("opportunity", {"name": "x", "account": account["id"]}, actor=ALICE)

    with pytest.raises(DeleteRestricted):
        await data.delete("account", account["id"], actor=ALICE)


async def test_a_restricted_grandchild_stops_the_whole_cascade(open_engine: OpenEngine) -> None:
    registry = MetadataRegistry.from_objects(
        [
            {"name": "folder", "fields": {"name": {"type": "text"}}},
            {
                "name": "document",
                "fields": {"folder": {"type": "master_detail", "reference": "folder"}},
            },
            {
                "name": "signature",
                "fields": {
                    "document": {
                        "type": "lookup",
                        "reference": "document",
                        "deleteBehavior": "restrict",
                    }
                },
            },
        ]
    )
    data = await open_engine(registry)
    folder = await data.insert("folder", {"name": "Contracts"}, actor=ALICE)
    document = await data.insert("document", {"folder": folder["id"]}, actor=ALICE)
    await data.insert("signature", {"document": document["id"]}, actor=ALICE)

    with pytest.raises(DeleteRestricted):
        await data.delete("folder", folder["id"], actor=ALICE)

    assert await data.find_one("document", document["id"], actor=ALICE)
    assert await data.find_one("folder", folder["id"], actor=ALICE)


async def test_a_tree_cascades_down_its_own_object(open_engine: OpenEngine) -> None:
    registry = MetadataRegistry.from_objects(
        [
            {
                "name": "category",
                "fields": {
                    "name": {"type": "text"},
                    "parent": {"type": "tree", "deleteBehavior": "cascade"},
                },
            }
        ]
    )
    data = await open_engine(registry)
    root = await data.insert("category", {"name": "root"}, actor=ALICE)
    child = await data.insert("category", {"name": "child", "parent": root["id"]}, actor=ALICE)
    await data.insert("category", {"name": "grandchild", "parent": child["id"]}, actor=ALICE)

    await data.delete("category", root["id"], actor=ALICE)

    assert await data.count("category", actor=ALICE) == 0
