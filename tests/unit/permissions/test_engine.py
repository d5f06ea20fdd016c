"""The compiled permission engine: implied flags, direct permission sets, caching."""

from __future__ import annotations

import pytest

from objectos.data import Actor
from objectos.data.query import QuerySpec, parse_list_params
from objectos.errors import FieldNotAccessible
from objectos.metadata import MetadataRegistry
from objectos.protocol.permission import (
    FieldPermission,
    ObjectPermission,
    PermissionSet,
    SecurityConfig,
)
from objectos.security.permissions import PermissionEngine

from .conftest import Hub


def test_modify_all_records_implies_every_action_on_every_record(
    registry: MetadataRegistry,
) -> None:
    config = SecurityConfig(
        permissionSets=[
            PermissionSet(name="janitor", objects={"case": ObjectPermission(modifyAllRecords=True)})
        ]
    )
    engine = PermissionEngine(config, registry)
    janitor = Actor.user("jan", ["janitor"])
    access = engine.object_access(janitor, "case")
    assert access.actions == {"read", "edit", "delete"}  # not create: that is its own flag
    assert access.view_all and access.modify_all
    assert all(engine.record_condition(janitor, "case", a) is None for a in access.actions)
    assert not engine.object_access(janitor, "account").actions


def test_roles_and_directly_held_permission_sets_add_up(crm: Hub) -> None:
    ann = crm.permissions.subject(crm.as_("ann"))
    assert ann.permission_sets == ("read_only", "revenue_viewer")  # through the auditor role
    both = crm.permissions.subject(Actor.user("x", ["east_rep", "revenue_viewer"]))
    assert both.permission_sets == ("sales_rep", "revenue_viewer")
    access = crm.permissions.object_access(
        Actor.user("x", ["east_rep", "revenue_viewer"]), "account"
    )
    assert "annual_revenue" in access.readable and "annual_revenue" not in access.editable


def test_compiled_checks_are_cached_per_actor_object_and_action(crm: Hub) -> None:
    eve, table = crm.as_("eve"), crm.data.table("opportunity")
    first = crm.permissions.record_condition(eve, "opportunity", "read", table)
    assert crm.permissions.record_condition(eve, "opportunity", "read", table) is first
    assert (
        crm.permissions.record_condition(crm.as_("ed"), "opportunity", "read", table) is not first
    )
    assert crm.permissions.object_access(eve, "case") is crm.permissions.object_access(eve, "case")


async def test_a_directory_change_reaches_the_next_request(crm: Hub) -> None:
    erin, will = crm.as_("erin"), crm.as_("will")

    async def ids(actor: Actor) -> set[str]:
        page = await crm.secure.find("opportunity", QuerySpec(fields=["id"]), actor=actor)
        return {r["id"] for r in page.records}

    assert await ids(erin) == {"o1", "o2", "o4"}
    assert await ids(will) == {"o3"}
    crm.directory.assign("ed", ["west_rep"])  # ed moves to the west team, with his deal
    assert await ids(erin) == {"o1", "o4"}
    assert await ids(will) == {"o2", "o3"}


async def test_computed_fields_do_not_reveal_hidden_ones(crm: Hub) -> None:
    config = crm.permissions.config.model_copy(deep=True)
    manager = next(ps for ps in config.permissionSets if ps.name == "sales_manager")
    manager.fields["opportunity.amount"] = FieldPermission(readable=True, editable=True)
    manager.fields["opportunity_line_item.unit_price"] = FieldPermission(readable=True)
    secure = crm.with_config(config)
    eve, erin = crm.as_("eve"), crm.as_("erin")

    rep_view = await secure.find_one("opportunity", "o1", actor=eve)
    # expected_revenue = amount * probability; line_item_total sums total = quantity * unit_price
    assert {"amount", "expected_revenue", "line_item_total"}.isdisjoint(rep_view)
    assert rep_view["line_item_count"] == 1  # a count reveals no hidden value
    item = await secure.find_one("opportunity_line_item", "li1", actor=eve)
    assert {"unit_price", "total"}.isdisjoint(item) and item["quantity"] == 2
    with pytest.raises(FieldNotAccessible):
        await secure.find(
            "opportunity", parse_list_params({"sort": "-expected_revenue"}), actor=eve
        )
    decision = await secure.explain(eve, "read", "opportunity", field="expected_revenue")
    assert decision.reasons[-1] == (
        "opportunity.expected_revenue is computed from fields you may not read"
    )

    manager_view = await secure.find_one("opportunity", "o1", actor=erin)
    assert manager_view["expected_revenue"] == 5_000  # 50,000 at 10 %
    assert manager_view["line_item_total"] == 200
