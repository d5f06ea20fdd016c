"""Attempts to get past the guard: hidden fields, predicate escapes, injection, forged writes.

Every refusal is a protocol error (code, field, reason) and leaves the
database and the change log as they were.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from objectos.data import Actor
from objectos.data.query import QuerySpec, parse_list_params, parse_query_ast
from objectos.errors import (
    FieldNotAccessible,
    InvalidField,
    InvalidFilter,
    ObjectOSError,
    PermissionDenied,
    RecordNotAccessible,
    ValidationError,
)
from objectos.protocol.permission import FieldPermission

from .conftest import SEED, Hub

HIDDEN_FIELD_QUERIES: dict[str, dict[str, Any]] = {
    "filter": {"where": {"annual_revenue": {"$gt": 0}}},
    "filter inside $or": {"where": {"$or": [{"name": "x"}, {"annual_revenue": {"$gt": 0}}]}},
    "filter inside $not": {"where": {"$not": {"annual_revenue": {"$lt": 1}}}},
    "$field reference": {"where": {"employees": {"$lt": {"$field": "annual_revenue"}}}},
    "sort": {"orderBy": [{"field": "annual_revenue", "order": "desc"}]},
    "select": {"fields": ["name", "annual_revenue"]},
    "search fields": {"search": {"query": "5000000", "fields": ["annual_revenue"]}},
    "groupBy": {"groupBy": ["annual_revenue"], "aggregations": [{"function": "count"}]},
    "aggregation": {"aggregations": [{"function": "max", "field": "annual_revenue"}]},
    "aggregation filter": {
        "aggregations": [{"function": "count", "filter": {"annual_revenue": {"$gt": 0}}}]
    },
}


async def test_a_hidden_field_cannot_be_used_in_any_part_of_a_query(crm: Hub) -> None:
    refusals, manager_ok = {}, {}
    for usage, query in HIDDEN_FIELD_QUERIES.items():
        spec = parse_query_ast(query)
        run = crm.secure.aggregate if spec.aggregations or spec.group_by else crm.secure.find
        try:
            await run("account", spec, actor=crm.as_("eve"))
            refusals[usage] = None
        except ObjectOSError as exc:
            assert "5000000" not in exc.message
            fields = [e.field for e in exc.field_errors]
            refusals[usage] = (exc.code, exc.status, exc.details.get("fields"), fields)
        # A manager runs the very same query.
        manager_ok[usage] = await run("account", parse_query_ast(query), actor=crm.as_("erin"))
    refused = ("field_not_accessible", 403, ["annual_revenue"], ["annual_revenue"])
    assert refusals == dict.fromkeys(HIDDEN_FIELD_QUERIES, refused)
    assert all(result is not None for result in manager_ok.values())


async def test_hidden_fields_are_refused_in_count_get_and_expand(crm: Hub) -> None:
    eve = crm.as_("eve")
    with pytest.raises(FieldNotAccessible):
        await crm.secure.count("account", {"annual_revenue": {"$gte": 1}}, actor=eve)
    with pytest.raises(FieldNotAccessible):
        await crm.secure.find_one("account", "acme", fields=["annual_revenue"], actor=eve)
    nested = parse_query_ast({"expand": {"account": {"fields": ["name", "annual_revenue"]}}})
    with pytest.raises(FieldNotAccessible) as refused:
        await crm.secure.find("opportunity", nested, actor=eve)
    assert refused.value.details["object"] == "account"
    nested_filter = parse_query_ast({"expand": {"account": {"where": {"annual_revenue": 5}}}})
    with pytest.raises(FieldNotAccessible):
        await crm.secure.find("opportunity", nested_filter, actor=eve)


async def test_unknown_fields_stay_invalid_field_not_forbidden(crm: Hub) -> None:
    with pytest.raises(InvalidField) as unknown:
        await crm.secure.find(
            "account", parse_list_params({"sort": "salary"}), actor=crm.as_("eve")
        )
    assert not isinstance(unknown.value, FieldNotAccessible)
    assert unknown.value.code == "invalid_field"


async def test_search_never_looks_into_hidden_fields(crm: Hub) -> None:
    config = crm.permissions.config.model_copy(deep=True)
    rep = next(ps for ps in config.permissionSets if ps.name == "sales_rep")
    rep.fields["account.description"] = FieldPermission(readable=False)
    secure = crm.with_config(config)  # description is now controlled, and no one is granted it
    search = parse_list_params({"search": "rockets"})  # only in acme's description
    assert (await secure.find("account", search, actor=crm.as_("eve"))).records == []
    admin = await secure.find(
        "account", parse_list_params({"search": "rockets"}), actor=crm.as_("carol")
    )
    assert [r["id"] for r in admin.records] == ["acme"]


async def test_or_in_a_filter_cannot_widen_the_record_predicate(crm: Hub) -> None:
    escape = {
        "where": {
            "$or": [
                {"owner": "wes"},
                {"id": {"$ne": "nothing"}},
                {"$not": {"owner": {"$eq": "eve"}}},
            ]
        }
    }
    page = await crm.secure.find("opportunity", parse_query_ast(escape), actor=crm.as_("eve"))
    assert {r["id"] for r in page.records} == {"o1", "o2", "o4"}
    assert await crm.secure.count("opportunity", escape["where"], actor=crm.as_("eve")) == 3
    legacy = parse_list_params({"filter": '[["owner", "=", "wes"], "or", ["owner", "!=", "wes"]]'})
    page = await crm.secure.find("opportunity", legacy, actor=crm.as_("sue"))
    assert {r["id"] for r in page.records} == {"o3"}


METACHARACTER_VALUES = [
    {"name": "x' OR '1'='1"},
    {"filter": '{"name": {"$contains": "%"}}'},
    {"filter": '{"owner": {"$in": ["eve\\u0027 OR 1=1 --", "wes"]}}'},
    {"filter": json.dumps({"owner": {"$in": ["eve' OR 1=1 --", "wes"]}})},
    {"search": "%' OR 1=1 --"},
    {"search": "_"},
]


async def test_sql_metacharacters_in_values_are_plain_text(crm: Hub) -> None:
    found = {}
    for params in METACHARACTER_VALUES:
        page = await crm.secure.find("opportunity", parse_list_params(params), actor=crm.as_("eve"))
        found[str(params)] = page.records
    assert found == {str(params): [] for params in METACHARACTER_VALUES}


METACHARACTER_NAMES: list[tuple[dict[str, str], type[ObjectOSError]]] = [
    ({"filter": '{"name; DROP TABLE opportunity; --": 1}'}, InvalidField),
    ({"sort": "amount; DROP TABLE opportunity"}, InvalidFilter),
    ({"sort": "amount;DROP_TABLE_opportunity"}, InvalidField),
    ({"select": 'id") FROM opportunity --'}, InvalidField),
    ({"filter": '{"amount": {"$or": 1}}'}, InvalidFilter),
    ({"expand": "account); DELETE FROM account; --"}, InvalidField),
]


async def test_sql_metacharacters_in_field_names_are_refused(crm: Hub) -> None:
    raised: dict[str, type[ObjectOSError] | None] = {}
    for params, _ in METACHARACTER_NAMES:
        try:
            await crm.secure.find("opportunity", parse_list_params(params), actor=crm.as_("eve"))
            raised[str(params)] = None
        except ObjectOSError as exc:
            raised[str(params)] = type(exc)
    assert raised == {str(params): error for params, error in METACHARACTER_NAMES}
    assert await crm.data.count("opportunity", actor=SEED) == 4
    assert await crm.data.count("account", actor=SEED) == 3


async def test_clients_cannot_set_server_fields(crm: Hub) -> None:
    eve = crm.as_("eve")
    latest = await crm.data.change_log.latest()
    before = await crm.stored("opportunity", "o1")
    for forged in (
        {"owner": "eve"},
        {"created_by": "carol"},
        {"version": 99},
        {"updated_at": "2020-01-01T00:00:00Z"},
    ):
        with pytest.raises(FieldNotAccessible) as refused:
            await crm.secure.insert(
                "opportunity", {"name": "Mine", "account": "acme", **forged}, actor=eve
            )
        assert [e.field for e in refused.value.field_errors] == list(forged)
        assert refused.value.field_errors[0].message.endswith("is set by the server")
        with pytest.raises(FieldNotAccessible):
            await crm.secure.update("opportunity", "o1", {"amount": 1, **forged}, actor=eve)
    assert await crm.stored("opportunity", "o1") == before
    assert await crm.data.count("opportunity", actor=SEED) == 4
    assert await crm.data.change_log.latest() == latest


async def test_fields_that_are_not_editable_are_refused_on_create_and_update(crm: Hub) -> None:
    eve, ann = crm.as_("eve"), crm.as_("ann")
    with pytest.raises(FieldNotAccessible) as refused:
        await crm.secure.insert(
            "account", {"name": "Hooli", "annual_revenue": 10, "phone": "+1 555 0101"}, actor=eve
        )
    assert [(e.field, e.code) for e in refused.value.field_errors] == [
        ("annual_revenue", "field_not_accessible")
    ]
    assert await crm.data.count("account", {"name": "Hooli"}, actor=SEED) == 0
    with pytest.raises(PermissionDenied):  # ann reads revenue but may not edit accounts at all
        await crm.secure.update("account", "acme", {"annual_revenue": 1}, actor=ann)
    assert (await crm.stored("account", "acme"))["annual_revenue"] == 5_000_000


async def test_batch_with_a_forbidden_record_applies_nothing(crm: Hub) -> None:
    eve = crm.as_("eve")
    latest = await crm.data.change_log.latest()
    operations = [
        {"operation": "update", "id": "o1", "data": {"amount": 1}},  # hers
        {"operation": "update", "id": "o2", "data": {"amount": 2}},  # shared read-only
        {"operation": "create", "data": {"name": "New", "account": "acme"}},
    ]
    results = await crm.secure.batch("opportunity", operations, actor=eve, all_or_none=True)
    assert [(r.status, r.error.code if r.error else None) for r in results] == [
        ("rolled_back", None),
        ("failed", "record_not_accessible"),
        ("rolled_back", None),
    ]
    assert (await crm.stored("opportunity", "o1"))["amount"] == 50_000
    assert (await crm.stored("opportunity", "o2"))["amount"] == 200_000
    assert await crm.data.count("opportunity", actor=SEED) == 4
    assert await crm.data.change_log.latest() == latest

    partial = await crm.secure.batch("opportunity", operations, actor=eve, all_or_none=False)
    assert [r.status for r in partial] == ["applied", "failed", "applied"]
    assert partial[1].error is not None and partial[1].error.code == "record_not_accessible"
    assert (await crm.stored("opportunity", "o1"))["amount"] == 1
    assert (await crm.stored("opportunity", "o2"))["amount"] == 200_000
    assert "probability" in (partial[0].record or {})  # readable fields come back


async def test_each_kind_of_forbidden_batch_operation_rolls_the_batch_back(crm: Hub) -> None:
    forbidden: list[tuple[dict[str, Any], str]] = [
        ({"operation": "delete", "id": "o3"}, "record_not_found"),  # invisible
        ({"operation": "delete", "id": "o4"}, "record_not_accessible"),  # read-only
        ({"operation": "update", "id": "o1", "data": {"probability": 90}}, "field_not_accessible"),
        ({"operation": "update", "id": "o1", "data": {"owner": "eve"}}, "field_not_accessible"),
        ({"operation": "upsert", "id": "o3", "data": {"amount": 5}}, "record_not_found"),
        ({"operation": "upsert", "id": "o2", "data": {"amount": 5}}, "record_not_accessible"),
    ]
    latest = await crm.data.change_log.latest()
    seen = []
    for operation, _ in forbidden:
        operations = [{"operation": "update", "id": "o1", "data": {"amount": 7}}, operation]
        results = await crm.secure.batch("opportunity", operations, actor=crm.as_("eve"))
        code = results[1].error.code if results[1].error else None
        seen.append((operation, [r.status for r in results], code))
    assert seen == [(op, ["rolled_back", "failed"], code) for op, code in forbidden]
    assert await crm.data.change_log.latest() == latest
    assert (await crm.stored("opportunity", "o1"))["amount"] == 50_000


async def test_batch_upserts_and_deletes_follow_record_access(crm: Hub) -> None:
    eve = crm.as_("eve")
    results = await crm.secure.batch(
        "opportunity",
        [
            {"operation": "upsert", "id": "o1", "data": {"amount": 11}},
            {"operation": "upsert", "id": "o9", "data": {"name": "Fresh", "account": "acme"}},
            {"operation": "delete", "id": "o1"},
        ],
        actor=eve,
    )
    assert [r.status for r in results] == ["applied", "applied", "applied"]
    stored = await crm.stored("opportunity", "o9")
    assert (stored["owner"], stored["created_by"]) == ("eve", "eve")


async def test_writes_cannot_link_to_records_the_writer_cannot_reach(crm: Hub) -> None:
    with pytest.raises(ValidationError) as invisible:
        await crm.secure.insert(
            "opportunity_line_item",
            {"opportunity": "o3", "product": "Sneaky"},
            actor=crm.as_("eve"),
        )
    assert [(e.field, e.code) for e in invisible.value.field_errors] == [
        ("opportunity", "invalid_reference")
    ]
    # ed reads o1 (a team rule) but may not edit it; its details are controlled by it.
    with pytest.raises(ValidationError):
        await crm.secure.insert(
            "opportunity_line_item", {"opportunity": "o1", "product": "Sneaky"}, actor=crm.as_("ed")
        )
    assert await crm.data.count("opportunity_line_item", actor=SEED) == 2
    created = await crm.secure.insert(
        "opportunity_line_item", {"opportunity": "o1", "product": "Fine"}, actor=crm.as_("eve")
    )
    assert created["opportunity"] == "o1"


async def test_an_expanded_lookup_to_an_invisible_record_is_not_revealed(crm: Hub) -> None:
    config = crm.permissions.config.model_copy(deep=True)
    config.sharing[0].organizationDefaults["account"] = "private"
    secure = crm.with_config(config)
    for spec in (
        parse_list_params({"expand": "account", "sort": "name"}),
        parse_query_ast({"expand": {"account": {"fields": ["name"]}}, "orderBy": "name"}),
    ):
        page = await secure.find("opportunity", spec, actor=crm.as_("eve"))
        accounts = {r["id"]: r["account"] for r in page.records}
        assert accounts["o1"]["name"] == "Acme"  # eve owns acme
        assert accounts["o4"] == "initech"  # erin's account: the id only, nothing of it
    one = await secure.find_one("opportunity", "o4", expand=["account"], actor=crm.as_("eve"))
    assert one["account"] == "initech"


async def test_rls_check_refuses_rows_the_policy_forbids(crm: Hub) -> None:
    sue = crm.as_("sue")
    latest = await crm.data.change_log.latest()
    with pytest.raises(RecordNotAccessible) as created:
        await crm.secure.insert(
            "case", {"subject": "Done already", "status": "closed", "resolution": "x"}, actor=sue
        )
    assert created.value.details["policies"] == ["agents_work_open_cases"]
    with pytest.raises(RecordNotAccessible):
        await crm.secure.update("case", "k1", {"status": "closed", "resolution": "x"}, actor=sue)
    results = await crm.secure.batch(
        "case",
        [
            {"operation": "update", "id": "k5", "data": {"priority": "high"}},
            {"operation": "update", "id": "k1", "data": {"status": "closed", "resolution": "x"}},
        ],
        actor=sue,
    )
    assert [r.status for r in results] == ["rolled_back", "failed"]
    assert await crm.data.change_log.latest() == latest
    assert (await crm.stored("case", "k1"))["status"] == "new"
    # What the policy allows goes through, and its lead may close the case.
    await crm.secure.update("case", "k1", {"status": "working"}, actor=sue)
    await crm.secure.update(
        "case", "k1", {"status": "closed", "resolution": "done"}, actor=crm.as_("sam")
    )


async def test_bad_values_in_a_checked_write_are_a_validation_error(crm: Hub) -> None:
    with pytest.raises(ValidationError) as bad:
        await crm.secure.update("case", "k1", {"status": "melted"}, actor=crm.as_("sue"))
    assert [e.field for e in bad.value.field_errors] == ["status"]


async def test_callers_without_permissions_get_nothing(crm: Hub) -> None:
    for actor in (crm.as_("nobody"), Actor(user_id=None, roles=frozenset({"ceo"}))):
        with pytest.raises(PermissionDenied) as denied:
            await crm.secure.find("account", actor=actor)
        assert denied.value.details == {"object": "account", "action": "read"}
        with pytest.raises(PermissionDenied):
            await crm.secure.insert("account", {"name": "Sneaky"}, actor=actor)
    assert await crm.data.count("account", actor=SEED) == 3


async def test_a_callers_own_scope_is_added_not_substituted(crm: Hub) -> None:
    def only_acme(object_name: str, table: Any) -> Any:
        return {"account": "acme"} if object_name == "opportunity" else None

    page = await crm.secure.find("opportunity", QuerySpec(), actor=crm.as_("erin"), scope=only_acme)
    assert {r["id"] for r in page.records} == {"o1", "o2"}  # erin's o4 is not acme's
