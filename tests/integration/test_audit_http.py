"""Writes through REST reach the audit trail with old/new values and the request's context."""

from __future__ import annotations

import uuid
from typing import Any

from conftest import api_as, data_plugin_entry, wait_until


def test_a_rest_write_is_audited_with_old_and_new_values_and_its_request(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    ray = ray_session
    kernel = start_hub(
        {
            "com.objectos.data": data_plugin_entry(serve_hub),
            "com.objectos.audit": {
                "module": "objectos.plugins.audit:AuditPlugin",
                "config": {"url": serve_hub["database"]["url"], "pollIntervalMs": 100},
            },
        }
    )
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    admin = api_as(serve_url, "admin")
    wait_until(lambda: admin.get("/data/account", params={"top": "1"}).status_code == 200)

    name = f"Initech {uuid.uuid4().hex[:8]}"
    created = admin.post("/data/account", json={"name": name})
    assert created.status_code == 201, created.text
    record_id = created.json()["data"]["id"]
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    updated = admin.patch(
        f"/data/account/{record_id}",
        json={"name": f"{name} (renamed)"},
        headers={"X-Request-ID": request_id},
    )
    assert updated.status_code == 200, updated.text

    def trail() -> list[dict[str, Any]]:
        response = admin.get(f"/audit/records/account/{record_id}")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["data"]
        return events if len(events) >= 2 else []

    events = wait_until(trail, timeout=60)
    update = next(e for e in events if e["action"] == "record.updated")
    assert update["changes"] == [{"field": "name", "old": name, "new": f"{name} (renamed)"}]
    assert update["actor"] == created.json()["data"]["created_by"]
    assert update["requestId"] == request_id
    assert update["ip"] == "127.0.0.1"

    # Reading the trail is a privilege: a sales rep is refused.
    rep = api_as(serve_url, "east_rep")
    assert rep.get(f"/audit/records/account/{record_id}").status_code == 403
