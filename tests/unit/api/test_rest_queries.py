"""Lists and queries over REST: every filter operator, paging, sorting, search, aggregates."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import create

DEALS = [
    {"name": "Alpha", "amount": 100, "stage": "prospecting", "close_date": "2026-01-10"},
    {"name": "Beta", "amount": 250, "stage": "qualification", "close_date": "2026-02-10"},
    {"name": "Gamma", "amount": 500, "stage": "prospecting", "description": "big one"},
    {"name": "Delta 50%", "stage": "closed_lost"},
]


@pytest.fixture
async def deals(rest_client: httpx.AsyncClient) -> dict[str, str]:
    account = await create(rest_client, "account", {"name": "Acme"})
    ids = {}
    for deal in DEALS:
        record = await create(rest_client, "opportunity", {**deal, "account": account["id"]})
        ids[deal["name"]] = record["id"]
    return ids


OPERATORS: list[tuple[dict[str, Any], set[str]]] = [
    ({"amount": {"$eq": 250}}, {"Beta"}),
    ({"amount": {"$ne": 250}}, {"Alpha", "Gamma", "Delta 50%"}),
    ({"amount": {"$gt": 250}}, {"Gamma"}),
    ({"amount": {"$gte": 250}}, {"Beta", "Gamma"}),
    ({"amount": {"$lt": 250}}, {"Alpha"}),
    ({"amount": {"$lte": 250}}, {"Alpha", "Beta"}),
    ({"stage": {"$in": ["qualification", "closed_lost"]}}, {"Beta", "Delta 50%"}),
    ({"stage": {"$nin": ["prospecting"]}}, {"Beta", "Delta 50%"}),
    ({"amount": {"$between": [100, 250]}}, {"Alpha", "Beta"}),
    ({"name": {"$contains": "50%"}}, {"Delta 50%"}),
    ({"name": {"$startsWith": "ga"}}, {"Gamma"}),
    ({"name": {"$endsWith": "TA"}}, {"Beta"}),
    ({"amount": {"$null": True}}, {"Delta 50%"}),
    ({"close_date": {"$exists": True}}, {"Alpha", "Beta"}),
    ({"$or": [{"name": "Alpha"}, {"amount": {"$gte": 500}}]}, {"Alpha", "Gamma"}),
    ({"$and": [{"stage": "prospecting"}, {"amount": {"$lt": 200}}]}, {"Alpha"}),
    ({"$not": {"stage": "prospecting"}}, {"Beta", "Delta 50%"}),
    ({"close_date": {"$gt": "2026-02-01"}}, {"Beta"}),
]


@pytest.mark.parametrize(
    ("where", "expected"), OPERATORS, ids=[json.dumps(w)[:40] for w, _ in OPERATORS]
)
async def test_every_filter_operator_through_the_query_string_and_the_query_ast(
    rest_client: httpx.AsyncClient,
    deals: dict[str, str],
    where: dict[str, Any],
    expected: set[str],
) -> None:
    listed = await rest_client.get(
        "/api/v1/data/opportunity", params={"filter": json.dumps(where), "select": "name"}
    )
    queried = await rest_client.post(
        "/api/v1/data/opportunity/query", json={"where": where, "fields": ["name"]}
    )

    assert listed.status_code == 200, listed.text
    assert queried.status_code == 200, queried.text
    assert {r["name"] for r in listed.json()["data"]} == expected
    assert {r["name"] for r in queried.json()["data"]} == expected


async def test_legacy_array_filters_and_field_equality_parameters(
    rest_client: httpx.AsyncClient, deals: dict[str, str]
) -> None:
    legacy = [["amount", ">", 100], "and", ["stage", "=", "prospecting"]]
    response = await rest_client.get(
        "/api/v1/data/opportunity", params={"filter": json.dumps(legacy)}
    )
    assert [r["name"] for r in response.json()["data"]] == ["Gamma"]

    # ?field=value is an equality, the text converted to the field's type.
    equal = await rest_client.get("/api/v1/data/opportunity", params={"amount": "250"})
    assert [r["name"] for r in equal.json()["data"]] == ["Beta"]


async def test_sort_paging_count_and_cursor(
    rest_client: httpx.AsyncClient, deals: dict[str, str]
) -> None:
    page = await rest_client.get(
        "/api/v1/data/opportunity",
        params={"sort": "-amount,name", "top": "2", "count": "true", "select": "name,amount"},
    )
    body = page.json()
    assert [r["name"] for r in body["data"]] == ["Gamma", "Beta"]
    assert body["pagination"]["total"] == 4
    assert body["pagination"]["hasMore"] is True
    assert body["pagination"]["limit"] == 2

    rest = await rest_client.get(
        "/api/v1/data/opportunity",
        params={"sort": "-amount,name", "top": "2", "cursor": body["pagination"]["nextCursor"]},
    )
    assert [r["name"] for r in rest.json()["data"]] == ["Alpha", "Delta 50%"]
    assert rest.json()["pagination"]["hasMore"] is False

    skipped = await rest_client.get(
        "/api/v1/data/opportunity", params={"sort": "name", "skip": "3", "top": "5"}
    )
    assert [r["name"] for r in skipped.json()["data"]] == ["Gamma"]
    assert skipped.json()["pagination"]["offset"] == 3


async def test_search_and_expand_in_lists(
    rest_client: httpx.AsyncClient, deals: dict[str, str]
) -> None:
    found = await rest_client.get(
        "/api/v1/data/opportunity", params={"search": "gamma", "expand": "account"}
    )
    records = found.json()["data"]
    assert [r["name"] for r in records] == ["Gamma"]
    assert records[0]["account"]["name"] == "Acme"


async def test_query_ast_aggregates_and_nested_expand(
    rest_client: httpx.AsyncClient, deals: dict[str, str]
) -> None:
    totals = await rest_client.post(
        "/api/v1/data/opportunity/query",
        json={
            "groupBy": ["stage"],
            "aggregations": [
                {"function": "sum", "field": "amount", "alias": "total"},
                {"function": "count", "alias": "deals"},
            ],
            "orderBy": [{"field": "stage", "order": "asc"}],
        },
    )
    assert totals.status_code == 200, totals.text
    assert totals.json()["data"] == [
        {"stage": "closed_lost", "total": None, "deals": 1},
        {"stage": "prospecting", "total": 600, "deals": 2},
        {"stage": "qualification", "total": 250, "deals": 1},
    ]
    assert "pagination" not in totals.json()

    nested = await rest_client.post(
        "/api/v1/data/opportunity/query",
        json={"where": {"name": "Alpha"}, "expand": {"account": {"fields": ["name"]}}},
    )
    assert nested.json()["data"][0]["account"] == {
        "id": nested.json()["data"][0]["account"]["id"],
        "name": "Acme",
    }


@pytest.mark.parametrize(
    ("params", "code", "detail"),
    [
        ({"filter": "{not json"}, "invalid_filter", None),
        ({"filter": '{"amount": {"$regex": "x"}}'}, "invalid_filter", None),
        ({"filter": '{"nope": 1}'}, "invalid_field", None),
        ({"top": "5000"}, "invalid_filter", "top"),
        ({"top": "-1"}, "invalid_filter", "top"),
        ({"skip": "99999999999999999999"}, "invalid_filter", "skip"),
        ({"sort": "nope"}, "invalid_field", None),
        ({"count": "maybe"}, "invalid_filter", "count"),
        ({"cursor": "garbage"}, "invalid_filter", None),
        ({"$weird": "1"}, "invalid_filter", "$weird"),
        ({"name": "a\x00b"}, "validation_error", None),
    ],
)
async def test_bad_list_parameters_are_400_naming_the_parameter(
    rest_client: httpx.AsyncClient, params: dict[str, str], code: str, detail: str | None
) -> None:
    response = await rest_client.get("/api/v1/data/opportunity", params=params)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if detail is not None:
        assert error["details"]["parameter"] == detail


async def test_a_parameter_given_twice_is_refused(rest_client: httpx.AsyncClient) -> None:
    response = await rest_client.get("/api/v1/data/account?top=1&top=2")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "repeated parameter"


@pytest.mark.parametrize(
    "body",
    [
        {"where": {"amount": {"$gt": "lots"}}},
        {"joins": []},
        {"object": "account"},
        {"limit": 5000},
        {"aggregations": [{"function": "median", "field": "amount"}]},
        {"offset": 10**12},
    ],
)
async def test_bad_query_ast_is_400(rest_client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await rest_client.post("/api/v1/data/opportunity/query", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["category"] == "validation"
