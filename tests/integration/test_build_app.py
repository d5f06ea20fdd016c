"""``deployments.app:build_app`` (what ``serve deploy configs/serve.yaml`` runs) starts the
realtime gateways with the kernel, and leaves them alone when realtime is disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import TEST_AUTH, free_port, wait_until

HUB_ID = "com.test.build"


def write_config(tmp_path: Path, realtime: dict[str, Any]) -> Path:
    import yaml

    config = tmp_path / "objectos.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "id": HUB_ID,
                "dataDir": "data",
                "plugins": {
                    "com.objectos.metrics": {"module": "objectos.plugins.metrics:MetricsPlugin"}
                },
                "auth": TEST_AUTH,
                "realtime": realtime,
            }
        )
    )
    return config


@pytest.fixture
def cleanup(ray_session: Any) -> Iterator[None]:
    """Stop what build_app started: gateways, the kernel and its plugin host."""
    yield
    from ray.experimental import internal_kv

    from actors.factory import get_kernel, get_plugin_host
    from actors.kernel import KV_NAMESPACE
    from deployments.realtime import stop_realtime

    ray = ray_session
    stop_realtime()
    with contextlib.suppress(ValueError):
        kernel = get_kernel()
        with contextlib.suppress(Exception):
            ray.get(kernel.shutdown.remote(), timeout=60)
        ray.kill(kernel, no_restart=True)
    host = get_plugin_host("com.objectos.metrics")
    if host is not None:
        ray.kill(host, no_restart=True)

    def kernel_gone() -> bool:
        try:
            get_kernel()
        except ValueError:
            return True
        return False

    wait_until(kernel_gone, timeout=30)
    for key in (f"kernel:{HUB_ID}", f"installed:{HUB_ID}"):
        internal_kv._internal_kv_del(key.encode(), namespace=KV_NAMESPACE)


def test_build_app_starts_the_gateways(ray_session: Any, tmp_path: Path, cleanup: None) -> None:
    from deployments.app import build_app
    from deployments.realtime import gateway_endpoints, realtime_routes

    port = free_port()
    app = build_app({"config": str(write_config(tmp_path, {"port": port}))})
    assert app is not None
    (endpoint,) = gateway_endpoints()
    assert endpoint["url"] == f"http://127.0.0.1:{port}"
    assert realtime_routes()["realtime"] == endpoint["url"]
    health = wait_until(lambda: httpx.get(f"{endpoint['url']}/health", timeout=5), timeout=30)
    assert health.status_code == 200 and health.json()["name"] == endpoint["name"]
    # A redeploy finds them running: same process.
    build_app({"config": str(tmp_path / "objectos.yaml")})
    assert [e["pid"] for e in gateway_endpoints()] == [endpoint["pid"]]


def test_build_app_without_realtime(ray_session: Any, tmp_path: Path, cleanup: None) -> None:
    from deployments.app import build_app
    from deployments.realtime import gateway_endpoints, realtime_routes

    build_app({"config": str(write_config(tmp_path, {"enabled": False, "port": free_port()}))})
    assert gateway_endpoints() == [] and realtime_routes() == {}
