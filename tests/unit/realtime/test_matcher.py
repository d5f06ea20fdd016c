"""In-memory filters agree with the SQL the REST API runs, operator by operator."""

from __future__ import annotations

from typing import Any

import pytest

from objectos.data import DataEngine
from objectos.data.filter import normalize_filter
from objectos.data.query import QuerySpec
from objectos.errors import InvalidField, InvalidFilter
from objectos.realtime.matcher import compile_matcher

from .doubles import WRITER

TICKETS: list[dict[str, Any]] = [
    {
        "subject": "Printer on FIRE",
        "status": "new",
        "team": "support",
        "priority": 1,
        "amount": 0.1,
        "due": "2024-03-01",
        "opened_at": "2024-03-01T10:00:00Z",
        "tags": ["hw", "urgent"],
        "secret_note": "50% off",
    },
    {
        "subject": "printer jam",
        "status": "open",
        "team": "sales",
        "priority": 3,
        "amount": 100.5,
        "due": "2024-04-15",
        "opened_at": "2024-03-01T12:30:00+02:00",
        "tags": ["hw"],
    },
    {"subject": "VPN down", "status": "closed"},
    {
        "subject": "Invoice_42",
        "team": "support",
        "priority": 3,
        "amount": 20,
        "due": "2023-12-31",
        "opened_at": "2023-12-31T23:59:59Z",
        "tags": [],
    },
    {
        "subject": "Refund 100%",
        "status": "open",
        "team": "Support",
        "priority": 10,
        "amount": 0.3,
        "due": "2024-03-01",
        "opened_at": "2024-03-01T10:30:00Z",
        "tags": ["billing", "urgent"],
    },
]

FILTERS: list[Any] = [
    {"status": "open"},
    {"status": {"$ne": "open"}},
    {"status": {"$in": ["new", None]}},
    {"status": {"$nin": ["open"]}},
    {"status": {"$null": True}},
    {"team": "support"},
    {"team": {"$exists": True}},
    {"priority": {"$gt": 1}},
    {"priority": {"$gte": 3}},
    {"priority": {"$lt": 3}},
    {"priority": {"$lte": 3}},
    {"priority": {"$between": [2, 10]}},
    {"priority": {"$ne": 3}},
    {"amount": 0.1},
    {"amount": {"$lte": 20}},
    {"amount": {"$gt": {"$field": "priority"}}},
    {"amount": {"$ne": {"$field": "priority"}}},
    {"subject": {"$contains": "printer"}},
    {"subject": {"$startsWith": "PRINTER"}},
    {"subject": {"$endsWith": "%"}},
    {"subject": {"$contains": "_4"}},
    {"subject": {"$notContains": "printer"}},
    {"secret_note": {"$contains": "%"}},
    {"due": {"$lt": "2024-04-01"}},
    {"due": "2024-03-01"},
    {"opened_at": {"$gt": "2024-03-01T12:15:00+02:00"}},
    {"opened_at": "2024-03-01T10:30:00Z"},
    {"opened_at": {"$between": ["2024-01-01", "2024-03-01T10:00:00Z"]}},
    {"tags": "urgent"},
    {"tags": {"$contains": ["hw", "urgent"]}},
    {"tags": {"$in": ["billing", "hw"]}},
    {"tags": {"$nin": ["hw"]}},
    {"tags": {"$ne": "hw"}},
    {"tags": {"$null": True}},
    {"tags": {"$notContains": "urgent"}},
    {"$not": {"priority": {"$gt": 2}}},
    {"$or": [{"team": "sales"}, {"priority": 10}]},
    {"$and": [{"status": {"$ne": "closed"}}, {"tags": {"$contains": "hw"}}]},
    {"subject": {"$not": {"$contains": "printer"}}},
    [["priority", ">", 1], "and", ["status", "=", "open"]],
    [["team", "is_null"], "or", ["subject", "like", "vpn%"]],
]


@pytest.fixture
async def tickets(data: DataEngine) -> dict[str, dict[str, Any]]:
    """The sample tickets, as the change log holds them (what rooms evaluate)."""
    for ticket in TICKETS:
        await data.insert("ticket", ticket, actor=WRITER)
    page = await data.change_log.since(0)
    return {entry.record_id: entry.record for entry in page.changes if entry.record}


