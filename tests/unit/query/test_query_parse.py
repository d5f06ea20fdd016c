"""parse_list_params and parse_query_ast: two syntaxes, one QuerySpec."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from objectos.data.filter import ParamText
from objectos.data.query import (
    DEFAULT_LIMIT,
    MAX_EXPAND_DEPTH,
    MAX_LIMIT,
    Aggregation,
    QuerySpec,
    decode_cursor,
    encode_cursor,
    parse_list_params,
    parse_query_ast,
)
from objectos.errors import InvalidFilter

# --------------------------------------------------------------------------
# REST query string


def test_defaults() -> None:
    spec = parse_list_params({})
    assert spec == QuerySpec()
    assert spec.limit == DEFAULT_LIMIT and spec.offset == 0 and spec.where is None


def test_every_parameter() -> None:
    spec = parse_list_params(
        {
            "top": "10",
            "skip": "20",
            "select": "name, amount,,status",
            "sort": "name,-created_at",
            "filter": '{"amount": {"$gt": 5}}',
            "expand": "owner,account",
            "search": "  acme  ",
            "count": "true",
        }
    )
    assert spec.limit == 10 and spec.offset == 20
    assert spec.fields == ["name", "amount", "status"]
    assert spec.order_by == [("name", "asc"), ("created_at", "desc")]
    assert spec.where == {"amount": {"$gt": 5}}
    assert spec.expand == ["owner", "account"]
    assert spec.search == "acme"
    assert spec.count is True


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": "5", "offset": "7"}, (5, 7)),
        ({"$top": "5", "$skip": "7"}, (5, 7)),
        ({"top": "0"}, (0, 0)),
        ({"top": str(MAX_LIMIT)}, (MAX_LIMIT, 0)),
    ],
)
def test_paging_aliases(params: dict[str, str], expected: tuple[int, int]) -> None:
    spec = parse_list_params(params)
    assert (spec.limit, spec.offset) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name asc,created_at desc", [("name", "asc"), ("created_at", "desc")]),
        ("name ASC, created_at DESCENDING", [("name", "asc"), ("created_at", "desc")]),
        ("+name,-amount", [("name", "asc"), ("amount", "desc")]),
        ("", []),
    ],
)
def test_sort_forms(sort: str, expected: list[tuple[str, str]]) -> None:
    assert parse_list_params({"sort": sort}).order_by == expected
    assert parse_list_params({"orderBy": sort}).order_by == expected


@pytest.mark.parametrize("key", ["filter", "filters", "$filter", "where"])
def test_filter_spellings(key: str) -> None:
    assert parse_list_params({key: '["amount", ">", 5]'}).where == {"amount": {"$gt": 5}}


def test_populate_and_fields_aliases() -> None:
    spec = parse_list_params({"populate": "owner", "fields": "name"})
    assert spec.expand == ["owner"] and spec.fields == ["name"]


def test_flat_parameters_become_equalities_merged_with_the_filter() -> None:
    spec = parse_list_params(
        {"status": "open", "filter": '{"$or": [{"a": 1}, {"b": 2}]}', "owner": "u1", "top": "5"}
    )
    assert spec.where == {
        "$and": [
            {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]},
            {"status": {"$eq": "open"}},
            {"owner": {"$eq": "u1"}},
        ]
    }
    # The text is marked, so the compiler converts it to the field's type.
    assert isinstance(spec.where["$and"][1]["status"]["$eq"], ParamText)


def test_reserved_names_are_not_equalities() -> None:
    spec = parse_list_params({"count": "false", "cursor": "", "search": ""})
    assert spec.where is None and spec.count is False and spec.cursor is None


def test_the_http_layer_can_reserve_its_own_parameters() -> None:
    spec = parse_list_params({"access_token": "x", "status": "open"}, reserved=["access_token"])
    assert spec.where == {"status": {"$eq": "open"}}


@pytest.mark.parametrize(
    ("params", "details"),
    [
        (
            {"top": str(MAX_LIMIT + 1)},
            {"parameter": "top", "reason": f"must be between 0 and {MAX_LIMIT}", "max": MAX_LIMIT},
        ),
        ({"top": "-1"}, {"parameter": "top", "reason": "expected a whole number"}),
        ({"top": "ten"}, {"parameter": "top", "reason": "expected a whole number"}),
        ({"limit": "1.5"}, {"parameter": "limit", "reason": "expected a whole number"}),
        ({"skip": "x"}, {"parameter": "skip", "reason": "expected a whole number"}),
        ({"top": "5", "limit": "6"}, {"parameter": "limit", "reason": "conflicts with top"}),
        ({"count": "perhaps"}, {"parameter": "count", "reason": "expected true or false"}),
        ({"sort": "name up"}, {"parameter": "sort", "reason": "malformed sort entry"}),
        (
            {"sort": "-name desc"},
            {"parameter": "sort", "field": "name", "reason": "malformed sort entry"},
        ),
        ({"sort": "a,b,-a"}, {"parameter": "sort", "field": "a", "reason": "duplicate sort field"}),
        ({"$inlinecount": "x"}, {"parameter": "$inlinecount", "reason": "unknown parameter"}),
        (
            {"cursor": "abc", "skip": "5"},
            {"parameter": "cursor", "reason": "cursor paging replaces skip"},
        ),
        ({"filter": "{bad"}, {"reason": "invalid JSON"}),
    ],
)
def test_parameter_errors(params: dict[str, str], details: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_list_params(params)
    assert caught.value.details == details


def test_same_value_under_two_spellings_is_fine() -> None:
    assert parse_list_params({"top": "5", "limit": "5"}).limit == 5


# --------------------------------------------------------------------------
# QueryAST


def test_full_query_ast() -> None:
    spec = parse_query_ast(
        {
            "object": "invoice",
            "fields": ["name", "amount"],
            "where": {"status": "paid"},
            "orderBy": [{"field": "amount", "order": "desc"}, {"field": "name"}],
            "limit": 20,
            "offset": 40,
            "search": {"query": "acme", "fields": ["name"], "operator": "or", "fuzzy": True},
            "expand": ["owner"],
            "count": True,
        }
    )
    assert spec.object == "invoice"
    assert spec.fields == ["name", "amount"]
    assert spec.where == {"status": {"$eq": "paid"}}
    assert spec.order_by == [("amount", "desc"), ("name", "asc")]
    assert (spec.limit, spec.offset) == (20, 40)
    assert (spec.search, spec.search_fields, spec.search_operator) == ("acme", ["name"], "or")
    assert spec.expand == ["owner"] and spec.count is True


def test_ast_aliases_and_legacy_shapes() -> None:
    spec = parse_query_ast(
        {"top": 5, "skip": 10, "filters": [["a", "=", 1]], "sort": "-a", "search": "x y"}
    )
    assert (spec.limit, spec.offset) == (5, 10)
    assert spec.where == {"a": {"$eq": 1}}
    assert spec.order_by == [("a", "desc")]
    assert spec.search == "x y" and spec.search_fields is None
    assert parse_query_ast({"sort": [["a", "desc"]]}).order_by == [("a", "desc")]


def test_expand_map_carries_nested_queries() -> None:
    spec = parse_query_ast({"expand": {"owner": {"fields": ["name"]}, "account": True, "tags": {}}})
    assert spec.expand == ["owner", "account", "tags"]
    assert spec.expand_specs["owner"].fields == ["name"]
    assert set(spec.expand_specs) == {"owner"}


def test_expand_depth_limit() -> None:
    query: dict[str, Any] = {"fields": ["id"]}
    for _ in range(MAX_EXPAND_DEPTH):
        query = {"expand": {"parent": query}}
    parse_query_ast(query)
    with pytest.raises(InvalidFilter) as caught:
        parse_query_ast({"expand": {"parent": query}})
    assert caught.value.details["reason"] == "nesting too deep"


def test_aggregations() -> None:
    spec = parse_query_ast(
        {
            "groupBy": ["status"],
            "aggregations": [
                {"function": "count"},
                {"function": "SUM", "field": "amount", "alias": "total"},
                {"function": "count", "field": "owner", "distinct": True},
                {"function": "avg", "field": "qty", "filter": {"active": True}},
            ],
        }
    )
    assert spec.group_by == ["status"]
    assert spec.aggregations == [
        Aggregation("count", None, "count"),
        Aggregation("sum", "amount", "total"),
        Aggregation("count_distinct", "owner", "count_distinct_owner"),
        Aggregation("avg", "qty", "avg_qty", {"active": {"$eq": True}}),
    ]


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"wherever": {}}, {"key": "wherever", "reason": "unknown key"}),
        ({"joins": []}, {"key": "joins", "reason": "not supported"}),
        ({"having": {}}, {"key": "having", "reason": "not supported"}),
        ({"limit": 5, "top": 6}, {"key": "top", "reason": "conflicts with limit"}),
        ({"where": {}, "filter": {}}, {"key": "filter", "reason": "conflicts with where"}),
        (
            {"limit": MAX_LIMIT + 1},
            {
                "parameter": "limit",
                "reason": f"must be between 0 and {MAX_LIMIT}",
                "max": MAX_LIMIT,
            },
        ),
        ({"limit": "five"}, {"parameter": "limit", "reason": "expected a whole number"}),
        ({"limit": 2.5}, {"parameter": "limit", "reason": "expected a whole number"}),
        ({"limit": True}, {"parameter": "limit", "reason": "expected a whole number"}),
        ({"offset": -1}, {"parameter": "offset", "reason": "must be >= 0", "max": None}),
        (
            {"fields": [{"field": "owner", "fields": ["name"]}]},
            {"key": "fields", "reason": "expected an array of field names"},
        ),
        (
            {"orderBy": [{"field": "a", "order": "sideways"}]},
            {"parameter": "orderBy", "field": "a", "reason": "invalid sort order"},
        ),
        (
            {"orderBy": [{"field": "a", "dir": "asc"}]},
            {"parameter": "orderBy", "reason": "malformed sort entry"},
        ),
        ({"search": {"query": "x", "rank": 1}}, {"key": "search.rank", "reason": "unknown key"}),
        (
            {"search": {"query": "x", "operator": "xor"}},
            {"key": "search.operator", "reason": "expected 'and' or 'or'"},
        ),
        (
            {"aggregations": [{"function": "median", "field": "a"}]},
            {
                "key": "aggregations.function",
                "function": "median",
                "reason": "expected one of ['avg', 'count', 'count_distinct', 'max', 'min', 'sum']",
            },
        ),
        (
            {"aggregations": [{"function": "sum"}]},
            {"key": "aggregations.field", "function": "sum", "reason": "missing field"},
        ),
        (
            {"aggregations": [{"function": "sum", "field": "a", "alias": "x; drop"}]},
            {
                "key": "aggregations.alias",
                "alias": "x; drop",
                "reason": "expected letters, digits and _ (max 63), not starting with a digit",
            },
        ),
        (
            {
                "aggregations": [
                    {"function": "count", "alias": "n"},
                    {"function": "max", "field": "a", "alias": "n"},
                ]
            },
            {"key": "aggregations", "alias": "n", "reason": "duplicate alias"},
        ),
        (
            {"aggregations": [{"function": "sum", "field": "a", "distinct": True}]},
            {"key": "aggregations.distinct", "reason": "distinct is only supported with count"},
        ),
        (
            {"aggregations": [{"function": "sum", "field": "a", "over": {}}]},
            {"key": "aggregations.over", "reason": "unknown key"},
        ),
        (
            {"cursor": {"amount": 5}, "orderBy": [{"field": "amount"}]},
            {"key": "cursor", "reason": "needs every sort field and id of the last row"},
        ),
        (
            {"cursor": 5},
            {"key": "cursor", "reason": "expected a cursor token or the last row's sort values"},
        ),
        ({"count": "sure"}, {"parameter": "count", "reason": "expected true or false"}),
        (
            {"where": {"a": {"$like": "x"}}},
            {"field": "a", "operator": "$like", "reason": "unknown operator"},
        ),
    ],
)
def test_ast_errors_name_the_key(body: dict[str, Any], details: dict[str, Any]) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_query_ast(body)
    assert caught.value.details == details


def test_ast_must_be_an_object() -> None:
    with pytest.raises(InvalidFilter):
        parse_query_ast(["not", "an", "object"])  # type: ignore[arg-type]


def test_ast_cursor_may_be_the_last_row() -> None:
    order = [{"field": "amount", "order": "desc"}]
    spec = parse_query_ast({"orderBy": order, "cursor": {"amount": 5, "id": "r1"}})
    assert spec.cursor == encode_cursor({"amount": 5, "id": "r1"}, [("amount", "desc")])


# --------------------------------------------------------------------------
# Cursor tokens


def test_cursor_round_trip() -> None:
    row = {"id": "r1", "when": datetime(2024, 1, 2, 3, 4, 5), "price": Decimal("9.99"), "x": 1}
    order = [("when", "desc"), ("price", "asc")]
    token = encode_cursor(row, order)
    assert "=" not in token and "+" not in token and "/" not in token
    assert decode_cursor(token, order) == {
        "when": "2024-01-02T03:04:05",
        "price": "9.99",
        "id": "r1",
    }


def test_cursor_for_another_sort_is_refused() -> None:
    token = encode_cursor({"id": "r1", "amount": 1}, [("amount", "asc")])
    with pytest.raises(InvalidFilter) as caught:
        decode_cursor(token, [("amount", "desc")])
    assert caught.value.details == {
        "parameter": "cursor",
        "reason": "cursor was issued for a different sort order",
    }


@pytest.mark.parametrize("token", ["!!!", "e30", "bm90IGpzb24", "W10", "x" * 5000])
def test_malformed_cursors_are_invalid_filters(token: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        decode_cursor(token, [])
    assert caught.value.details["parameter"] == "cursor"


def test_encoding_needs_the_sort_fields() -> None:
    with pytest.raises(LookupError):
        encode_cursor({"id": "r1"}, [("amount", "asc")])


def test_referenced_fields_lists_everything_a_query_touches() -> None:
    spec = parse_query_ast(
        {
            "fields": ["a"],
            "where": {"$or": [{"b": 1}, {"c": {"$gt": {"$field": "d"}}}]},
            "orderBy": [{"field": "e"}],
            "search": {"query": "x", "fields": ["f"]},
            "groupBy": ["g"],
            "aggregations": [{"function": "sum", "field": "h", "filter": {"i": 1}}],
            "expand": ["j"],
        }
    )
    assert spec.referenced_fields() == set("abcdefghij")
