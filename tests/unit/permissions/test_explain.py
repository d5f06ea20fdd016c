"""``explain``: the answer of POST /api/v1/permissions/check — allowed or not, and why."""

from __future__ import annotations

import pytest

from objectos.data import Actor
from objectos.errors import InvalidField, ObjectNotFound

from .conftest import USERS, Hub
from .test_matrix import outcomes, visible


async def test_a_shared_record_is_readable_but_not_editable(crm: Hub) -> None:
    eve = crm.as_("eve")
    read = await crm.secure.explain(eve, "read", "opportunity", "o2")
    assert read.allowed
    assert read.reasons == (
        "read on opportunity is granted by sales_rep",
        "sharing rule east_team_deals (read)",
    )
    edit = await crm.secure.explain(eve, "edit", "opportunity", "o2")
    assert not edit.allowed
    assert edit.reasons[-1] == (
        "no sharing grant gives you edit access to this record (org-wide default private)"
    )
    assert edit.to_dict() == {
        "allowed": False,
        "reasons": list(edit.reasons),
        "action": "edit",
        "object": "opportunity",
        "recordId": "o2",
    }


async def test_owner_hierarchy_and_view_all_are_named(crm: Hub) -> None:
    own = await crm.secure.explain(crm.as_("eve"), "delete", "opportunity", "o1")
    assert own.allowed and "you own the record" in own.reasons
    manager = await crm.secure.explain(crm.as_("erin"), "edit", "opportunity", "o2")
    assert manager.allowed
    assert manager.reasons[-1].startswith("role hierarchy: owned by a user in a role below yours")
    auditor = await crm.secure.explain(crm.as_("ann"), "read", "opportunity", "o3")
    assert auditor.reasons == (
        "read on opportunity is granted by read_only",
        "viewAllRecords on opportunity reaches every record",
    )
    admin = await crm.secure.explain(crm.as_("carol"), "delete", "case", "k2")
    assert admin.allowed and admin.reasons[0] == "delete on case is granted by modify_all_data"


async def test_object_and_field_permissions_are_explained(crm: Hub) -> None:
    denied = await crm.secure.explain(crm.as_("sue"), "edit", "opportunity")
    assert not denied.allowed
    assert denied.reasons == (
        "no permission set of yours grants edit on opportunity (your permission sets: support)",
    )
    hidden = await crm.secure.explain(crm.as_("eve"), "read", "account", field="annual_revenue")
    assert not hidden.allowed
    assert hidden.reasons[-1] == (
        "account.annual_revenue is controlled: only revenue_viewer, sales_manager may read it"
    )
    viewer = await crm.secure.explain(crm.as_("ann"), "read", "account", field="annual_revenue")
    assert viewer.allowed
    assert viewer.reasons[-1] == "read on account.annual_revenue is granted by revenue_viewer"
    open_field = await crm.secure.explain(crm.as_("eve"), "edit", "account", field="phone")
    assert open_field.reasons[-1] == "account.phone is not restricted by field permissions"
    server = await crm.secure.explain(crm.as_("carol"), "edit", "account", field="owner")
    assert not server.allowed and server.reasons[-1] == "owner is set by the server"


async def test_rls_is_part_of_the_explanation(crm: Hub) -> None:
    sue = crm.as_("sue")
    own_closed = await crm.secure.explain(sue, "read", "case", "k4")
    assert own_closed.allowed
    assert own_closed.reasons[-1] == (
        "row-level security (agents_work_open_cases) lets this record through"
    )
    hidden = await crm.secure.explain(sue, "read", "case", "k2")
    assert not hidden.allowed
    assert hidden.reasons[-1] == "case record 'k2' is not visible to you"
    missing = await crm.secure.explain(sue, "read", "case", "no-such-case")
    assert missing.reasons == (
        *hidden.reasons[:-1],
        "case record 'no-such-case' is not visible to you",
    )


async def test_explain_agrees_with_what_the_guard_does(crm: Hub) -> None:
    ids = {"o1", "o2", "o3", "o4"}
    for user in USERS:
        actor = crm.as_(user)
        shown = await visible(crm, user, "opportunity")
        readable = {
            i for i in ids if (await crm.secure.explain(actor, "read", "opportunity", i)).allowed
        }
        assert readable == (shown if isinstance(shown, set) else set()), user
        editable = {
            i for i in ids if (await crm.secure.explain(actor, "edit", "opportunity", i)).allowed
        }
        changed = await outcomes(crm, user, "opportunity", ids, {"description": "checked"})
        assert editable == {i for i, outcome in changed.items() if outcome == "ok"}, user


async def test_a_check_policy_is_announced_for_writes(crm: Hub) -> None:
    decision = await crm.secure.explain(crm.as_("sue"), "edit", "case", "k1")
    assert decision.allowed
    assert decision.reasons[-1] == (
        "the written row must also pass the row-level security check of agents_work_open_cases"
    )


async def test_bad_questions_are_protocol_errors(crm: Hub) -> None:
    eve = crm.as_("eve")
    with pytest.raises(InvalidField):
        await crm.secure.explain(eve, "fly", "account")
    with pytest.raises(ObjectNotFound):
        await crm.secure.explain(eve, "read", "spaceship")
    with pytest.raises(InvalidField):
        await crm.secure.explain(eve, "read", "account", field="salary")
    with pytest.raises(InvalidField):
        await crm.secure.explain(eve, "create", "account", record_id="acme")
    system = await crm.secure.explain(Actor.system_actor(), "delete", "account", "acme")
    assert system.allowed
