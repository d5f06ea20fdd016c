"""compile_filter refuses unknown fields and values of the wrong type, saying why."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from objectos.data.filter import compile_filter
from objectos.errors import InvalidField, InvalidFilter

from .conftest import COLUMNS


def test_unknown_field(table: sa.Table) -> None:
    with pytest.raises(InvalidField) as caught:
        compile_filter({"$or": [{"status": "open"}, {"nope": 1}]}, table, COLUMNS)
    assert caught.value.details["field"] == "nope"
    assert caught.value.code == "invalid_field"


def test_unknown_field_in_a_field_reference(table: sa.Table) -> None:
    with pytest.raises(InvalidField) as caught:
        compile_filter({"qty": {"$gt": {"$field": "nope"}}}, table, COLUMNS)
    assert caught.value.details["field"] == "nope"


def test_a_field_left_out_of_columns_is_unknown(table: sa.Table) -> None:
    """Field-level security: pass only readable columns, the rest do not exist."""
    readable = {k: v for k, v in COLUMNS.items() if k != "owner"}
    with pytest.raises(InvalidField):
        compile_filter({"owner": "alice"}, table, readable)


def test_password_fields_cannot_be_filtered(table: sa.Table) -> None:
    with pytest.raises(InvalidField) as caught:
        compile_filter({"secret": {"$startsWith": "$argon"}}, table, COLUMNS)
    assert caught.value.details["field"] == "secret"


def test_unknown_operator(table: sa.Table) -> None:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter({"amount": {"$near": 1}}, table, COLUMNS)
    assert caught.value.details == {
        "field": "amount",
        "operator": "$near",
        "reason": "unknown operator",
    }


TYPE_ERRORS: list[tuple[str, Any, str, str, str]] = [
    # (case, filter, field, operator, reason)
    ("text on number", {"amount": {"$gt": "abc"}}, "amount", "$gt", "expected a number"),
    ("numeric text in JSON", {"amount": {"$gt": "100"}}, "amount", "$gt", "expected a number"),
    ("bool on number", {"amount": True}, "amount", "$eq", "expected a number"),
    ("$in item", {"qty": {"$in": [1, "two"]}}, "qty", "$in", "expected a number"),
    ("$between item", {"qty": {"$between": [1, "x"]}}, "qty", "$between", "expected a number"),
    (
        "$between null",
        {"qty": {"$between": [None, 3]}},
        "qty",
        "$between",
        "null is not allowed here; use $null",
    ),
    ("$gt null", {"qty": {"$gt": None}}, "qty", "$gt", "null is not allowed here; use $null"),
    (
        "$contains on a number",
        {"amount": {"$contains": "1"}},
        "amount",
        "$contains",
        "not supported on number fields",
    ),
    ("number on text", {"status": 5}, "status", "$eq", "expected text"),
    ("object as a value", {"status": {"$eq": {"x": 1}}}, "status", "$eq", "expected text"),
    ("$contains non-text", {"name": {"$contains": 5}}, "name", "$contains", "expected text"),
    (
        "$contains list on text",
        {"name": {"$contains": ["a"]}},
        "name",
        "$contains",
        "expected text",
    ),
    ("text on boolean", {"active": "yes"}, "active", "$eq", "expected true or false"),
    (
        "$gt on boolean",
        {"active": {"$gt": False}},
        "active",
        "$gt",
        "not supported on boolean fields",
    ),
    (
        "bad date",
        {"due": {"$gt": "2024-02-30"}},
        "due",
        "$gt",
        "expected an ISO 8601 date (YYYY-MM-DD), got '2024-02-30'",
    ),
    ("number as date", {"due": 20240101}, "due", "$eq", "expected an ISO 8601 date (YYYY-MM-DD)"),
    (
        "bad datetime",
        {"created_at": {"$lt": "yesterday"}},
        "created_at",
        "$lt",
        "expected an ISO 8601 date-time, got 'yesterday'",
    ),
    (
        "bad time",
        {"opens": "25:00"},
        "opens",
        "$eq",
        "expected an ISO 8601 time (HH:MM[:SS]), got '25:00'",
    ),
    (
        "$gt on array",
        {"tags": {"$gt": "a"}},
        "tags",
        "$gt",
        "not supported on tags fields holding many values",
    ),
    (
        "$startsWith on array",
        {"tags": {"$startsWith": "a"}},
        "tags",
        "$startsWith",
        "not supported on tags fields holding many values",
    ),
    (
        "list equality on array",
        {"tags": ["a", "b"]},
        "tags",
        "$eq",
        "use $contains (all of) or $in (any of) with a list",
    ),
    (
        "object as member",
        {"tags": {"$in": [{"a": 1}]}},
        "tags",
        "$in",
        "expected a string or a number",
    ),
    ("$eq on json", {"meta": {"$eq": 1}}, "meta", "$eq", "not supported on json fields"),
    ("text on formula number", {"score": {"$gt": "high"}}, "score", "$gt", "expected a number"),
    ("lookup object", {"owner": {"$eq": [1]}}, "owner", "$eq", "expected a record id"),
    (
        "$field with $in",
        {"qty": {"$contains": {"$field": "amount"}}},
        "qty",
        "$contains",
        "not supported on number fields",
    ),
    (
        "$field across types",
        {"qty": {"$gt": {"$field": "name"}}},
        "qty",
        "$gt",
        "incompatible field types",
    ),
    (
        "$field not a name",
        {"qty": {"$gt": {"$field": 3}}},
        "qty",
        "$gt",
        "$field takes a field name",
    ),
]


@pytest.mark.parametrize(
    ("where", "field", "operator", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in TYPE_ERRORS],
)
def test_value_type_errors(
    table: sa.Table, where: Any, field: str, operator: str, reason: str
) -> None:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter(where, table, COLUMNS)
    assert caught.value.details == {"field": field, "operator": operator, "reason": reason}
    assert field in caught.value.message


def test_query_string_text_that_does_not_parse_is_refused(table: sa.Table) -> None:
    from objectos.data.filter import ParamText

    with pytest.raises(InvalidFilter) as caught:
        compile_filter({"qty": ParamText("lots")}, table, COLUMNS)
    assert caught.value.details["reason"] == "expected a number"
    with pytest.raises(InvalidFilter):
        compile_filter({"active": ParamText("maybe")}, table, COLUMNS)
