"""The REST API through real Ray Serve: replicas run the data engine in-process.

The kernel runs the data plugin (it migrates the session database to the
sample CRM) and a plugin with data hooks; the Serve replicas answer the data
routes once the plugin runs, and call plugin hosts only for hooked objects.
Every data call is made by a signed-in account; ``admin`` holds the ``ceo``
role (modify_all_data), so permissions never get in the way here — they have
their own tests (test_auth_http.py).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from conftest import api_as, data_plugin_entry, wait_until
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

GUARD = "com.test.case-guard"


def start_crm_hub(ray: Any, start_hub: Any, serve_hub: dict[str, Any], url: str) -> httpx.Client:
    """Run the CRM hub's kernel; a client signed in as ``admin`` once both replicas serve."""
    kernel = start_hub(
        {
            "com.objectos.data": data_plugin_entry(serve_hub),
            "com.objectos.metrics": {"module": "objectos.plugins.metrics:MetricsPlugin"},
            GUARD: {"module": "test_rest_plugins:CaseGuardPlugin"},
        }
    )
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    api = api_as(url, "admin")
    # Each replica notices the running data plugin on its own; wait until both serve.
    wait_until(
        lambda: all(
            api.get("/data/account", params={"top": "1"}).status_code == 200 for _ in range(6)
        ),
        timeout=60,
    )
    return api


def test_crud_metadata_openapi_and_docs_through_serve(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    api = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    name = f"Acme {uuid.uuid4().hex[:8]}"

    created = api.post("/data/account", json={"name": name, "industry": "retail"})
    assert created.status_code == 201, created.text
    account = created.json()["data"]
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"/api/v1/data/account/{account['id']}"

    listed = api.get("/data/account", params={"filter": f'{{"name": "{name}"}}', "count": "true"})
    assert [r["id"] for r in listed.json()["data"]] == [account["id"]]
    assert listed.json()["pagination"]["total"] == 1

    changed = api.patch(
        f"/data/account/{account['id']}", json={"employees": 12}, headers={"If-Match": '"1"'}
    )
    assert changed.status_code == 200 and changed.json()["data"]["version"] == 2
    stale = api.patch(
        f"/data/account/{account['id']}", json={"employees": 13}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "concurrent_modification"

    queried = api.post(
        "/data/account/query",
        json={"where": {"name": name}, "fields": ["name", "employees"]},
    )
    assert queried.json()["data"] == [{"id": account["id"], "name": name, "employees": 12}]

    meta = api.get("/meta/object/account")
    assert meta.status_code == 200
    again = api.get("/meta/object/account", headers={"If-None-Match": meta.headers["etag"]})
    assert again.status_code == 304

    assert api.delete(f"/data/account/{account['id']}").json()["data"]["deleted"] is True
    assert api.get(f"/data/account/{account['id']}").status_code == 404

    document = api.get("/openapi.json").json()
    validate(document)
    assert f"{'/api/v1/data/account'}" in document["paths"]
    assert "post" not in document["paths"].get("/api/v1/data/industry_code", {})

    docs = httpx.get(f"{serve_url}/docs", timeout=20)
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text
    assert not re.search(r"https?://", docs.text)
    assert httpx.get(f"{serve_url}/docs/static/swagger-ui-bundle.js", timeout=20).status_code == 200

    discovery = api.get("/discovery").json()["data"]
    assert {"data", "metadata", "openapi", "docs", "auth", "permissions"} <= set(
        discovery["routes"]
    )
    assert discovery["services"]["data"]["status"] == "available"


def test_plugin_hooks_reach_the_write_path_of_the_replicas(
    ray_session: Any,
    start_hub: Any,
    serve_hub: dict[str, Any],
    serve_url: str,
    service_key: str,
) -> None:
    api = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    marker = uuid.uuid4().hex[:8]

    # Every replica refuses the vetoed case with the plugin's own error.
    for _ in range(4):
        vetoed = api.post("/data/case", json={"subject": f"please veto {marker}"})
        assert vetoed.status_code == 400, vetoed.text
        error = vetoed.json()["error"]
        assert error["message"] == "the case guard refuses this subject"
        assert error["fieldErrors"] == [
            {"field": "subject", "code": "vetoed", "message": "subjects may not say veto"}
        ]
    search = api.get("/data/case", params={"search": marker, "count": "true"})
    assert search.json()["pagination"]["total"] == 0  # nothing was written

    contact = api.post("/data/contact", json={"last_name": f"Doe {marker}", "phone": "+1 555 01"})
    assert contact.status_code == 201, contact.text
    assert contact.json()["data"]["title"] == "Stamped by plugin"

    accepted = api.post("/data/case", json={"subject": f"Printer {marker}"})
    assert accepted.status_code == 201

    # After-hooks run after the response, batched (in commit order per replica).
    subjects = [f"Burst {marker} {i}" for i in range(12)]
    for subject in subjects:
        assert api.post("/data/case", json={"subject": subject}).status_code == 201
    from actors.factory import get_plugin_host

    host = get_plugin_host(GUARD)

    def logged() -> list[str]:
        seen = ray_session.get(host.call_service.remote("case-log", "subjects", [], {}, "t"))
        return [s for s in seen if marker in s]

    wait_until(lambda: len(logged()) == len(subjects) + 1, timeout=30)
    assert sorted(logged()) == sorted([f"Printer {marker}", *subjects])

    # Accounts are hooked by no plugin: the guard's host never ran a hook for them.
    for _ in range(3):
        assert api.post("/data/account", json={"name": f"Hookless {uuid.uuid4().hex}"}).is_success
    scrape = {"Authorization": f"Bearer {service_key}"}
    metrics = httpx.get(f"{serve_url}/metrics", headers=scrape, timeout=20).text
    events = {
        sample.labels["event"]
        for family in text_string_to_metric_families(metrics)
        if family.name == "objectos_hook_calls"
        for sample in family.samples
        if sample.labels.get("plugin") == GUARD
    }
    assert "data.beforeInsert.case" in events and "data.beforeInsert.contact" in events
    assert not [e for e in events if e.endswith(".account")]


def test_request_ids_are_echoed_and_reported(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    api = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    response = api.get(
        "/data/account",
        params={"top": "1"},
        headers={"X-Request-ID": "it-rest-42", "traceparent": traceparent},
    )

    assert response.headers["x-request-id"] == "it-rest-42"
    assert response.json()["meta"]["requestId"] == "it-rest-42"
    assert response.json()["meta"]["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert response.headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    missing = api.get("/data/nothing_here")
    assert missing.status_code == 404
    assert missing.json()["error"]["requestId"] == missing.headers["x-request-id"]