@pytest.mark.parametrize("where", FILTERS, ids=[str(f) for f in FILTERS])
async def test_the_matcher_selects_exactly_what_sql_selects(
    data: DataEngine, tickets: dict[str, dict[str, Any]], where: Any
) -> None:
    columns = data.tables.columns("ticket")
    spec = QuerySpec(where=normalize_filter(where), limit=None)
    in_sql = {r["id"] for r in (await data.find("ticket", spec, actor=WRITER)).records}

    matcher = compile_matcher(where, columns)
    in_memory = {record_id for record_id, record in tickets.items() if matcher(record)}

    assert in_memory == in_sql
    assert 0 < len(in_sql) < len(tickets)  # every filter here tells records apart


def test_date_times_compare_as_instants_and_numbers_as_decimals(data: DataEngine) -> None:
    columns = data.tables.columns("ticket")
    at_ten = compile_matcher({"opened_at": "2024-03-01T12:00:00+02:00"}, columns)
    dime = compile_matcher({"amount": 0.1}, columns)

    assert at_ten({"opened_at": "2024-03-01T10:00:00Z"})
    assert at_ten({"opened_at": "2024-03-01T10:00:00"})  # naive means UTC
    assert not at_ten({"opened_at": "2024-03-01T12:00:00Z"})
    assert dime({"amount": 0.1}) and dime({"amount": 0.10000})
    assert not dime({"amount": 0.1 + 0.2 - 0.2})  # 0.10000000000000003


def test_a_missing_record_or_field_matches_nothing_but_its_negations() -> None:
    status_open = compile_matcher({"status": "open"})
    not_open = compile_matcher({"status": {"$ne": "open"}})

    assert not status_open(None)
    assert not status_open({})
    assert not_open({})
    assert compile_matcher(None)({"anything": 1})


def test_untyped_matching_compares_plain_values_and_treats_lists_as_arrays() -> None:
    assert compile_matcher({"n": 1})({"n": 1.0})
    assert compile_matcher({"tags": "a"})({"tags": ["b", "a"]})
    assert compile_matcher({"tags": {"$in": ["x", "a"]}})({"tags": ["a"]})
    # Values that cannot be compared simply do not match; nothing raises.
    assert not compile_matcher({"n": {"$gt": 1}})({"n": "many"})
    assert compile_matcher({"n": {"$ne": 1}})({"n": "many"})


def test_the_fields_a_filter_reads_are_listed() -> None:
    matcher = compile_matcher({"$or": [{"a": 1}, {"b": {"$gt": {"$field": "c"}}}]})

    assert matcher.fields == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("where", "error", "details"),
    [
        ({"nope": 1}, InvalidField, {"field": "nope", "reason": "unknown field"}),
        ({"pin": "1234"}, InvalidField, {"field": "pin"}),
        (
            {"priority": {"$contains": "1"}},
            InvalidFilter,
            {"field": "priority", "operator": "$contains"},
        ),
        ({"priority": {"$gt": "high"}}, InvalidFilter, {"field": "priority", "operator": "$gt"}),
        ({"priority": {"$regex": "x"}}, InvalidFilter, {"operator": "$regex"}),
        ({"due": {"$lt": "next week"}}, InvalidFilter, {"field": "due"}),
        ("{not json", InvalidFilter, {"reason": "invalid JSON"}),
        ({"$or": []}, InvalidFilter, {"operator": "$or"}),
    ],
)
def test_bad_filters_are_refused_like_rest_refuses_them(
    data: DataEngine, where: Any, error: type[Exception], details: dict[str, str]
) -> None:
    with pytest.raises(error) as info:
        compile_matcher(where, data.tables.columns("ticket"))

    assert details.items() <= info.value.details.items()  # type: ignore[attr-defined]


def test_fields_left_out_of_the_columns_are_unknown(data: DataEngine) -> None:
    readable = {k: v for k, v in data.tables.columns("ticket").items() if k != "secret_note"}

    with pytest.raises(InvalidField) as info:
        compile_matcher({"secret_note": {"$contains": "off"}}, readable)

    assert info.value.details["field"] == "secret_note"
