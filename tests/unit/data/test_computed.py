"""Computed fields: formulas, summaries (roll-ups) and autonumbers."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from objectos.data import DataEngine
from objectos.data.query import parse_list_params
from objectos.errors import ValidationError
from objectos.metadata import MetadataRegistry

from .conftest import OpenEngine
from .doubles import ALICE


async def new_deal(data: DataEngine, **fields: Any) -> dict[str, Any]:
    account = await data.insert("account", {"name": f"Account {dt.datetime.now()}"}, actor=ALICE)
    return await data.insert(
        "opportunity", {"name": "Deal", "account": account["id"], **fields}, actor=ALICE
    )


async def test_formula_is_computed_on_insert_and_update(data: DataEngine) -> None:
    deal = await new_deal(data, amount=1234.50, probability=25)

    assert deal["expected_revenue"] == 308.63  # 308.625 rounded half-up to cents
    updated = await data.update("opportunity", deal["id"], {"probability": 50}, actor=ALICE)
    assert updated["expected_revenue"] == 617.25


async def test_a_formula_over_an_empty_field_is_null(data: DataEngine) -> None:
    deal = await new_deal(data, probability=25)

    assert deal["amount"] is None
    assert deal["expected_revenue"] is None


async def test_text_formula(data: DataEngine) -> None:
    ada = await data.insert("contact", {"first_name": "Ada", "last_name": "Lovelace"}, actor=ALICE)
    cher = await data.insert("contact", {"last_name": "Cher"}, actor=ALICE)

    assert ada["full_name"] == "Ada Lovelace"
    assert cher["full_name"] == "Cher"


async def test_formulas_can_be_filtered_and_sorted_because_they_are_stored(
    data: DataEngine,
) -> None:
    for amount in (100, 300, 200):
        await new_deal(data, amount=amount, probability=50)

    page = await data.find(
        "opportunity",
        parse_list_params({"filter": '{"expected_revenue": {"$gte": 100}}', "sort": "-amount"}),
        actor=ALICE,
    )

    assert [r["expected_revenue"] for r in page.records] == [150, 100]


async def test_summary_rolls_up_child_inserts_updates_and_deletes(data: DataEngine) -> None:
    deal = await new_deal(data)
    widget = await data.insert(
        "opportunity_line_item",
        {"opportunity": deal["id"], "product": "Widget", "quantity": 3, "unit_price": 9.99},
        actor=ALICE,
    )
    await data.insert(
        "opportunity_line_item",
        {"opportunity": deal["id"], "product": "Gizmo", "quantity": 1, "unit_price": 100},
        actor=ALICE,
    )

    after_inserts = await data.find_one("opportunity", deal["id"], actor=ALICE)
    assert widget["total"] == 29.97
    assert after_inserts["line_item_total"] == 129.97
    assert after_inserts["line_item_count"] == 2
    assert after_inserts["version"] == 3  # each roll-up is a change of the parent

    await data.update("opportunity_line_item", widget["id"], {"quantity": 10}, actor=ALICE)
    assert (await data.find_one("opportunity", deal["id"], actor=ALICE))["line_item_total"] == 199.9

    await data.delete("opportunity_line_item", widget["id"], actor=ALICE)
    after_delete = await data.find_one("opportunity", deal["id"], actor=ALICE)
    assert after_delete["line_item_total"] == 100
    assert after_delete["line_item_count"] == 1


async def test_moving_a_child_updates_both_parents(data: DataEngine) -> None:
    first, second = await new_deal(data), await new_deal(data)
    item = await data.insert(
        "opportunity_line_item",
        {"opportunity": first["id"], "product": "Widget", "quantity": 2, "unit_price": 5},
        actor=ALICE,
    )

    await data.update(
        "opportunity_line_item", item["id"], {"opportunity": second["id"]}, actor=ALICE
    )

    assert (await data.find_one("opportunity", first["id"], actor=ALICE))["line_item_total"] == 0
    assert (await data.find_one("opportunity", second["id"], actor=ALICE))["line_item_total"] == 10


async def test_rollups_are_logged_in_the_same_transaction(data: DataEngine) -> None:
    deal = await new_deal(data)
    cursor = (await data.change_log.since(0, limit=1000)).cursor

    await data.insert(
        "opportunity_line_item",
        {"opportunity": deal["id"], "product": "Widget", "quantity": 1, "unit_price": 5},
        actor=ALICE,
    )

    changes = (await data.change_log.since(cursor)).changes
    assert [(c.object, c.operation) for c in changes] == [
        ("opportunity_line_item", "create"),
        ("opportunity", "update"),
    ]
    assert changes[1].changed_fields == ["line_item_count", "line_item_total"]
    assert changes[1].record is not None and changes[1].record["line_item_total"] == 5
    assert changes[1].seq == changes[0].seq + 1


async def test_summary_with_a_filter_and_min_max(open_engine: OpenEngine) -> None:
    registry = MetadataRegistry.from_objects(
        [
            {
                "name": "project",
                "fields": {
                    "name": {"type": "text"},
                    "open_tasks": {
                        "type": "summary",
                        "summaryOperations": {
                            "object": "task",
                            "function": "count",
                            "filter": {"done": False},
                        },
                    },
                    "first_due": {
                        "type": "summary",
                        "summaryOperations": {"object": "task", "field": "due", "function": "min"},
                    },
                    "average_hours": {
                        "type": "summary",
                        "summaryOperations": {
                            "object": "task",
                            "field": "hours",
                            "function": "avg",
                        },
                    },
                },
            },
            {
                "name": "task",
                "fields": {
                    "project": {"type": "master_detail", "reference": "project"},
                    "done": {"type": "boolean", "defaultValue": False},
                    "due": {"type": "date"},
                    "hours": {"type": "number", "scale": 1},
                },
            },
        ]
    )
    data = await open_engine(registry)
    project = await data.insert("project", {"name": "Launch"}, actor=ALICE)
    for done, due, hours in [(False, "2026-02-01", 2), (True, "2026-01-01", 4), (False, None, 3)]:
        await data.insert(
            "task",
            {"project": project["id"], "done": done, "due": due, "hours": hours},
            actor=ALICE,
        )

    rolled = await data.find_one("project", project["id"], actor=ALICE)

    assert rolled["open_tasks"] == 2
    assert rolled["first_due"] == "2026-01-01"
    assert rolled["average_hours"] == 3


async def test_autonumbers_count_up_in_their_format(data: DataEngine) -> None:
    first = await data.insert("case", {"subject": "One"}, actor=ALICE)
    second = await data.insert("case", {"subject": "Two"}, actor=ALICE)

    assert (first["case_number"], second["case_number"]) == ("CASE-0001", "CASE-0002")


async def test_a_failed_insert_does_not_use_up_an_autonumber(data: DataEngine) -> None:
    await data.insert("case", {"subject": "One"}, actor=ALICE)
    with pytest.raises(ValidationError):
        await data.insert("case", {"subject": "Two", "priority": "whenever"}, actor=ALICE)

    assert (await data.insert("case", {"subject": "Three"}, actor=ALICE))["case_number"] == (
        "CASE-0002"
    )


async def test_autonumbers_are_unique_under_concurrency(data: DataEngine) -> None:
    cases = await asyncio.gather(
        *(data.insert("case", {"subject": f"Case {i}"}, actor=ALICE) for i in range(20))
    )

    numbers = sorted(c["case_number"] for c in cases)
    assert numbers == [f"CASE-{i:04d}" for i in range(1, 21)]


async def test_recompute_applies_a_changed_formula_to_stored_records(
    open_engine: OpenEngine, crm: MetadataRegistry
) -> None:
    data = await open_engine(crm)
    deal = await new_deal(data, amount=100, probability=50)
    assert deal["expected_revenue"] == 50
    changed = crm.get_object("opportunity").model_copy(deep=True)
    changed.fields["expected_revenue"].expression = "amount * probability / 200"
    objects = [o for o in crm.objects.values() if o.name != "opportunity"] + [changed]
    data_v2 = await open_engine(MetadataRegistry.from_objects(objects))

    assert await data_v2.recompute("opportunity") == 1

    assert (await data_v2.find_one("opportunity", deal["id"], actor=ALICE))[
        "expected_revenue"
    ] == 25


async def test_concurrent_children_of_one_parent_roll_up_correctly(data: DataEngine) -> None:
    deal = await new_deal(data)

    await asyncio.gather(
        *(
            data.insert(
                "opportunity_line_item",
                {"opportunity": deal["id"], "product": f"P{i}", "quantity": 1, "unit_price": i},
                actor=ALICE,
            )
            for i in range(1, 11)
        )
    )

    rolled = await data.find_one("opportunity", deal["id"], actor=ALICE)
    assert (rolled["line_item_count"], rolled["line_item_total"]) == (10, 55)
    assert rolled["version"] == 11
