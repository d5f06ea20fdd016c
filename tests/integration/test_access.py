"""Who may reach what, through real Ray Serve: the role hierarchy of the identity store,
and the routes that used to answer anyone (meta, admin, metrics).

The replicas build their role directory from the accounts table the test
process writes to (the identity store); a role change made here, in another
process, must reach both replicas without a restart.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from conftest import CRM_PASSWORD, api_as, email_of, wait_until
from test_rest import start_crm_hub

from objectos.api.auth import build_identity
from objectos.protocol.manifest import HubManifest

CORE = {
    "com.objectos.storage": {"module": "objectos.plugins.storage:StoragePlugin"},
    "com.objectos.metrics": {"module": "objectos.plugins.metrics:MetricsPlugin"},
}


def identity_call(serve_hub: dict[str, Any], call: str, *args: Any) -> Any:
    """Run one IdentityService method on the session hub's store, from this process."""
    hub = HubManifest.model_validate(serve_hub)

    async def run() -> Any:
        identity, _ = build_identity(hub.auth, hub.database.url, hub.dataDir)
        try:
            return await getattr(identity, call)(*args)
        finally:
            await identity.aclose()

    return asyncio.run(run())


def seen_by_every_replica(client: httpx.Client, path: str, status: int) -> bool:
    """``status`` on several requests in a row (two replicas, round robin or not)."""
    return all(client.get(path).status_code == status for _ in range(6))


def test_a_manager_reaches_a_deal_only_while_its_owner_is_below_in_the_store(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    admin = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    marker = uuid.uuid4().hex[:8]
    name = f"mover_{marker}"
    mover = identity_call(
        serve_hub, "create_user", email_of(name), CRM_PASSWORD, name, ["west_rep"]
    )
    account = admin.post("/data/account", json={"name": f"Initech {marker}"}).json()["data"]
    created = api_as(serve_url, name).post(
        "/data/opportunity",
        json={"name": f"Deal {marker}", "account": account["id"], "stage": "proposal"},
    )
    assert created.status_code == 201, created.text
    deal = f"/data/opportunity/{created.json()['data']['id']}"
    manager = api_as(serve_url, "east_manager")

    # A west rep's deal: not below the east manager, so missing on every replica.
    assert seen_by_every_replica(manager, deal, 404)
    assert manager.patch(deal, json={"stage": "negotiation"}).status_code == 404

    # The owner moves into the east team, in the store only: no token of the manager
    # changes, no replica restarts.
    identity_call(serve_hub, "set_roles", mover.id, ["east_rep"])
    wait_until(lambda: seen_by_every_replica(manager, deal, 200), timeout=30)
    # Edit comes from the hierarchy alone (the east team's sharing rule grants read).
    changed = manager.patch(deal, json={"stage": "negotiation"})
    assert changed.status_code == 200, changed.text
    why = manager.post(
        "/permissions/check",
        json={"action": "edit", "object": "opportunity", "recordId": deal.rsplit("/", 1)[1]},
    ).json()["data"]
    assert why["allowed"] is True
    assert any("role hierarchy" in reason for reason in why["reasons"]), why

    # And back out: the manager loses the deal again.
    identity_call(serve_hub, "set_roles", mover.id, ["west_rep"])
    wait_until(lambda: seen_by_every_replica(manager, deal, 404), timeout=30)
    assert admin.get(deal).json()["data"]["stage"] == "negotiation"


@pytest.mark.parametrize("path", ["/api/v1/meta", "/api/v1/admin/plugins", "/metrics"])
def test_meta_admin_and_metrics_need_credentials(serve_url: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        refused = httpx.get(f"{serve_url}{path}", headers=headers, timeout=20)
        assert refused.status_code == 401, (path, headers, refused.text)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] in ("unauthenticated", "invalid_token")


def test_health_and_discovery_stay_public(serve_url: str) -> None:
    for path in ("/api/v1/health", "/api/v1/discovery", "/api/v1"):
        assert httpx.get(f"{serve_url}{path}", timeout=20).status_code in (200, 503), path


def test_admin_plugins_needs_the_view_setup_permission(
    ray_session: Any, start_hub: Any, serve_url: str
) -> None:
    ray = ray_session
    kernel = start_hub(CORE)  # no data plugin: the admin route answers all the same
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    refused = api_as(serve_url, "east_manager").get("/admin/plugins")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "permission_denied"
    assert refused.json()["error"]["details"] == {"permission": "view_setup"}
    allowed = api_as(serve_url, "admin").get("/admin/plugins")  # ceo -> admin -> view_setup
    assert allowed.status_code == 200, allowed.text
    assert {p["id"] for p in allowed.json()["data"]["plugins"]} == set(CORE)


def test_metadata_answers_any_signed_in_user(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    nobody = api_as(serve_url, "nobody")  # no role, no permission set
    response = nobody.get("/meta/object/account")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["name"] == "account"


def test_metrics_are_scraped_with_a_service_accounts_api_key(
    ray_session: Any, start_hub: Any, serve_url: str, service_key: str
) -> None:
    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    for headers in ({"Authorization": f"Bearer {service_key}"}, {"X-API-Key": service_key}):
        response = httpx.get(f"{serve_url}/metrics", headers=headers, timeout=20)
        assert response.status_code == 200, response.text
        assert "objectos_plugin_state" in response.text


def test_a_manifest_may_make_metrics_public(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any]
) -> None:
    """The same HTTP app, in this process, from a manifest with ``serve.metricsPublic``."""
    from deployments.api import HubHTTP

    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)

    async def scrape(public: bool) -> tuple[int, str]:
        manifest = HubManifest.model_validate(
            {**serve_hub, "serve": {**serve_hub["serve"], "metricsPublic": public}}
        )
        http = HubHTTP(manifest)
        try:
            transport = httpx.ASGITransport(app=http.app())
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
                response = await client.get("/metrics", timeout=30)
            return response.status_code, response.text
        finally:
            await http.data.close()
            await http.identity.aclose()
            await http.audit_sink.stop()
            await http.audit_database.dispose()

    status, text = asyncio.run(scrape(public=True))
    assert status == 200 and "objectos_plugin_state" in text
    assert asyncio.run(scrape(public=False))[0] == 401
