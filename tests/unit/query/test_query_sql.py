"""build_select, build_count and build_aggregate against a real database."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from objectos.data.query import (
    MAX_SEARCH_TERMS,
    Aggregation,
    QuerySpec,
    build_aggregate,
    build_select,
    encode_cursor,
    parse_list_params,
    parse_query_ast,
    selected_fields,
)
from objectos.errors import InvalidField, InvalidFilter

from .conftest import ALL_IDS, COLUMNS, Db


def ids_of(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


# --------------------------------------------------------------------------
# Projection, sorting, offset paging


async def test_rest_list_parameters_end_to_end(db: Db) -> None:
    spec = parse_list_params(
        {"status": "open", "top": "2", "sort": "-amount", "select": "name,amount"}
    )
    rows = await db.select(spec)
    assert rows == [
        {"id": "r01", "name": "Alpha", "amount": 100.0},
        {"id": "r08", "name": "eta 50 off", "amount": 75.0},
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"amount": "100"}, ["r01", "r04", "r06"]),
        ({"tags": "blue", "active": "true"}, ["r01", "r08"]),
        ({"due": "2024-01-10", "owner": "alice"}, ["r01", "r06"]),
        ({"sort": "qty", "top": "3", "skip": "2"}, ["r03", "r04", "r05"]),
        ({"sort": "qty desc", "top": "2"}, ["r08", "r07"]),
        ({"filter": '["status", "=", "paid"]', "sort": "-qty"}, ["r06", "r02"]),
        ({"top": "0"}, []),
        ({"skip": "7"}, ["r08"]),
    ],
)
async def test_query_string_selects(db: Db, params: dict[str, str], expected: list[str]) -> None:
    assert ids_of(await db.select(parse_list_params(params))) == expected


async def test_query_string_text_that_does_not_fit_the_field_is_refused(db: Db) -> None:
    with pytest.raises(InvalidFilter) as caught:
        await db.select(parse_list_params({"qty": "many"}))
    assert caught.value.details == {
        "field": "qty",
        "operator": "$eq",
        "reason": "expected a number",
    }


async def test_default_projection_is_every_readable_field_but_passwords(db: Db) -> None:
    (row,) = await db.select(QuerySpec(where={"id": "r01"}))
    assert list(row) == ["id", *(name for name in COLUMNS if name not in ("id", "secret"))]
    assert row["tags"] == ["red", "blue"]


async def test_selected_fields_plus_sort_fields(db: Db) -> None:
    spec = QuerySpec(fields=["name", "id", "name"], order_by=[("qty", "desc")], limit=1)
    assert await db.select(spec) == [{"id": "r08", "name": "eta 50 off", "qty": 8}]
    assert selected_fields(spec, COLUMNS) == ["id", "name"]


@pytest.mark.parametrize(
    ("fields", "error", "details"),
    [
        (
            ["name", "nope"],
            InvalidField,
            {"field": "nope", "reason": "unknown field", "usage": "select"},
        ),
        (
            ["secret"],
            InvalidField,
            {"field": "secret", "reason": "password fields are write-only", "usage": "select"},
        ),
    ],
)
def test_select_errors(
    table: sa.Table, fields: list[str], error: type[Exception], details: dict[str, Any]
) -> None:
    with pytest.raises(error) as caught:
        build_select(QuerySpec(fields=fields), table, COLUMNS)
    assert caught.value.details == details  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("nope", "unknown field"),
        ("tags", "tags fields have no order"),
        ("meta", "json fields have no order"),
    ],
)
def test_sort_errors(table: sa.Table, field: str, reason: str) -> None:
    with pytest.raises(InvalidField) as caught:
        build_select(QuerySpec(order_by=[(field, "asc")]), table, COLUMNS)
    assert caught.value.details == {"field": field, "reason": reason, "usage": "sort"}


AMOUNT_ASC = ["r03", "r05", "r07", "r08", "r01", "r04", "r06", "r02"]


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # NULL is lowest on every dialect; ties fall back to id.
        ([("amount", "asc")], AMOUNT_ASC),
        ([("amount", "desc")], ["r02", "r01", "r04", "r06", "r08", "r07", "r05", "r03"]),
        (
            [("status", "asc"), ("qty", "desc")],
            ["r07", "r04", "r08", "r05", "r03", "r01", "r06", "r02"],
        ),
        (
            [("active", "desc"), ("id", "desc")],
            ["r08", "r06", "r03", "r01", "r07", "r05", "r02", "r04"],
        ),
        ([], sorted(ALL_IDS)),
    ],
)
async def test_sort_order(db: Db, order_by: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids_of(await db.select(QuerySpec(order_by=order_by, limit=None))) == expected


# --------------------------------------------------------------------------
# Cursor (keyset) paging


async def page_through(db: Db, spec: QuerySpec, page_size: int) -> list[str]:
    """Follow cursors to the end, fetching one extra row to learn if more exist."""
    seen: list[str] = []
    cursor = None
    for _ in range(len(ALL_IDS) + 2):
        page_spec = QuerySpec(
            where=spec.where, order_by=spec.order_by, limit=page_size + 1, cursor=cursor
        )
        rows = await db.select(page_spec)
        page = rows[:page_size]
        seen += ids_of(page)
        if len(rows) <= page_size:
            return seen
        cursor = encode_cursor(page[-1], spec.order_by)
    raise AssertionError("cursor paging did not terminate")


CURSOR_ORDERS = [
    [],
    [("amount", "asc")],  # ties and a NULL
    [("amount", "desc")],
    [("due", "desc"), ("name", "asc")],  # dates with a NULL
    [("active", "asc")],  # only three distinct values and a NULL
    [("created_at", "desc")],  # datetimes
    [("price", "asc")],  # decimals with a NULL
    [("opens", "desc")],  # times with a NULL
    [("status", "desc"), ("amount", "asc")],
    [("owner", "asc"), ("id", "desc")],
]


@pytest.mark.parametrize("order_by", CURSOR_ORDERS, ids=str)
@pytest.mark.parametrize("page_size", [1, 3])
async def test_cursor_paging_visits_every_row_once_in_order(
    db: Db, order_by: list[tuple[str, str]], page_size: int
) -> None:
    expected = ids_of(await db.select(QuerySpec(order_by=order_by, limit=None)))
    assert len(expected) == len(ALL_IDS)
    assert await page_through(db, QuerySpec(order_by=order_by), page_size) == expected


async def test_cursor_paging_with_a_filter(db: Db) -> None:
    spec = QuerySpec(where={"amount": {"$gte": 0}}, order_by=[("amount", "asc")])
    assert await page_through(db, spec, 2) == ["r07", "r08", "r01", "r04", "r06", "r02"]


async def test_cursor_is_stable_when_rows_are_inserted_before_it(db: Db) -> None:
    order = [("amount", "asc")]
    first = await db.select(QuerySpec(order_by=order, limit=3))
    assert ids_of(first) == AMOUNT_ASC[:3]
    async with db.engine.begin() as conn:
        row = {"id": "r00", "name": "new", "qty": 0, "amount": -100.0, "tags": None}
        await conn.execute(sa.insert(db.table), [row])
    rest = await db.select(
        QuerySpec(order_by=order, limit=None, cursor=encode_cursor(first[-1], order))
    )
    assert ids_of(rest) == AMOUNT_ASC[3:]


async def test_cursor_from_query_string(db: Db) -> None:
    order = [("qty", "desc")]
    first = await db.select(parse_list_params({"sort": "-qty", "top": "2"}))
    token = encode_cursor(first[-1], order)
    second = await db.select(parse_list_params({"sort": "-qty", "top": "2", "cursor": token}))
    assert ids_of(first) + ids_of(second) == ["r08", "r07", "r06", "r05"]


async def test_cursor_from_query_ast_row(db: Db) -> None:
    spec = parse_query_ast(
        {
            "orderBy": [{"field": "qty", "order": "desc"}],
            "cursor": {"qty": 6, "id": "r06"},
            "top": 2,
        }
    )
    assert ids_of(await db.select(spec)) == ["r05", "r04"]


def test_cursor_errors(table: sa.Table) -> None:
    token = encode_cursor({"id": "r01", "amount": 1.0}, [("amount", "asc")])
    with pytest.raises(InvalidFilter) as caught:
        build_select(QuerySpec(order_by=[("qty", "asc")], cursor=token), table, COLUMNS)
    assert caught.value.details["reason"] == "cursor was issued for a different sort order"
    forged = encode_cursor({"id": "r01", "due": "not a date"}, [("due", "asc")])
    with pytest.raises(InvalidFilter) as caught:
        build_select(QuerySpec(order_by=[("due", "asc")], cursor=forged), table, COLUMNS)
    assert caught.value.details == {"parameter": "cursor", "reason": "bad value for 'due'"}
    with pytest.raises(InvalidFilter):
        build_select(QuerySpec(cursor="%%%"), table, COLUMNS)


# --------------------------------------------------------------------------
# Count


async def test_count_ignores_paging(db: Db) -> None:
    spec = parse_list_params({"status": "open", "top": "1", "skip": "1", "count": "true"})
    assert len(await db.select(spec)) == 1
    assert await db.count(spec) == 4
    assert await db.count(QuerySpec()) == 8
    assert await db.count(QuerySpec(where={"tags": {"$in": []}})) == 0


# --------------------------------------------------------------------------
# Search


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("alpha", {"r01"}),
        ("ALPHA", {"r01"}),
        ("case", {"r07"}),  # description
        ("50%", {"r02"}),  # % is literal
        ("under_", {"r03"}),  # _ is literal
        ("a/b", {"r04"}),  # the escape character is literal
        ("fifty eta", {"r08"}),  # every word, each in any field
        ("zeta alpha", set()),
        ("'; DROP", {"r05"}),
        ("nothing-like-this", set()),
    ],
)
async def test_search(db: Db, search: str, expected: set[str]) -> None:
    assert set(ids_of(await db.select(parse_list_params({"search": search})))) == expected


async def test_search_any_word_and_chosen_fields(db: Db) -> None:
    any_word = parse_query_ast({"search": {"query": "zeta alpha", "operator": "or"}})
    assert set(ids_of(await db.select(any_word))) == {"r01", "r07"}
    in_status = parse_query_ast({"search": {"query": "PAI", "fields": ["status"]}})
    assert set(ids_of(await db.select(in_status))) == {"r02", "r06"}
    assert await db.count(in_status) == 2


async def test_search_combines_with_the_filter(db: Db) -> None:
    spec = parse_list_params({"search": "a", "status": "open"})
    assert set(ids_of(await db.select(spec))) == {"r01", "r03", "r05", "r08"}
    spec = parse_list_params({"search": "a", "status": "paid"})
    assert set(ids_of(await db.select(spec))) == {"r02"}


def test_search_errors(table: sa.Table) -> None:
    unsearchable = {name: info for name, info in COLUMNS.items() if not info.searchable}
    with pytest.raises(InvalidFilter) as caught:
        build_select(QuerySpec(search="x"), table, unsearchable)
    assert caught.value.details == {"parameter": "search", "reason": "no searchable fields"}
    with pytest.raises(InvalidField):
        build_select(QuerySpec(search="x", search_fields=["meta"]), table, COLUMNS)
    with pytest.raises(InvalidField):
        build_select(QuerySpec(search="x", search_fields=["secret"]), table, COLUMNS)
    with pytest.raises(InvalidFilter) as caught:
        build_select(QuerySpec(search=" ".join(["w"] * (MAX_SEARCH_TERMS + 1))), table, COLUMNS)
    assert caught.value.details["reason"] == "too many search terms"


# --------------------------------------------------------------------------
# Row-level security through extra_where


ESCAPES = [
    {"$or": [{"owner": "bob"}, {"qty": {"$gte": 0}}]},
    [["owner", "=", "bob"], "or", ["qty", ">", 0]],
    {"$or": [{"owner": {"$ne": "alice"}}, {"owner": "alice"}]},
    {"$not": {"owner": "alice"}},
    {"$or": [{"owner": {"$null": True}}, {"$not": {"owner": {"$null": True}}}]},
]


@pytest.mark.parametrize("where", ESCAPES)
async def test_extra_where_cannot_be_escaped_by_the_user_filter(db: Db, where: Any) -> None:
    only_alice = db.table.c.owner == "alice"
    spec = QuerySpec(where=where, limit=None)
    rows = await db.select(spec, extra_where=only_alice)
    assert set(ids_of(rows)) <= {"r01", "r03", "r06"}
    assert await db.count(spec, extra_where=only_alice) == len(rows)
    groups = await db.aggregate(
        QuerySpec(where=where, aggregations=[Aggregation("count", None, "n")], group_by=["owner"]),
        extra_where=only_alice,
    )
    assert [g["owner"] for g in groups] in ([], ["alice"])


async def test_extra_where_applies_to_search_cursor_and_offset(db: Db) -> None:
    only_alice = db.table.c.owner == "alice"
    spec = QuerySpec(
        search="a", search_operator="or", order_by=[("qty", "desc")], limit=1, offset=1
    )
    # Alice's rows with an "a": r03 (qty 3) and r01 (qty 1); r06 has none.
    assert ids_of(await db.select(spec, extra_where=only_alice)) == ["r01"]
    token = encode_cursor({"id": "r06", "qty": 6}, [("qty", "desc")])
    spec = QuerySpec(order_by=[("qty", "desc")], cursor=token, limit=None)
    assert ids_of(await db.select(spec, extra_where=only_alice)) == ["r03", "r01"]


# --------------------------------------------------------------------------
# Aggregation


async def test_aggregations_grouped(db: Db) -> None:
    spec = parse_query_ast(
        {
            "groupBy": ["status"],
            "aggregations": [
                {"function": "count", "alias": "n"},
                {"function": "count", "field": "amount", "alias": "with_amount"},
                {"function": "sum", "field": "amount", "alias": "total"},
                {"function": "avg", "field": "qty", "alias": "mean_qty"},
                {"function": "min", "field": "qty", "alias": "low"},
                {"function": "max", "field": "due", "alias": "latest"},
                {"function": "count_distinct", "field": "owner", "alias": "owners"},
                {"function": "count", "alias": "active_n", "filter": {"active": True}},
            ],
        }
    )
    rows = await db.aggregate(spec)
    summary = [
        (
            r["status"],
            r["n"],
            r["with_amount"],
            float(r["total"] or 0),
            float(r["mean_qty"]),
            r["low"],
            str(r["latest"]),
            r["owners"],
            r["active_n"],
        )
        for r in rows
    ]
    assert summary == [
        (None, 1, 1, 0.0, 7.0, 7, "2024-01-20", 0, 0),
        ("closed", 1, 1, 100.0, 4.0, 4, "2024-03-01", 1, 0),
        ("open", 4, 3, 170.0, 4.25, 1, "2024-01-15", 3, 3),
        ("paid", 2, 2, 350.5, 4.0, 2, "2024-02-15", 2, 1),
    ]


async def test_aggregations_without_groups(db: Db) -> None:
    spec = QuerySpec(
        where={"amount": {"$null": False}},
        aggregations=[Aggregation("count", None, "n"), Aggregation("sum", "amount", "total")],
    )
    assert [(r["n"], float(r["total"])) for r in await db.aggregate(spec)] == [(7, 620.5)]


async def test_aggregate_sorted_by_alias_then_groups(db: Db) -> None:
    spec = QuerySpec(
        group_by=["status"],
        aggregations=[Aggregation("count", None, "n")],
        order_by=[("n", "desc")],
    )
    rows = await db.aggregate(spec)
    assert [(r["status"], r["n"]) for r in rows] == [
        ("open", 4),
        ("paid", 2),
        (None, 1),
        ("closed", 1),
    ]


async def test_group_by_two_fields_with_filter_and_paging(db: Db) -> None:
    spec = QuerySpec(
        where={"status": {"$in": ["open", "paid"]}},
        group_by=["status", "owner"],
        aggregations=[Aggregation("sum", "qty", "qty")],
        limit=3,
        offset=1,
    )
    rows = await db.aggregate(spec)
    assert [(r["status"], r["owner"], r["qty"]) for r in rows] == [
        ("open", "bob", 5),
        ("open", "carol", 8),
        ("paid", "alice", 6),
    ]


@pytest.mark.parametrize(
    ("spec", "error", "details"),
    [
        (QuerySpec(), InvalidFilter, {"key": "aggregations", "reason": "nothing to aggregate"}),
        (
            QuerySpec(aggregations=[Aggregation("sum", "name", "s")]),
            InvalidFilter,
            {"field": "name", "function": "sum", "reason": "sum needs a number field"},
        ),
        (
            QuerySpec(aggregations=[Aggregation("max", "tags", "m")]),
            InvalidFilter,
            {"field": "tags", "function": "max", "reason": "max needs a single-valued field"},
        ),
        (
            QuerySpec(aggregations=[Aggregation("sum", "nope", "s")]),
            InvalidField,
            {"field": "nope", "reason": "unknown field", "usage": "aggregation"},
        ),
        (
            QuerySpec(group_by=["nope"]),
            InvalidField,
            {"field": "nope", "reason": "unknown field", "usage": "groupBy"},
        ),
        (
            QuerySpec(group_by=["tags"]),
            InvalidField,
            {"field": "tags", "reason": "tags fields have no order", "usage": "groupBy"},
        ),
        (
            QuerySpec(group_by=["status"], aggregations=[Aggregation("count", None, "status")]),
            InvalidFilter,
            {"alias": "status", "reason": "alias collides with groupBy"},
        ),
        (
            QuerySpec(group_by=["status"], order_by=[("qty", "asc")]),
            InvalidField,
            {"field": "qty", "reason": "not a group field or alias", "usage": "sort"},
        ),
        (
            QuerySpec(group_by=["status"], cursor="abc"),
            InvalidFilter,
            {"key": "cursor", "reason": "not supported with aggregations"},
        ),
        (
            QuerySpec(aggregations=[Aggregation("count", None, "n", {"qty": {"$gt": "x"}})]),
            InvalidFilter,
            {"field": "qty", "operator": "$gt", "reason": "expected a number"},
        ),
    ],
)
def test_aggregate_errors(
    table: sa.Table, spec: QuerySpec, error: type[Exception], details: dict[str, Any]
) -> None:
    with pytest.raises(error) as caught:
        build_aggregate(spec, table, COLUMNS)
    assert caught.value.details == details  # type: ignore[attr-defined]
