"""The shipped core plugins (storage, metrics) and the example plugin, on real Ray."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import wait_until
from prometheus_client.parser import text_string_to_metric_families

CORE = {
    "com.objectos.storage": {"module": "objectos.plugins.storage:StoragePlugin"},
    "com.objectos.metrics": {"module": "objectos.plugins.metrics:MetricsPlugin"},
    "com.example.hello": {
        "module": "objectos.plugins.example:HelloPlugin",
        "config": {"greeting": "Hi"},
    },
}


def call(ray: Any, plugin_id: str, service: str, method: str, *args: Any, caller: str) -> Any:
    from actors.factory import get_plugin_host

    host = get_plugin_host(plugin_id)
    return ray.get(host.call_service.remote(service, method, list(args), {}, caller))


def test_example_plugin_greets_through_persistent_scoped_storage(
    ray_session: Any, start_hub: Any
) -> None:
    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)

    assert call(ray, "com.example.hello", "hello", "greet", "Ada", caller="t")["count"] == 1
    second = call(ray, "com.example.hello", "hello", "greet", "Ada", caller="t")
    assert second == {"message": "Hi, Ada!", "count": 2}

    # The hello plugin's keys are its own: another caller sees an empty scope...
    assert call(ray, "com.objectos.storage", "storage", "keys", caller="com.other") == []
    # ...while the hello plugin's scope holds its counters.
    keys = call(ray, "com.objectos.storage", "storage", "keys", caller="com.example.hello")
    assert "greetings/Ada" in keys


def test_metrics_is_one_exposition_for_kernel_plugins_and_http_replicas(
    ray_session: Any, start_hub: Any, serve_url: str, service_key: str
) -> None:
    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    call(ray, "com.example.hello", "hello", "greet", "Grace", caller="t")
    httpx.get(f"{serve_url}/api/v1/health", timeout=10)

    scrape = {"Authorization": f"Bearer {service_key}"}
    response = httpx.get(f"{serve_url}/metrics", headers=scrape, timeout=20)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    states = {
        (s.labels["plugin"], s.labels["state"]): s.value
        for s in families["objectos_plugin_state"].samples
    }
    assert states[("com.example.hello", "running")] == 1
    calls = [
        s
        for s in families["objectos_service_calls"].samples
        if s.labels.get("plugin") == "com.example.hello" and s.name.endswith("_total")
    ]
    assert calls and calls[0].value >= 1
    assert "objectos_http_requests" in families


def test_health_is_ok_when_every_plugin_runs(
    ray_session: Any, start_hub: Any, serve_url: str
) -> None:
    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)

    body = httpx.get(f"{serve_url}/api/v1/health", timeout=10).json()
    assert body["success"] is True
    assert body["data"]["status"] == "ok"
    assert {p["id"] for p in body["data"]["plugins"]} == set(CORE)
    assert all(p["ready"] for p in body["data"]["plugins"])
