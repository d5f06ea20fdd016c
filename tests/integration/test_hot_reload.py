"""Hot reload (`objectos up --dev`): a changed plugin runs its new code in a fresh host."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, wait_until

SOURCE = """
from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest


class Version:
    async def which(self) -> str:
        return "{version}"


class ReloadablePlugin(Plugin):
    manifest = PluginManifest(id="com.test.reloadable", version="1.0.0")

    async def on_load(self) -> None:
        self.context.register_service("version", Version())
"""


@pytest.fixture
def plugin_module() -> Iterator[Path]:
    # Written where the Ray workers look for test plugins (their PYTHONPATH).
    path = TESTS / f"reloadable_{uuid.uuid4().hex[:8]}.py"
    yield path
    path.unlink(missing_ok=True)


def which(ray: Any) -> str:
    from actors.factory import get_plugin_host

    host = get_plugin_host("com.test.reloadable")
    return str(ray.get(host.call_service.remote("version", "which", [], {}, "test")))


def test_reload_runs_the_changed_code(
    ray_session: Any, start_hub: Any, plugin_module: Path
) -> None:
    ray = ray_session
    plugin_module.write_text(SOURCE.format(version="v1"))
    kernel = start_hub(
        {"com.test.reloadable": {"module": f"{plugin_module.stem}:ReloadablePlugin"}}
    )
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)
    assert which(ray) == "v1"

    plugin_module.write_text(SOURCE.format(version="v2"))
    row = ray.get(kernel.reload_plugin.remote("com.test.reloadable"))

    assert row["status"] == "running"
    assert which(ray) == "v2"
