"""`objectos up / status / down` as an operator runs them, against its own local Ray.

The hub runs realtime (on a free port): `up` prints the gateway's URL, discovery lists
it, a stock python-socketio client signed in as a hub user joins a document's
namespace, and `down` leaves no gateway process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import socketio
from conftest import CRM_METADATA, ROOT, free_port, wait_until

CONFIG = """\
id: com.test.cli
dataDir: data
metadata: ['{metadata}']
plugins:
  com.objectos.storage: {{module: 'objectos.plugins.storage:StoragePlugin'}}
  com.objectos.metrics: {{module: 'objectos.plugins.metrics:MetricsPlugin'}}
  com.example.hello: {{module: 'objectos.plugins.example:HelloPlugin'}}
serve: {{host: 127.0.0.1, port: {port}, replicas: 1}}
auth:
  passwordHashing: {{timeCost: 1, memoryCostKib: 64, parallelism: 1}}
realtime: {{host: 127.0.0.1, port: {realtime_port}, rooms: {{idleTimeoutS: 5}}}}
"""
PASSWORD = "cli-test-password"


def objectos(
    *args: str, timeout: float = 240, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def join_document(url: str, token: str, doc: str) -> bool:
    """Connect a stock python-socketio client to ``/yjs|<doc>``; whether the hub's
    sync-step-1 arrived. Raises socketio's ConnectionError when refused."""
    namespace = f"/yjs|{doc}"
    client = socketio.Client(reconnection=False)
    synced = threading.Event()
    client.on("sync-step-1", lambda *args: synced.set(), namespace=namespace)
    client.connect(
        url,
        namespaces=[namespace],
        auth={"token": token},
        transports=["polling"],  # websocket-client is not installed here
        wait_timeout=20,
    )
    try:
        return namespace in client.namespaces and synced.wait(20)
    finally:
        client.disconnect()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_up_status_down(tmp_path: Path) -> None:
    port, realtime_port = free_port(), free_port()
    config = tmp_path / "objectos.yaml"
    config.write_text(CONFIG.format(port=port, realtime_port=realtime_port, metadata=CRM_METADATA))
    state_file = tmp_path / "data" / "hub.json"
    created = objectos(
        "user",
        "create",
        "--config",
        str(config),
        "--email",
        "ops@cli.test",
        "--roles",
        "ceo",
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stdout + created.stderr
    gateway_pids: list[int] = []
    try:
        up = objectos("up", "--config", str(config), "--num-cpus", "1")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}/api/v1" in up.stdout
        assert "healthy in" in up.stdout
        gateway_url = f"http://127.0.0.1:{realtime_port}"
        assert f"realtime   {gateway_url}" in up.stdout

        api = f"http://127.0.0.1:{port}/api/v1"
        discovery = httpx.get(f"{api}/discovery", timeout=10).json()["data"]
        assert discovery["routes"]["realtime"] == gateway_url
        assert discovery["routes"]["yjs"] == gateway_url + "/yjs|{document}"
        assert discovery["capabilities"]["realtime"]["enabled"] is True
        signed_in = httpx.post(
            f"{api}/auth/sign-in", json={"email": "ops@cli.test", "password": PASSWORD}, timeout=20
        )
        assert signed_in.status_code == 200, signed_in.text
        token = signed_in.json()["data"]["accessToken"]
        assert join_document(gateway_url, token, "cli-notes")
        with pytest.raises(socketio.exceptions.ConnectionError):
            join_document(gateway_url, "not-a-token", "cli-notes")
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
        (gateway,) = json.loads(status.stdout)["gateways"]
        assert gateway["url"] == gateway_url and pid_alive(gateway["pid"])
        gateway_pids.append(gateway["pid"])
        table = objectos("status", "--config", str(config))
        assert gateway_url in table.stdout and "CONNECTIONS" in table.stdout
    finally:
        down = objectos("down", "--config", str(config))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state_file.exists()
    ray_pid = state["rayPid"]
    assert "stopped realtime gateways" in down.stdout
    # The `ray start --block` process, the Ray it started and its gateway are gone.
    assert subprocess.run(["kill", "-0", str(ray_pid)], capture_output=True).returncode != 0
    assert gateway_pids
    wait_until(lambda: not any(pid_alive(pid) for pid in gateway_pids), timeout=30)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{realtime_port}/health", timeout=3)
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=3)
        raise AssertionError("the hub still answers after `objectos down`")
    except httpx.HTTPError:
        pass


PLUGIN = """
from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest


VERSION = {version!r}


class DevPlugin(Plugin):
    manifest = PluginManifest(id="com.test.dev", version="1.0.0")
"""

DEV_CONFIG = """\
id: com.test.dev
dataDir: data
plugins:
  com.test.dev: {{module: 'dev_plugin:DevPlugin'}}
serve: {{host: 127.0.0.1, port: {port}, replicas: 1}}
realtime: {{host: 127.0.0.1, port: {realtime_port}, auth: dev, devToken: dev-secret}}
"""


def test_dev_reload_keeps_the_gateways(tmp_path: Path) -> None:
    port, realtime_port = free_port(), free_port()
    config = tmp_path / "objectos.yaml"
    config.write_text(DEV_CONFIG.format(port=port, realtime_port=realtime_port))
    plugin = tmp_path / "dev_plugin.py"
    plugin.write_text(PLUGIN.format(version="v1"))
    gateway_url = f"http://127.0.0.1:{realtime_port}"
    # The plugin module is importable by the local Ray's workers (they inherit this).
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    dev = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "up", "--config", str(config), "--dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert dev.stdout is not None
        for line in dev.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("--dev: watching" in line for line in lines), timeout=240)
        status = objectos("status", "--config", str(config), "--json")
        (before,) = json.loads(status.stdout)["gateways"]
        assert join_document(gateway_url, "dev-secret", "dev-notes")

        plugin.write_text(PLUGIN.format(version="v2"))
        wait_until(lambda: any("plugin com.test.dev running" in line for line in lines), 120)

        status = objectos("status", "--config", str(config), "--json")
        (after,) = json.loads(status.stdout)["gateways"]
        assert (after["pid"], after["startedAt"]) == (before["pid"], before["startedAt"])
        assert join_document(gateway_url, "dev-secret", "dev-notes")
        discovery = httpx.get(f"http://127.0.0.1:{port}/api/v1/discovery", timeout=10)
        assert discovery.json()["data"]["routes"]["realtime"] == gateway_url
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dev.kill()
        down = objectos("down", "--config", str(config))
    assert down.returncode == 0, down.stdout + down.stderr + "".join(lines)
    assert "stopped realtime gateways" in down.stdout
