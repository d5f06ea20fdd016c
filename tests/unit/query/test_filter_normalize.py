"""normalize_filter: every syntax to one form, and the structural limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from objectos.data.filter import (
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_DEPTH,
    MAX_IN_ITEMS,
    filter_fields,
    normalize_filter,
)
from objectos.errors import InvalidFilter


@pytest.mark.parametrize("empty", [None, "", "  ", {}, [], "{}", "[]"])
def test_empty_filters_mean_no_filter(empty: Any) -> None:
    assert normalize_filter(empty) is None


def test_implicit_equality_and_several_keys_become_an_and() -> None:
    assert normalize_filter({"status": "open", "amount": {"$gt": 1, "$lte": 5}}) == {
        "$and": [
            {"status": {"$eq": "open"}},
            {"amount": {"$gt": 1}},
            {"amount": {"$lte": 5}},
        ]
    }


def test_single_condition_is_not_wrapped() -> None:
    assert normalize_filter({"status": "open"}) == {"status": {"$eq": "open"}}


def test_operator_spelling_is_case_insensitive() -> None:
    assert normalize_filter({"name": {"$startswith": "a", "$NOTCONTAINS": "b"}}) == {
        "$and": [{"name": {"$startsWith": "a"}}, {"name": {"$notContains": "b"}}]
    }


def test_nested_and_flattens() -> None:
    raw = {"$and": [{"a": 1}, {"$and": [{"b": 2}, {"c": 3}]}]}
    assert normalize_filter(raw) == {
        "$and": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}, {"c": {"$eq": 3}}]
    }


def test_field_level_not_moves_up() -> None:
    assert normalize_filter({"name": {"$not": {"$contains": "x"}}}) == {
        "$not": {"name": {"$contains": "x"}}
    }


def test_field_reference_is_kept() -> None:
    assert normalize_filter({"a": {"$field": "b"}, "c": {"$gt": {"$field": "d"}}}) == {
        "$and": [{"a": {"$eq": {"$field": "b"}}}, {"c": {"$gt": {"$field": "d"}}}]
    }
    assert filter_fields(normalize_filter({"a": {"$gt": {"$field": "b"}}})) == {"a", "b"}


def test_json_text_is_parsed() -> None:
    assert normalize_filter('{"status": "open"}') == {"status": {"$eq": "open"}}


LEGACY: list[tuple[Any, dict[str, Any]]] = [
    (["a", "=", 1], {"a": {"$eq": 1}}),
    (["a", "==", 1], {"a": {"$eq": 1}}),
    (["a", "!=", 1], {"a": {"$ne": 1}}),
    (["a", "<>", 1], {"a": {"$ne": 1}}),
    (["a", ">", 1], {"a": {"$gt": 1}}),
    (["a", ">=", 1], {"a": {"$gte": 1}}),
    (["a", "<", 1], {"a": {"$lt": 1}}),
    (["a", "<=", 1], {"a": {"$lte": 1}}),
    (["a", "in", [1]], {"a": {"$in": [1]}}),
    (["a", "nin", [1]], {"a": {"$nin": [1]}}),
    (["a", "not_in", [1]], {"a": {"$nin": [1]}}),
    (["a", "contains", "x"], {"a": {"$contains": "x"}}),
    (["a", "notcontains", "x"], {"a": {"$notContains": "x"}}),
    (["a", "not_contains", "x"], {"a": {"$notContains": "x"}}),
    (["a", "like", "x"], {"a": {"$contains": "x"}}),
    (["a", "like", "%x%"], {"a": {"$contains": "x"}}),
    (["a", "like", "x%"], {"a": {"$startsWith": "x"}}),
    (["a", "like", "%x"], {"a": {"$endsWith": "x"}}),
    (["a", "like", "%x_y%"], {"a": {"$contains": "x_y"}}),
    (["a", "startswith", "x"], {"a": {"$startsWith": "x"}}),
    (["a", "starts_with", "x"], {"a": {"$startsWith": "x"}}),
    (["a", "endswith", "x"], {"a": {"$endsWith": "x"}}),
    (["a", "ends_with", "x"], {"a": {"$endsWith": "x"}}),
    (["a", "between", [1, 2]], {"a": {"$between": [1, 2]}}),
    (["a", "is_null"], {"a": {"$null": True}}),
    (["a", "is_null", None], {"a": {"$null": True}}),
    (["a", "is_null", False], {"a": {"$null": False}}),
    (["a", "is_not_null"], {"a": {"$null": False}}),
    (["a", "IN", [1]], {"a": {"$in": [1]}}),
    (
        [["a", "=", 1], ["b", "=", 2]],
        {"$and": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]},
    ),
    (
        [["a", "=", 1], "or", ["b", "=", 2]],
        {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]},
    ),
    (
        [["a", "=", 1], "OR", ["b", "=", 2], "and", ["c", "=", 3]],
        {
            "$or": [
                {"a": {"$eq": 1}},
                {"$and": [{"b": {"$eq": 2}}, {"c": {"$eq": 3}}]},
            ]
        },
    ),
    (
        ["or", ["a", "=", 1], ["and", ["b", "=", 2], ["c", "=", 3]]],
        {
            "$or": [
                {"a": {"$eq": 1}},
                {"$and": [{"b": {"$eq": 2}}, {"c": {"$eq": 3}}]},
            ]
        },
    ),
    ([{"a": 1}, "or", ["b", "=", 2]], {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]}),
    ({"$or": [["a", "=", 1], ["b", "=", 2]]}, {"$or": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]}),
    # A field may be called "and": with an operator second, it is a condition.
    (["and", "=", 1], {"and": {"$eq": 1}}),
]


@pytest.mark.parametrize(("raw", "expected"), LEGACY)
def test_legacy_array_forms(raw: Any, expected: dict[str, Any]) -> None:
    assert normalize_filter(raw) == expected
    assert normalize_filter(json.dumps(raw)) == expected


@pytest.mark.parametrize("raw", [raw for raw, _ in LEGACY])
def test_normalization_is_idempotent(raw: Any) -> None:
    once = normalize_filter(raw)
    assert normalize_filter(once) == once


def _nested(depth: int) -> dict[str, Any]:
    """``depth`` levels of alternating $or/$and/$not (which do not flatten)."""
    node: dict[str, Any] = {"a": 1}
    for level in range(depth):
        op = ("$or", "$and", "$not")[level % 3]
        node = {op: node} if op == "$not" else {op: [node, {"b": level}]}
    return node


def test_nesting_up_to_the_limit_is_accepted_and_stays_idempotent() -> None:
    normalized = normalize_filter(_nested(MAX_FILTER_DEPTH))
    assert normalize_filter(normalized) == normalized


def test_nesting_beyond_the_limit_is_refused() -> None:
    with pytest.raises(InvalidFilter) as caught:
        normalize_filter(_nested(MAX_FILTER_DEPTH + 1))
    assert caught.value.details["reason"] == "nesting too deep"
    assert caught.value.details["max"] == MAX_FILTER_DEPTH


def test_absurdly_deep_json_is_refused_without_crashing() -> None:
    text = '{"$not": ' * 5000 + '{"a": 1}' + "}" * 5000
    with pytest.raises(InvalidFilter):
        normalize_filter(text)
    deep_list = "[" * 100_000 + "]" * 100_000
    with pytest.raises(InvalidFilter):
        normalize_filter(deep_list)


def test_in_list_size_limit() -> None:
    assert normalize_filter({"a": {"$in": list(range(MAX_IN_ITEMS))}})
    with pytest.raises(InvalidFilter) as caught:
        normalize_filter({"a": {"$in": list(range(MAX_IN_ITEMS + 1))}})
    assert caught.value.details == {
        "field": "a",
        "operator": "$in",
        "reason": f"more than {MAX_IN_ITEMS} items",
    }


def test_condition_count_limit() -> None:
    many = {"$or": [{"a": i} for i in range(MAX_FILTER_CONDITIONS + 1)]}
    with pytest.raises(InvalidFilter) as caught:
        normalize_filter(many)
    assert caught.value.details["reason"] == "too many conditions"


def test_total_value_limit() -> None:
    many = {"$or": [{"a": {"$in": list(range(900))}} for _ in range(6)]}
    with pytest.raises(InvalidFilter) as caught:
        normalize_filter(many)
    assert caught.value.details["reason"] == "too many values"


ERRORS: list[tuple[Any, dict[str, Any] | None]] = [
    ({"a": {"$regex": "x"}}, {"field": "a", "operator": "$regex", "reason": "unknown operator"}),
    ({"$nor": [{"a": 1}]}, {"operator": "$nor", "reason": "unknown operator"}),
    (["a", "~", 1], {"field": "a", "operator": "~", "reason": "unknown operator"}),
    ({"a": {"$in": "x"}}, {"field": "a", "operator": "$in", "reason": "expected an array"}),
    (
        {"a": {"$between": [1]}},
        {
            "field": "a",
            "operator": "$between",
            "reason": "expected an array of two values [min, max]",
        },
    ),
    (
        {"a": {"$null": "yes"}},
        {"field": "a", "operator": "$null", "reason": "expected true or false"},
    ),
    (
        {"a": {"$exists": 1}},
        {"field": "a", "operator": "$exists", "reason": "expected true or false"},
    ),
    ({"$or": []}, {"operator": "$or", "reason": "expected a non-empty array"}),
    ({"$and": {"a": 1}}, {"operator": "$and", "reason": "expected a non-empty array"}),
    ({"$not": []}, {"operator": "$not", "reason": "expected a filter object"}),
    ({"a": {}}, {"field": "a", "reason": "empty condition"}),
    ({"owner": {"name": "x"}}, {"field": "owner", "reason": "relation filters are not supported"}),
    (["a", ">"], {"field": "a", "operator": ">", "reason": "missing value"}),
    (["a", ">", 1, 2], {"field": "a", "reason": "malformed condition"}),
    ([["a", "=", 1], "and"], {"reason": "misplaced connector"}),
    (["or", ["a", "=", 1]], None),  # fine: one alternative
    (
        [["a", "=", 1], "xor", ["b", "=", 1]],
        {"operator": "xor", "reason": "expected 'and' or 'or'"},
    ),
    ([["a", "=", 1], 5], {"reason": "expected a condition or 'and'/'or'"}),
    (["a", "like", 5], {"field": "a", "operator": "like", "reason": "expected text"}),
    ("{not json", {"reason": "invalid JSON"}),
    ('{"a": NaN}', {"reason": "invalid JSON"}),
    ("42", {"reason": "invalid filter node"}),
]


@pytest.mark.parametrize(("raw", "details"), ERRORS)
def test_structural_errors_name_what_is_wrong(raw: Any, details: dict[str, Any] | None) -> None:
    if details is None:
        assert normalize_filter(raw) is not None
        return
    with pytest.raises(InvalidFilter) as caught:
        normalize_filter(raw)
    assert caught.value.details == details
    assert caught.value.code == "invalid_filter" and caught.value.status == 400


def test_filter_fields_reads_any_syntax() -> None:
    assert filter_fields([["a", "=", 1], "or", ["b", "in", [1]]]) == {"a", "b"}
    assert filter_fields('{"$not": {"c": {"$null": true}}}') == {"c"}
    assert filter_fields(None) == set()
