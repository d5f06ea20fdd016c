"""Test doubles for the kernel tests: plugins that write down every hook call.

Plugin contexts come from :mod:`objectos.testing`, the project's one home of doubles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest
from objectos.testing import make_context


class Clock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingPlugin(Plugin):
    """Appends ``(plugin id, hook)`` to ``journal`` on every hook call.

    ``failures`` maps a hook name to the exception it raises, every time until
    a test removes the entry; hooks named in ``hangs`` wait until cancelled, to
    exercise timeouts.
    """

    journal: list[tuple[Any, ...]]
    failures: dict[str, BaseException]
    hangs: set[str]

    async def _hook(self, name: str, *args: Any) -> None:
        self.journal.append((self.manifest.id, name, *args))
        if name in self.hangs:
            await asyncio.Event().wait()
        if name in self.failures:
            raise self.failures[name]

    async def on_install(self) -> None:
        await self._hook("on_install")

    async def on_upgrade(self, previous_version: str, new_version: str) -> None:
        await self._hook("on_upgrade", previous_version, new_version)

    async def on_enable(self) -> None:
        await self._hook("on_enable")

    async def on_load(self) -> None:
        await self._hook("on_load")

    async def on_disable(self) -> None:
        await self._hook("on_disable")

    async def on_uninstall(self) -> None:
        await self._hook("on_uninstall")


MakePlugin = Callable[..., RecordingPlugin]


@pytest.fixture
def journal() -> list[tuple[Any, ...]]:
    """Every hook call of every plugin made by ``make_plugin``, in order."""
    return []


@pytest.fixture
def make_plugin(journal: list[tuple[Any, ...]]) -> MakePlugin:
    """Build a :class:`RecordingPlugin` instance with its own manifest."""

    def make(
        plugin_id: str = "com.x.demo",
        version: str = "1.0.0",
        *,
        requires: dict[str, str] | None = None,
        optional: dict[str, str] | None = None,
        failures: dict[str, BaseException] | None = None,
        hangs: set[str] | None = None,
    ) -> RecordingPlugin:
        manifest = PluginManifest(
            id=plugin_id,
            version=version,
            dependencies=requires or {},
            optionalDependencies=optional or {},
        )
        # manifest is a ClassVar on Plugin, so every plugin gets its own class.
        cls = type(
            f"Recording_{plugin_id.replace('.', '_')}",
            (RecordingPlugin,),
            {"manifest": manifest},
        )
        plugin = cls(make_context(cls))
        plugin.journal = journal
        plugin.failures = dict(failures or {})
        plugin.hangs = set(hangs or ())
        return plugin

    return make


@pytest.fixture
def clock() -> Clock:
    return Clock()
