"""`objectos up / status / down` as an operator runs them, against its own local Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import ROOT, free_port

CONFIG = """\
id: com.test.cli
dataDir: data
plugins:
  com.objectos.storage: {{module: 'objectos.plugins.storage:StoragePlugin'}}
  com.objectos.metrics: {{module: 'objectos.plugins.metrics:MetricsPlugin'}}
  com.example.hello: {{module: 'objectos.plugins.example:HelloPlugin'}}
serve: {{host: 127.0.0.1, port: {port}, replicas: 1}}
"""


def objectos(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_status_down(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "objectos.yaml"
    config.write_text(CONFIG.format(port=port))
    state_file = tmp_path / "data" / "hub.json"
    try:
        up = objectos("up", "--config", str(config), "--num-cpus", "1")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/api/v1" in up.stdout
        assert "healthy in" in up.stdout
        state = json.loads(state_file.read_text())
        assert state["address"].startswith("127.0.0.1:")
        assert state["address"] != "127.0.0.1:6379"  # never Redis's port

        health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10)
        assert health.status_code == 200

        status = objectos("status", "--config", str(config), "--json")
        assert status.returncode == 0, status.stderr
        plugins = {p["id"]: p["status"] for p in json.loads(status.stdout)["plugins"]}
        assert plugins == {
            "com.objectos.storage": "running",
            "com.objectos.metrics": "running",
            "com.example.hello": "running",
        }
    finally:
        down = objectos("down", "--config", str(config))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state_file.exists()
    ray_pid = state["rayPid"]
    # The `ray start --block` process and the Ray it started are gone.
    assert subprocess.run(["kill", "-0", str(ray_pid)], capture_output=True).returncode != 0
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=3)
        raise AssertionError("the hub still answers after `objectos down`")
    except httpx.HTTPError:
        pass
