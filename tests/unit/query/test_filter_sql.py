"""Every filter operator, run against a real database (see conftest for the rows).

Each case lists exactly the rows that must match, so it checks the rows that
must not match as well.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from objectos.data.filter import ParamText, compile_filter
from objectos.data.query import QuerySpec, build_select

from .conftest import ALL_IDS, Db


def ids(*names: str) -> set[str]:
    return set(names)


def all_but(*names: str) -> set[str]:
    return set(ALL_IDS - set(names))


OPERATOR_CASES: list[tuple[str, Any, set[str]]] = [
    # numbers (Double column)
    ("implicit eq", {"amount": 100}, ids("r01", "r04", "r06")),
    ("$eq", {"amount": {"$eq": 100}}, ids("r01", "r04", "r06")),
    ("$eq null", {"amount": None}, ids("r03")),
    ("$ne matches NULL too", {"amount": {"$ne": 100}}, ids("r02", "r03", "r05", "r07", "r08")),
    ("$ne null", {"amount": {"$ne": None}}, all_but("r03")),
    ("$gt", {"amount": {"$gt": 75}}, ids("r01", "r02", "r04", "r06")),
    ("$gte", {"amount": {"$gte": 75}}, ids("r01", "r02", "r04", "r06", "r08")),
    ("$lt", {"amount": {"$lt": 0}}, ids("r05")),
    ("$lte", {"amount": {"$lte": 0}}, ids("r05", "r07")),
    ("$in", {"amount": {"$in": [0, 75]}}, ids("r07", "r08")),
    ("$in with null", {"amount": {"$in": [75, None]}}, ids("r03", "r08")),
    ("$in empty", {"amount": {"$in": []}}, set()),
    ("$nin matches NULL", {"amount": {"$nin": [100, 250.5]}}, ids("r03", "r05", "r07", "r08")),
    ("$nin with null", {"amount": {"$nin": [100, None]}}, ids("r02", "r05", "r07", "r08")),
    ("$nin empty", {"amount": {"$nin": []}}, set(ALL_IDS)),
    ("$between", {"amount": {"$between": [0, 100]}}, ids("r01", "r04", "r06", "r07", "r08")),
    ("$null true", {"amount": {"$null": True}}, ids("r03")),
    ("$null false", {"amount": {"$null": False}}, all_but("r03")),
    ("$exists true", {"amount": {"$exists": True}}, all_but("r03")),
    ("$exists false", {"amount": {"$exists": False}}, ids("r03")),
    ("two operators", {"amount": {"$gt": 0, "$lt": 100}}, ids("r08")),
    # integer column compared with floats
    ("int $gt float", {"qty": {"$gt": 6.5}}, ids("r07", "r08")),
    ("int $lt integral float", {"qty": {"$lt": 2.0}}, ids("r01")),
    ("int $in mixed", {"qty": {"$in": [1, 2.0, 2.5]}}, ids("r01", "r02")),
    # exact decimals (currency)
    ("decimal $gte", {"price": {"$gte": 9.99}}, ids("r01", "r02", "r06")),
    ("decimal $eq", {"price": 0}, ids("r05")),
    ("decimal $between", {"price": {"$between": [1, 7.5]}}, ids("r04", "r07", "r08")),
    # booleans
    ("bool true", {"active": True}, ids("r01", "r03", "r06", "r08")),
    ("bool false", {"active": False}, ids("r02", "r05", "r07")),
    ("bool $ne true matches NULL", {"active": {"$ne": True}}, ids("r02", "r04", "r05", "r07")),
    ("bool $in", {"active": {"$in": [False, None]}}, ids("r02", "r04", "r05", "r07")),
    ("bool $null", {"active": {"$null": True}}, ids("r04")),
    # dates
    ("date $eq", {"due": "2024-01-10"}, ids("r01", "r06")),
    ("date $lt", {"due": {"$lt": "2024-01-01"}}, ids("r05")),
    (
        "date $between",
        {"due": {"$between": ["2024-01-01", "2024-01-31"]}},
        ids("r01", "r06", "r07", "r08"),
    ),
    ("date $in", {"due": {"$in": ["2024-03-01", "2023-12-31"]}}, ids("r04", "r05")),
    ("date $null", {"due": {"$null": True}}, ids("r03")),
    # datetimes: naive is UTC, aware is converted
    (
        "datetime $gte Z",
        {"created_at": {"$gte": "2024-01-02T11:00:00Z"}},
        ids("r02", "r03", "r04", "r06", "r07", "r08"),
    ),
    ("datetime $eq with offset", {"created_at": "2024-01-02T12:00:00+01:00"}, ids("r02")),
    ("datetime $lt date only", {"created_at": {"$lt": "2024-01-01"}}, ids("r05")),
    # times
    ("time $lt", {"opens": {"$lt": "09:00"}}, ids("r04", "r07")),
    ("time $gte", {"opens": {"$gte": "12:00:00"}}, ids("r05", "r06", "r08")),
    ("time $null", {"opens": {"$null": True}}, ids("r03")),
    # text and selects
    ("text $eq", {"status": "open"}, ids("r01", "r03", "r05", "r08")),
    ("text $eq null", {"status": None}, ids("r07")),
    ("text $ne", {"status": {"$ne": "open"}}, ids("r02", "r04", "r06", "r07")),
    ("text $gt", {"status": {"$gt": "closed"}}, ids("r01", "r02", "r03", "r05", "r06", "r08")),
    ("text $in", {"status": {"$in": ["closed", "paid"]}}, ids("r02", "r04", "r06")),
    ("text $nin", {"status": {"$nin": ["open"]}}, ids("r02", "r04", "r06", "r07")),
    ("$contains is case-insensitive", {"name": {"$contains": "ZETA"}}, ids("r07")),
    ("$contains lower", {"name": {"$contains": "eta"}}, ids("r02", "r07", "r08")),
    ("$notContains", {"name": {"$notContains": "A"}}, ids("r06")),
    (
        "$notContains matches NULL",
        {"description": {"$notContains": "e"}},
        ids("r02", "r04", "r06", "r08"),
    ),
    ("$startsWith", {"name": {"$startsWith": "BETA"}}, ids("r02")),
    ("$startsWith misses middle", {"name": {"$startsWith": "eta"}}, ids("r08")),
    ("$endsWith", {"name": {"$endsWith": "OFF"}}, ids("r02", "r08")),
    ("$endsWith misses middle", {"name": {"$endsWith": "50"}}, set()),
    # LIKE wildcards and the escape character match literally
    ("% is literal", {"name": {"$contains": "%"}}, ids("r02")),
    ("50% is literal", {"name": {"$contains": "50%"}}, ids("r02")),
    ("_ is literal", {"name": {"$contains": "_"}}, ids("r03")),
    ("a_r is literal", {"name": {"$contains": "a_r"}}, ids("r03")),
    ("escape char is literal", {"name": {"$contains": "/"}}, ids("r04")),
    ("escape then wildcard", {"name": {"$contains": "/%"}}, set()),
    ("% at start", {"name": {"$startsWith": "%"}}, set()),
    ("_ at end", {"name": {"$endsWith": "_"}}, set()),
    # SQL metacharacters are only data
    ("sql metacharacters", {"name": "'; DROP TABLE items; --"}, ids("r05")),
    ("quote in contains", {"name": {"$contains": "'; drop"}}, ids("r05")),
    # lookups
    ("lookup $eq", {"owner": "alice"}, ids("r01", "r03", "r06")),
    ("lookup $in", {"owner": {"$in": ["bob", "carol"]}}, ids("r02", "r04", "r05", "r08")),
    ("lookup $ne", {"owner": {"$ne": "alice"}}, ids("r02", "r04", "r05", "r07", "r08")),
    ("lookup $startsWith", {"owner": {"$startsWith": "ca"}}, ids("r04", "r08")),
    # JSON arrays: membership
    ("array $eq is membership", {"tags": "red"}, ids("r01", "r06")),
    ("array $contains", {"tags": {"$contains": "blue"}}, ids("r01", "r02", "r08")),
    ("array $contains all", {"tags": {"$contains": ["blue", "green"]}}, ids("r08")),
    ("array $contains is exact", {"tags": {"$contains": "blu"}}, set()),
    ("array $in any", {"tags": {"$in": ["green", "red"]}}, ids("r01", "r04", "r06", "r08")),
    ("array $in empty", {"tags": {"$in": []}}, set()),
    ("array $nin", {"tags": {"$nin": ["blue"]}}, ids("r03", "r04", "r05", "r06", "r07")),
    ("array $ne", {"tags": {"$ne": "blue"}}, ids("r03", "r04", "r05", "r06", "r07")),
    ("array $notContains", {"tags": {"$notContains": "red"}}, all_but("r01", "r06")),
    ("array $null: JSON null and SQL NULL", {"tags": {"$null": True}}, ids("r05", "r07")),
    ("array $eq null", {"tags": None}, ids("r05", "r07")),
    ("array $exists", {"tags": {"$exists": True}}, all_but("r05", "r07")),
    ("multiple lookup membership", {"watchers": {"$contains": "carol"}}, ids("r01")),
    ("multiple lookup $in", {"watchers": {"$in": ["alice", "bob"]}}, ids("r01", "r02")),
    # JSON documents
    ("json $null", {"meta": {"$null": True}}, ids("r03")),
    ("json $exists", {"meta": {"$exists": True}}, all_but("r03")),
    # formula: typed by its column (Double here)
    ("formula $gt", {"score": {"$gt": 1}}, ids("r01")),
    ("formula $null", {"score": {"$null": False}}, ids("r01")),
    # field-to-field
    ("$field $gt", {"qty": {"$gt": {"$field": "amount"}}}, ids("r05", "r07")),
    ("$field implicit eq", {"owner": {"$field": "owner"}}, all_but()),
    ("$field $ne", {"qty": {"$ne": {"$field": "qty"}}}, set()),
]


@pytest.mark.parametrize(
    ("where", "expected"),
    [pytest.param(where, expected, id=name) for name, where, expected in OPERATOR_CASES],
)
async def test_operator(db: Db, where: Any, expected: set[str]) -> None:
    assert await db.ids(where) == expected


LOGICAL_CASES: list[tuple[str, Any, set[str]]] = [
    ("keys are ANDed", {"status": "open", "active": True}, ids("r01", "r03", "r08")),
    (
        "$or",
        {"$or": [{"status": "paid"}, {"amount": {"$lt": 0}}]},
        ids("r02", "r05", "r06"),
    ),
    (
        "$and of $or",
        {
            "$and": [
                {"$or": [{"status": "open"}, {"status": "paid"}]},
                {"amount": {"$gte": 100}},
            ]
        },
        ids("r01", "r02", "r06"),
    ),
    (
        "$or beside a field is ANDed",
        {"owner": "alice", "$or": [{"amount": 100}, {"qty": 3}]},
        ids("r01", "r03", "r06"),
    ),
    (
        "$not is the exact complement (NULL amount included)",
        {"$not": {"amount": {"$gt": 50}}},
        ids("r03", "r05", "r07"),
    ),
    ("field-level $not", {"name": {"$not": {"$contains": "a"}}}, ids("r06")),
    (
        "$not of $or",
        {"$not": {"$or": [{"status": "open"}, {"status": None}]}},
        ids("r02", "r04", "r06"),
    ),
    (
        "deep nesting",
        {
            "$or": [
                {"$and": [{"status": "open"}, {"$not": {"owner": {"$in": ["alice", "bob"]}}}]},
                {"$and": [{"tags": "green"}, {"$or": [{"qty": {"$lt": 5}}, {"active": True}]}]},
            ]
        },
        ids("r04", "r08"),
    ),
]


@pytest.mark.parametrize(
    ("where", "expected"),
    [pytest.param(where, expected, id=name) for name, where, expected in LOGICAL_CASES],
)
async def test_logical_nesting(db: Db, where: Any, expected: set[str]) -> None:
    assert await db.ids(where) == expected


LEGACY_CASES: list[tuple[str, Any, set[str]]] = [
    ("single condition", ["amount", ">", 100], ids("r02")),
    (
        "infix and",
        [["amount", ">", 90], "and", ["status", "=", "paid"]],
        ids("r02", "r06"),
    ),
    ("infix or", [["status", "=", "closed"], "or", ["amount", "<", 0]], ids("r04", "r05")),
    ("prefix or", ["or", ["status", "=", "closed"], ["amount", "<", 0]], ids("r04", "r05")),
    (
        "implicit and",
        [["status", "=", "open"], ["active", "=", True]],
        ids("r01", "r03", "r08"),
    ),
    (
        "and binds tighter than or",
        [["status", "=", "closed"], "or", ["status", "=", "open"], "and", ["amount", ">", 90]],
        ids("r01", "r04"),
    ),
    (
        "nested prefix",
        ["and", ["owner", "=", "alice"], ["or", ["qty", "<", 2], ["qty", ">", 5]]],
        ids("r01", "r06"),
    ),
    ("==", ["status", "==", "paid"], ids("r02", "r06")),
    ("!=", ["status", "!=", "open"], ids("r02", "r04", "r06", "r07")),
    ("<>", ["status", "<>", "open"], ids("r02", "r04", "r06", "r07")),
    (">=", ["qty", ">=", 7], ids("r07", "r08")),
    ("<=", ["qty", "<=", 2], ids("r01", "r02")),
    ("in", ["status", "in", ["closed"]], ids("r04")),
    ("nin", ["qty", "nin", [1, 2, 3, 4, 5]], ids("r06", "r07", "r08")),
    ("not_in", ["qty", "not_in", [1, 2, 3, 4, 5]], ids("r06", "r07", "r08")),
    ("contains", ["name", "contains", "ALPH"], ids("r01")),
    ("like", ["name", "like", "%lph%"], ids("r01")),
    ("like prefix", ["name", "like", "gam%"], ids("r03")),
    ("like suffix", ["name", "like", "%ray"], ids("r03")),
    ("notcontains", ["name", "notcontains", "a"], ids("r06")),
    ("not_contains", ["name", "not_contains", "a"], ids("r06")),
    ("startswith", ["name", "startswith", "del"], ids("r04")),
    ("starts_with", ["name", "starts_with", "del"], ids("r04")),
    ("endswith", ["name", "endswith", "SLASH"], ids("r04")),
    ("ends_with", ["name", "ends_with", "SLASH"], ids("r04")),
    ("between", ["qty", "between", [3, 4]], ids("r03", "r04")),
    ("is_null", ["due", "is_null"], ids("r03")),
    ("is_null with value", ["due", "is_null", True], ids("r03")),
    ("is_not_null", ["due", "is_not_null"], all_but("r03")),
    ("array membership", ["tags", "contains", "green"], ids("r04", "r08")),
    ("JSON text", '[["amount", ">", 100], "or", ["qty", "=", 1]]', ids("r01", "r02")),
]


@pytest.mark.parametrize(
    ("where", "expected"),
    [pytest.param(where, expected, id=name) for name, where, expected in LEGACY_CASES],
)
async def test_legacy_array_form(db: Db, where: Any, expected: set[str]) -> None:
    assert await db.ids(where) == expected


QUERY_STRING_CASES: list[tuple[str, str, set[str]]] = [
    ("amount", "100", ids("r01", "r04", "r06")),
    ("amount", "-5", ids("r05")),
    ("qty", "8", ids("r08")),
    ("price", "9.99", ids("r01")),
    ("active", "true", ids("r01", "r03", "r06", "r08")),
    ("active", "0", ids("r02", "r05", "r07")),
    ("due", "2024-01-10", ids("r01", "r06")),
    ("status", "paid", ids("r02", "r06")),
    ("tags", "green", ids("r04", "r08")),
    ("score", "1.5", ids("r01")),
    ("name", "100", set()),
]


@pytest.mark.parametrize(("field", "text", "expected"), QUERY_STRING_CASES)
async def test_query_string_text_is_converted_to_the_field_type(
    db: Db, field: str, text: str, expected: set[str]
) -> None:
    assert await db.ids({field: ParamText(text)}) == expected


async def test_metacharacters_leave_the_table_intact(db: Db) -> None:
    hostile = "'; DROP TABLE items; --"
    for where in ({"name": hostile}, {"status": hostile}, {"name": {"$contains": hostile}}):
        condition = compile_filter(where, db.table, db.columns)
        compiled = condition.compile(dialect=db.engine.dialect)
        # The value travels as a parameter, never inside the SQL text.
        assert "DROP" not in str(compiled)
        assert any("DROP TABLE" in str(value) for value in compiled.params.values())
        await db.ids(where)
    assert len(await db.select(QuerySpec(limit=None))) == 8


async def test_filter_joins_a_larger_statement(db: Db) -> None:
    """The compiled condition composes with other clauses as one operand."""
    condition = compile_filter(
        {"$or": [{"owner": "bob"}, {"owner": "carol"}]}, db.table, db.columns
    )
    stmt = sa.select(db.table.c.id).where(condition, db.table.c.qty > 4)
    assert {row["id"] for row in await db.rows(stmt)} == {"r05", "r08"}


async def test_build_select_uses_the_same_filter(db: Db) -> None:
    spec = QuerySpec(where={"tags": {"$in": ["red"]}}, fields=["id"], limit=None)
    rows = await db.rows(build_select(spec, db.table, db.columns))
    assert {row["id"] for row in rows} == {"r01", "r06"}
