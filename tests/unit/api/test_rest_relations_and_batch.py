"""Relationships (cascade, restrict, set_null) and batches over REST."""

from __future__ import annotations

import httpx

from .conftest import create


async def test_deleting_a_parent_cascades_restricts_or_clears_children(
    rest_client: httpx.AsyncClient,
) -> None:
    account = await create(rest_client, "account", {"name": "Acme"})
    contact = await create(rest_client, "contact", {"last_name": "Doe", "account": account["id"]})
    deal = await create(rest_client, "opportunity", {"name": "Deal", "account": account["id"]})
    item = await create(
        rest_client,
        "opportunity_line_item",
        {"opportunity": deal["id"], "product": "Widget", "quantity": 2, "unit_price": 5},
    )
    case = await create(rest_client, "case", {"subject": "Help", "contact": contact["id"]})
    rollup = await rest_client.get(f"/api/v1/data/opportunity/{deal['id']}")
    assert rollup.json()["data"]["line_item_total"] == 10  # summary maintained

    # restrict: the opportunity still points at the account.
    restricted = await rest_client.delete(f"/api/v1/data/account/{account['id']}")
    assert restricted.status_code == 409
    assert restricted.json()["error"]["code"] == "delete_restricted"
    assert restricted.json()["error"]["details"]["child"] == "opportunity"

    # cascade: the line item goes with its opportunity.
    assert (await rest_client.delete(f"/api/v1/data/opportunity/{deal['id']}")).is_success
    item_url = f"/api/v1/data/opportunity_line_item/{item['id']}"
    assert (await rest_client.get(item_url)).status_code == 404

    # set_null: the contact stays, without its account.
    assert (await rest_client.delete(f"/api/v1/data/account/{account['id']}")).is_success
    kept = (await rest_client.get(f"/api/v1/data/contact/{contact['id']}")).json()["data"]
    assert kept["account"] is None and kept["version"] == 2

    # restrict again: a case points at the contact.
    blocked = await rest_client.delete(f"/api/v1/data/contact/{contact['id']}")
    assert blocked.status_code == 409
    assert (await rest_client.get(f"/api/v1/data/case/{case['id']}")).is_success


async def test_a_reference_to_a_missing_record_is_refused(rest_client: httpx.AsyncClient) -> None:
    response = await rest_client.post(
        "/api/v1/data/contact", json={"last_name": "Doe", "account": "missing"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["fieldErrors"][0]["code"] == "invalid_reference"


async def test_a_batch_applies_every_operation_in_one_transaction(
    rest_client: httpx.AsyncClient,
) -> None:
    existing = await create(rest_client, "account", {"name": "Old"})

    response = await rest_client.post(
        "/api/v1/data/account/batch",
        json={
            "operations": [
                {"operation": "create", "data": {"name": "New"}},
                {"operation": "update", "id": existing["id"], "data": {"employees": 3}},
                {"operation": "upsert", "id": "acct-42", "data": {"name": "Upserted"}},
            ]
        },
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["applied"], data["failed"], data["allOrNone"]) == (3, 0, True)
    assert [r["status"] for r in data["results"]] == ["applied"] * 3
    assert (await rest_client.get("/api/v1/data/account/acct-42")).is_success


async def test_an_all_or_none_batch_that_fails_writes_nothing(
    rest_client: httpx.AsyncClient,
) -> None:
    response = await rest_client.post(
        "/api/v1/data/account/batch",
        json={"records": [{"name": "One"}, {"name": "Two"}, {"name": "One"}]},
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "duplicate_value"
    assert error["details"]["index"] == 2
    assert [r["status"] for r in error["details"]["results"]] == [
        "rolled_back",
        "rolled_back",
        "failed",
    ]
    listed = await rest_client.get("/api/v1/data/account", params={"count": "true"})
    assert listed.json()["pagination"]["total"] == 0


async def test_without_all_or_none_each_operation_stands_alone(
    rest_client: httpx.AsyncClient,
) -> None:
    response = await rest_client.post(
        "/api/v1/data/account/batch",
        json={
            "allOrNone": False,
            "records": [{"name": "One"}, {"name": "One"}, {"website": "x"}],
        },
    )

    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["applied"], data["failed"]) == (1, 2)
    assert [r["success"] for r in data["results"]] == [True, False, False]
    assert data["results"][1]["errors"][0]["code"] == "duplicate_value"


async def test_malformed_batches_are_400(rest_client: httpx.AsyncClient) -> None:
    bodies = [
        {},
        {"operations": [], "allOrNone": True},
        {"operations": [{"operation": "explode"}]},
        {"records": [1]},
        {"records": [{"name": "x"}], "operations": []},
        {"records": [{"name": "x"}], "allOrNone": "yes"},
        {"records": [{"name": "x"}], "extra": 1},
    ]
    for body in bodies:
        response = await rest_client.post("/api/v1/data/account/batch", json=body)
        assert response.status_code == 400, (body, response.text)
