"""The kernel actor supervises real plugin host actors on a real Ray instance."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest
from conftest import api_as, wait_until

ECHO = {"com.test.echo": {"module": "fixture_plugins:EchoPlugin"}}
CLIENT = {"com.test.client": {"module": "fixture_plugins:ClientPlugin"}}
BROKEN = {
    "com.test.broken": {"module": "fixture_plugins:BrokenPlugin"},
    "com.test.needs-broken": {"module": "fixture_plugins:NeedsBrokenPlugin"},
}


def plugins_by_id(ray: Any, kernel: Any) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in ray.get(kernel.plugins.remote())}


def call(ray: Any, plugin_id: str, service: str, method: str, *args: Any) -> Any:
    from actors.factory import get_plugin_host

    host = get_plugin_host(plugin_id)
    assert host is not None, f"no host for {plugin_id}"
    return ray.get(host.call_service.remote(service, method, list(args), {}, "test"))


def live_actor_names(ray: Any) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "objectos"
    ]


def test_plugins_start_in_order_and_reach_each_other_through_the_registry(
    ray_session: Any, start_hub: Any
) -> None:
    ray = ray_session
    kernel = start_hub({**ECHO, **CLIENT})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)

    status = ray.get(kernel.status.remote())
    assert status["order"] == ["com.test.echo", "com.test.client"]
    assert status["services"] == {"echo": "com.test.echo", "client": "com.test.client"}

    answer = call(ray, "com.test.client", "client", "ask", "ping")
    # The hub, not the plugin, fills in who is calling.
    assert answer["value"] == "ping"
    assert answer["caller"] == "com.test.client"


def test_kill_9_of_a_plugin_process_is_restarted_and_serves_again(
    ray_session: Any, start_hub: Any
) -> None:
    ray = ray_session
    kernel = start_hub({**ECHO, **CLIENT})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)
    before = call(ray, "com.test.echo", "echo", "echo", 1)["pid"]

    os.kill(before, signal.SIGKILL)

    def restarted() -> bool:
        echo = plugins_by_id(ray, kernel)["com.test.echo"]
        return echo["status"] == "running" and echo["restarts"] >= 1

    wait_until(restarted, timeout=60)
    after = call(ray, "com.test.echo", "echo", "echo", 2)
    assert after["pid"] != before
    # Its dependent keeps working: it finds the new host through the kernel.
    assert call(ray, "com.test.client", "client", "ask", "again")["value"] == "again"


def test_a_killed_kernel_comes_back_and_reattaches_without_duplicates(
    ray_session: Any, start_hub: Any
) -> None:
    ray = ray_session
    kernel = start_hub({**ECHO, **CLIENT})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)
    host_pids = {p["id"]: p["lifecycle"]["pid"] for p in ray.get(kernel.plugins.remote())}
    kernel_pid = ray.get(kernel.pid.remote())

    os.kill(kernel_pid, signal.SIGKILL)

    wait_until(lambda: _answers(ray, kernel) and ray.get(kernel.pid.remote()) != kernel_pid)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)
    after = plugins_by_id(ray, kernel)
    # Same processes: re-attached, not restarted, not started twice.
    assert {pid: p["lifecycle"]["pid"] for pid, p in after.items()} == host_pids
    assert all(p["restarts"] == 0 for p in after.values())
    names = live_actor_names(ray)
    assert names.count("plugin:com.test.echo") == 1
    assert names.count("plugin:com.test.client") == 1
    assert names.count("kernel") == 1


def _answers(ray: Any, kernel: Any) -> bool:
    try:
        ray.get(kernel.pid.remote(), timeout=5)
    except Exception:
        return False
    return True


def test_a_plugin_whose_dependency_fails_is_not_started_and_says_why(
    ray_session: Any, start_hub: Any, serve_url: str
) -> None:
    ray = ray_session
    kernel = start_hub(BROKEN)
    wait_until(lambda: ray.get(kernel.settled.remote()), timeout=60)

    body = api_as(serve_url, "admin").get("/admin/plugins").json()
    plugins = {p["id"]: p for p in body["data"]["plugins"]}
    broken, dependent = plugins["com.test.broken"], plugins["com.test.needs-broken"]
    assert broken["status"] == "failed"
    assert "database password missing" in broken["reason"]
    assert dependent["status"] == "blocked"
    assert "com.test.broken" in dependent["reason"]
    # It was never started: its host was never even created.
    assert "plugin:com.test.needs-broken" not in live_actor_names(ray)

    health = httpx.get(f"{serve_url}/api/v1/health", timeout=10)
    assert health.status_code == 503
    assert health.json()["data"]["status"] == "degraded"


@pytest.mark.parametrize("route", ["/api/v1", "/api/v1/discovery"])
def test_discovery_lists_only_what_is_mounted_and_running(
    ray_session: Any, start_hub: Any, serve_url: str, route: str
) -> None:
    ray = ray_session
    kernel = start_hub(ECHO)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)

    response = httpx.get(f"{serve_url}{route}", timeout=10)
    assert response.status_code == 200
    doc = response.json()["data"]
    assert doc["routes"]["health"] == "/api/v1/health"
    assert "data" not in doc["routes"]  # not mounted yet, so not advertised
    assert doc["services"]["echo"]["status"] == "available"
    assert doc["services"]["echo"]["provider"] == "com.test.echo"
    assert response.headers["x-request-id"]
