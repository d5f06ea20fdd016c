"""The OpenAPI document follows the metadata and validates; /docs works offline."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate

from objectos.api.docs import docs_html
from objectos.api.openapi import downgrade_to_30, openapi_document
from objectos.metadata import MetadataRegistry


def test_the_document_and_its_30_rendering_are_valid_openapi(
    crm_registry: MetadataRegistry,
) -> None:
    document = openapi_document(crm_registry)

    validate(document)  # OpenAPI 3.1
    assert document["openapi"] == "3.1.0"
    downgraded = downgrade_to_30(document)
    validate(downgraded)  # OpenAPI 3.0, for Swagger UI 4
    assert '"null"' not in str(downgraded["components"]["schemas"]).replace("'", '"')


def test_object_schemas_carry_types_formats_enums_limits_and_required(
    crm_registry: MetadataRegistry,
) -> None:
    schemas = openapi_document(crm_registry)["components"]["schemas"]
    read, create, update = schemas["account"], schemas["account.Create"], schemas["account.Update"]

    assert create["required"] == ["name"]  # industry has a default option
    assert create["additionalProperties"] is False
    assert create["properties"]["name"] == {
        "type": "string",
        "maxLength": 120,
        "title": "Account Name",
    }
    assert create["properties"]["website"]["format"] == "uri"
    assert create["properties"]["industry"]["enum"][:2] == ["technology", "finance"]
    assert create["properties"]["annual_revenue"]["minimum"] == 0
    assert create["properties"]["annual_revenue"]["maximum"] == 10**16 - 0.01
    assert "created_at" not in create["properties"] and "version" not in create["properties"]
    assert read["properties"]["created_at"]["readOnly"] is True
    assert read["properties"]["employees"]["type"] == ["integer", "null"]  # scale 0
    assert update["properties"]["version"]["type"] == "integer"
    assert "required" not in update

    case = schemas["case"]["properties"]
    assert case["case_number"]["readOnly"] is True  # autonumber
    assert "case_number" not in schemas["case.Create"]["properties"]
    assert schemas["case.Create"]["properties"]["closed_at"]["format"] == "date-time"
    lookup = case["contact"]["anyOf"]
    assert lookup[0]["pattern"] and lookup[1] == {
        "$ref": "#/components/schemas/contact",
        "description": "The contact (expand).",
    }
    deal = schemas["opportunity"]["properties"]
    assert deal["line_item_count"]["type"] == ["integer", "null"]  # count summary
    assert deal["expected_revenue"]["readOnly"] is True  # formula
    assert schemas["opportunity.Create"]["properties"]["close_date"]["format"] == "date"


def test_paths_follow_api_methods_and_list_every_query_parameter(
    crm_registry: MetadataRegistry,
) -> None:
    document = openapi_document(crm_registry)
    paths = document["paths"]

    assert set(paths["/api/v1/data/account"]) == {"get", "post"}
    assert set(paths["/api/v1/data/account/{id}"]) == {"get", "patch", "delete", "parameters"}
    assert "/api/v1/data/account/batch" in paths
    assert set(paths["/api/v1/data/industry_code"]) == {"get"}
    assert set(paths["/api/v1/data/industry_code/{id}"]) == {"get", "parameters"}
    assert "/api/v1/data/industry_code/batch" not in paths

    listing = paths["/api/v1/data/account"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"filter", "select", "sort", "top", "skip", "cursor", "expand", "search", "count"} <= (
        names
    )
    assert {"name", "industry"} <= names  # field equality
    assert "billing_address" not in names  # structured fields are not comparable
    statuses = set(paths["/api/v1/data/account"]["post"]["responses"])
    assert {"201", "400", "401", "403", "404", "409", "413", "429", "500", "503"} <= statuses
    assert document["components"]["securitySchemes"]["bearerAuth"]["bearerFormat"] == "JWT"


async def test_openapi_json_is_served_with_an_etag(rest_client: httpx.AsyncClient) -> None:
    response = await rest_client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    assert response.json()["info"]["title"] == "CRM"
    cached = await rest_client.get(
        "/api/v1/openapi.json", headers={"If-None-Match": response.headers["etag"]}
    )
    assert cached.status_code == 304
    older = await rest_client.get("/api/v1/openapi-3.0.json")
    assert older.json()["openapi"] == "3.0.3"


async def test_docs_are_served_offline_from_the_swagger_ui_bundle(
    rest_client: httpx.AsyncClient,
) -> None:
    page = await rest_client.get("/docs")

    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert not re.search(r"https?://", page.text)  # no CDN, no petstore
    assert '"/api/v1/openapi-3.0.json"' in page.text
    for asset in re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', page.text):
        served = await rest_client.get(asset)
        assert served.status_code == 200, asset
        assert served.content
    assert (await rest_client.get("/docs/static/index.html")).status_code == 404
    assert (await rest_client.get("/docs/static/../__init__.py")).status_code == 404


def test_the_docs_page_escapes_what_it_embeds() -> None:
    html = docs_html(spec_url='/x"</script>', title="<b>Hub</b>")

    assert "<b>Hub</b>" not in html and "&lt;b&gt;Hub&lt;/b&gt;" in html
    assert '</script>"' not in html and '\\"\\u003c/script>' in html


def test_realtime_routes_are_described_when_mounted(crm_registry: MetadataRegistry) -> None:
    assert "/api/v1/realtime/sse" not in openapi_document(crm_registry)["paths"]
    document = openapi_document(crm_registry, auth_required=True, realtime=True)
    validate(document)
    validate(downgrade_to_30(document))
    sse = document["paths"]["/api/v1/realtime/sse"]["get"]
    poll = document["paths"]["/api/v1/realtime/poll"]["get"]
    assert "text/event-stream" in sse["responses"]["200"]["content"]
    assert {p["name"] for p in sse["parameters"]} >= {"objects", "since", "Last-Event-ID"}
    assert {p["name"] for p in poll["parameters"]} >= {"objects", "since", "timeout"}
    event = poll["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    objects = event["data"]["properties"]["events"]["items"]["properties"]["object"]["enum"]
    assert "account" in objects and "opportunity" in objects
