"""Plugins used by the integration tests (imported by Ray workers via PYTHONPATH)."""

from __future__ import annotations

import os

from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest


class EchoPlugin(Plugin):
    """Provides the `echo` service; reports its process id so tests can kill it."""

    manifest = PluginManifest(id="com.test.echo", version="1.0.0", name="Echo")

    async def on_load(self) -> None:
        self.context.register_service("echo", self)

    async def echo(self, value: object, *, caller: str) -> dict[str, object]:
        return {"value": value, "caller": caller, "pid": os.getpid()}


class ClientPlugin(Plugin):
    """Depends on echo and calls it through the kernel's registry."""

    manifest = PluginManifest(
        id="com.test.client", version="1.0.0", dependencies={"com.test.echo": "^1.0.0"}
    )

    async def on_load(self) -> None:
        self.first = await self.context.services.get("echo").echo("hello")
        self.context.register_service("client", self)

    async def ask(self, value: object) -> dict[str, object]:
        result: dict[str, object] = await self.context.services.get("echo").echo(value)
        return result


class BrokenPlugin(Plugin):
    """Cannot start: its on_load always raises."""

    manifest = PluginManifest(id="com.test.broken", version="1.0.0")

    async def on_load(self) -> None:
        raise RuntimeError("database password missing")


class NeedsBrokenPlugin(Plugin):
    """Requires the broken plugin, so it must never start."""

    manifest = PluginManifest(
        id="com.test.needs-broken", version="1.0.0", dependencies={"com.test.broken": "^1.0.0"}
    )

    async def on_load(self) -> None:  # pragma: no cover - must never run
        raise AssertionError("started although its dependency failed")
