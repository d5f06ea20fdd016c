"""One record over REST: create, read, change, delete; versions and ETags; bad bodies."""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import ClientFactory, create


async def test_create_returns_201_with_location_etag_and_the_stored_record(
    rest_client: httpx.AsyncClient,
) -> None:
    response = await rest_client.post("/api/v1/data/account", json={"name": "Acme"})

    assert response.status_code == 201
    body = response.json()
    record = body["data"]
    assert body["success"] is True
    assert response.headers["location"] == f"/api/v1/data/account/{record['id']}"
    assert response.headers["etag"] == '"1"'
    assert record["version"] == 1 and record["industry"] == "other"  # the option default
    assert record["owner"] == "alice" and record["created_by"] == "alice"
    assert set(body["meta"]) >= {"timestamp", "duration", "requestId", "traceId"}


async def test_read_one_record_with_select_expand_and_conditional_get(
    rest_client: httpx.AsyncClient,
) -> None:
    account = await create(rest_client, "account", {"name": "Acme"})
    contact = await create(rest_client, "contact", {"last_name": "Doe", "account": account["id"]})
    url = f"/api/v1/data/contact/{contact['id']}"

    picked = await rest_client.get(url, params={"select": "last_name,account", "expand": "account"})
    assert picked.status_code == 200
    assert picked.json()["data"]["last_name"] == "Doe"
    assert picked.json()["data"]["account"]["name"] == "Acme"
    assert "version" not in picked.json()["data"]  # not selected, though the ETag needs it
    assert picked.headers["etag"] == '"1"'

    unchanged = await rest_client.get(url, headers={"If-None-Match": '"1"'})
    assert unchanged.status_code == 304 and unchanged.content == b""
    changed = await rest_client.get(url, headers={"If-None-Match": '"7"'})
    assert changed.status_code == 200


async def test_update_with_if_match_or_version_and_409_when_stale(
    rest_client: httpx.AsyncClient,
) -> None:
    account = await create(rest_client, "account", {"name": "Acme"})
    url = f"/api/v1/data/account/{account['id']}"

    first = await rest_client.patch(url, json={"employees": 10}, headers={"If-Match": '"1"'})
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    second = await rest_client.patch(url, json={"employees": 11, "version": 2})
    assert second.json()["data"]["version"] == 3

    stale = await rest_client.patch(url, json={"employees": 99}, headers={"If-Match": '"2"'})
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert error["code"] == "concurrent_modification"
    assert error["details"]["currentVersion"] == 3
    stale_body = await rest_client.patch(url, json={"employees": 99, "version": 1})
    assert stale_body.status_code == 409
    assert (await rest_client.get(url)).json()["data"]["employees"] == 11  # nothing written

    disagree = await rest_client.patch(url, json={"version": 3}, headers={"If-Match": '"2"'})
    assert disagree.status_code == 400
    garbage = await rest_client.patch(url, json={}, headers={"If-Match": 'W/"3"'})
    assert garbage.status_code == 400 and garbage.json()["error"]["details"]["header"] == "If-Match"
    anything = await rest_client.patch(url, json={"phone": "+1 555 01"}, headers={"If-Match": "*"})
    assert anything.status_code == 200


async def test_delete_with_version_check_then_404(rest_client: httpx.AsyncClient) -> None:
    account = await create(rest_client, "account", {"name": "Acme"})
    url = f"/api/v1/data/account/{account['id']}"

    stale = await rest_client.delete(url, params={"version": "5"})
    assert stale.status_code == 409
    deleted = await rest_client.delete(url, headers={"If-Match": '"1"'})
    assert deleted.status_code == 200
    assert deleted.json()["data"] == {
        "object": "account",
        "id": account["id"],
        "deleted": True,
        "version": 1,
    }
    gone = await rest_client.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "record_not_found"
    assert (await rest_client.delete(url)).status_code == 404


