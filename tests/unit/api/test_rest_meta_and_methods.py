"""Metadata routes with ETags, and which objects and operations the API serves."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from objectos.data import Actor, DataEngine
from objectos.errors import Unauthenticated
from objectos.metadata import MetadataRegistry

from .conftest import CRM, ClientFactory, build_app


async def test_meta_lists_types_items_and_one_item_with_etags(
    rest_client: httpx.AsyncClient,
) -> None:
    types = (await rest_client.get("/api/v1/meta")).json()["data"]["types"]
    assert {"type": "object", "count": 6, "href": "/api/v1/meta/object"} in types

    listing = await rest_client.get("/api/v1/meta/objects")  # plural works too
    assert listing.status_code == 200
    assert [i["name"] for i in listing.json()["data"]][:2] == ["account", "case"]
    cached = await rest_client.get(
        "/api/v1/meta/object", headers={"If-None-Match": listing.headers["etag"]}
    )
    assert cached.status_code == 304

    item = await rest_client.get("/api/v1/meta/object/account")
    assert item.json()["data"]["fields"]["name"]["type"] == "text"
    etag = item.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await rest_client.get(
            "/api/v1/meta/object/account", headers={"If-None-Match": header}
        )
        assert again.status_code == 304 and again.headers["etag"] == etag


async def test_unknown_metadata_is_404(rest_client: httpx.AsyncClient) -> None:
    assert (await rest_client.get("/api/v1/meta/widget")).status_code == 404
    missing = await rest_client.get("/api/v1/meta/object/nothing")
    assert missing.json()["error"]["code"] == "object_not_found"
    assert (await rest_client.get("/api/v1/meta/workflow/nothing")).status_code == 404


async def test_api_methods_limit_operations_with_405_and_allow(
    rest_client: httpx.AsyncClient,
) -> None:
    # industry_code allows only get and list.
    assert (await rest_client.get("/api/v1/data/industry_code")).status_code == 200
    created = await rest_client.post("/api/v1/data/industry_code", json={"code": "1"})
    assert created.status_code == 405
    assert created.headers["allow"] == "GET"
    assert created.json()["error"]["code"] == "method_not_allowed"
    patched = await rest_client.patch("/api/v1/data/industry_code/x", json={})
    assert patched.status_code == 405 and patched.headers["allow"] == "GET"
    batch = await rest_client.post("/api/v1/data/industry_code/batch", json={"records": [{}]})
    assert batch.status_code == 405 and batch.headers["allow"] == ""
    # Queries are lists: allowed.
    assert (await rest_client.post("/api/v1/data/industry_code/query", json={})).is_success


async def test_methods_no_route_has_are_405_and_unknown_paths_404(
    rest_client: httpx.AsyncClient,
) -> None:
    put = await rest_client.put("/api/v1/data/account", json={})
    assert put.status_code == 405
    assert sorted(put.json()["error"]["details"]["allow"]) == ["GET", "HEAD", "POST"]
    nowhere = await rest_client.get("/api/v1/nowhere")
    assert nowhere.status_code == 404 and nowhere.json()["success"] is False


@pytest.fixture
async def hidden_engine(rest_database: AsyncEngine) -> DataEngine:
    """The CRM plus an object with apiEnabled false and one limited to create."""
    objects = [item.model for item in MetadataRegistry.load([CRM]).items("object")]
    registry = MetadataRegistry.from_objects(
        [
            *objects,
            {
                "name": "secret",
                "fields": {"code": {"type": "text"}},
                "enable": {"apiEnabled": False},
            },
            {
                "name": "inbox",
                "fields": {"body": {"type": "text"}},
                "enable": {"apiMethods": ["create"]},
            },
        ]
    )
    engine = DataEngine(rest_database, registry)
    await engine.migrate()
    return engine


async def test_api_disabled_objects_do_not_exist_anywhere(hidden_engine: DataEngine) -> None:
    app = build_app(hidden_engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for method, url in [
            ("GET", "/api/v1/data/secret"),
            ("POST", "/api/v1/data/secret"),
            ("GET", "/api/v1/data/secret/x"),
            ("POST", "/api/v1/data/secret/query"),
            ("GET", "/api/v1/meta/object/secret"),
        ]:
            response = await client.request(method, url, json={})
            assert response.status_code == 404, (method, url)
            assert response.json()["error"]["code"] == "object_not_found"
        names = [i["name"] for i in (await client.get("/api/v1/meta/object")).json()["data"]]
        assert "secret" not in names and "inbox" in names
        spec = (await client.get("/api/v1/openapi.json")).json()
        assert "secret" not in spec["components"]["schemas"]
        assert not [p for p in spec["paths"] if "/secret" in p]

        # A create-only object: POST works, reading is 405.
        assert (await client.post("/api/v1/data/inbox", json={"body": "hi"})).status_code == 201
        listed = await client.get("/api/v1/data/inbox")
        assert listed.status_code == 405 and listed.headers["allow"] == "POST"
        assert list(spec["paths"]["/api/v1/data/inbox"]) == ["post"]
        assert "/api/v1/data/inbox/query" not in spec["paths"]


async def test_the_authenticator_decides_who_acts(rest_app_client: ClientFactory) -> None:
    async with rest_app_client() as anonymous:
        record = (await anonymous.post("/api/v1/data/account", json={"name": "A"})).json()
        assert record["data"]["created_by"] == "anonymous"

    async with rest_app_client(authenticate=HeaderAuthenticator()) as client:
        refused = await client.get("/api/v1/data/account")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        allowed = await client.get("/api/v1/data/account", headers={"x-user": "bob"})
        assert allowed.status_code == 200


class HeaderAuthenticator:
    """Trusts an x-user header: enough to show that routes defer to the authenticator."""

    async def __call__(self, request: Request) -> Actor:
        user = request.headers.get("x-user")
        if not user:
            raise Unauthenticated("who are you?")
        return Actor.user(user)


async def test_metadata_needs_an_authenticated_caller(rest_app_client: ClientFactory) -> None:
    async with rest_app_client(authenticate=HeaderAuthenticator()) as client:
        for path in ("/api/v1/meta", "/api/v1/meta/object", "/api/v1/meta/object/account"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "unauthenticated"
            assert refused.headers["www-authenticate"].startswith("Bearer")
            # Not even an ETag check answers before the caller is known.
            etag = (await client.get(path, headers={"x-user": "bob"})).headers.get("etag")
            if etag is not None:
                stale = await client.get(path, headers={"If-None-Match": etag})
                assert stale.status_code == 401
            assert (await client.get(path, headers={"x-user": "bob"})).status_code == 200