async def test_ids_that_cannot_exist_are_404_without_touching_the_database(
    rest_client: httpx.AsyncClient,
) -> None:
    for bad in ("a%00b", "x" * 40, "sp%20ace"):
        response = await rest_client.get(f"/api/v1/data/account/{bad}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "record_not_found"


@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        ({"name": "x", "website": "ftp://nope"}, "invalid_format", "website"),
        ({"name": "x", "industry": "mining"}, "invalid_option", "industry"),
        ({"name": "x", "annual_revenue": -5}, "value_out_of_range", "annual_revenue"),
        ({"name": "y" * 121}, "value_too_long", "name"),
        ({"name": "x", "nope": 1}, "invalid_field", "nope"),
        ({"name": "x", "created_by": "mallory"}, "invalid_field", "created_by"),
        ({"name": "x", "owner": "mallory"}, "invalid_field", "owner"),
        ({"industry": "retail"}, "missing_required_field", "name"),
    ],
)
async def test_each_validation_error_names_the_field(
    rest_client: httpx.AsyncClient, record: dict[str, object], code: str, field: str
) -> None:
    response = await rest_client.post("/api/v1/data/account", json=record)

    assert response.status_code == 400
    error = response.json()["error"]
    assert {(e["field"], e["code"]) for e in error["fieldErrors"]} >= {(field, code)}
    listed = await rest_client.get("/api/v1/data/account", params={"count": "true"})
    assert listed.json()["pagination"]["total"] == 0  # nothing half-written


async def test_rule_violations_and_duplicates(rest_client: httpx.AsyncClient) -> None:
    await create(rest_client, "account", {"name": "Acme"})

    duplicate = await rest_client.post("/api/v1/data/account", json={"name": "Acme"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "duplicate_value"

    closed = await rest_client.post("/api/v1/data/case", json={"subject": "x", "status": "closed"})
    assert closed.status_code == 400
    assert closed.json()["error"]["fieldErrors"][0]["field"] == "resolution"


@pytest.mark.parametrize(
    ("content", "headers", "status", "reason"),
    [
        (b"{not json", {}, 400, "invalid JSON"),
        (b"[1, 2]", {}, 400, "expected an object"),
        (b"", {}, 400, "empty body"),
        (b'{"name": NaN}', {}, 400, "invalid JSON"),
        (b"\xff\xfe\x00", {}, 400, "invalid encoding"),
        (b'{"name": "a\\u0000b"}', {}, 400, "NUL character"),
        (b'{"name": "\\ud800"}', {}, 400, "invalid unicode"),
        (b"name=x", {"content-type": "application/x-www-form-urlencoded"}, 400, None),
        (b"[" * 100_000 + b"]" * 100_000, {}, 400, "invalid JSON"),
    ],
)
async def test_bad_bodies_are_400_with_the_reason(
    rest_client: httpx.AsyncClient,
    content: bytes,
    headers: dict[str, str],
    status: int,
    reason: str | None,
) -> None:
    response = await rest_client.post(
        "/api/v1/data/account",
        content=content,
        headers={"content-type": "application/json", **headers},
    )

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    if reason is not None:
        assert error["details"]["reason"] == reason


async def test_a_body_over_the_limit_is_413_and_writes_nothing(
    rest_app_client: ClientFactory,
) -> None:
    async with rest_app_client(max_body_bytes=1024) as client:
        big = json.dumps({"name": "Acme", "description": "x" * 2000})
        response = await client.post(
            "/api/v1/data/account", content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["details"]["limit"] == 1024

        async def chunks():  # no Content-Length: the limit holds while streaming too
            for _ in range(4):
                yield b" " * 400
            yield b"{}"

        streamed = await client.post(
            "/api/v1/data/account", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        listed = await client.get("/api/v1/data/account", params={"count": "true"})
        assert listed.json()["pagination"]["total"] == 0


async def test_absurd_numbers_are_a_400_not_a_crash(rest_client: httpx.AsyncClient) -> None:
    response = await rest_client.post(
        "/api/v1/data/account", json={"name": "Acme", "annual_revenue": 1e300}
    )

    assert response.status_code == 400
