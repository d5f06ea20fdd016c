"""The example plugin, end to end through objectos.testing (and the real storage plugin)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from objectos.errors import InvalidField
from objectos.plugins.example import HelloPlugin
from objectos.plugins.storage import ServiceBackedStorage, StoragePlugin
from objectos.testing import (
    LocalServiceDirectory,
    MemoryScopedStorage,
    RecordingEventPublisher,
    load_plugin,
    make_context,
)


@pytest.fixture
async def services() -> LocalServiceDirectory:
    """A directory where the storage plugin already runs, as the manifest's dependency demands."""
    directory = LocalServiceDirectory()
    await load_plugin(StoragePlugin, {"mode": "memory"}, directory)
    return directory


async def test_greet_counts_greetings_per_name(services: LocalServiceDirectory) -> None:
    await load_plugin(HelloPlugin, {}, services)
    hello = services.for_caller("com.example.caller").get("hello")

    assert await hello.greet("Ada") == {"message": "Hello, Ada!", "count": 1}
    assert await hello.greet("Ada") == {"message": "Hello, Ada!", "count": 2}
    assert await hello.greet("Grace") == {"message": "Hello, Grace!", "count": 1}


async def test_counts_live_in_the_plugins_own_storage_scope(
    services: LocalServiceDirectory,
) -> None:
    plugin = await load_plugin(HelloPlugin, {}, services)
    await services.get("hello").greet("Ada")

    assert isinstance(plugin.context.storage, ServiceBackedStorage)
    assert await plugin.context.storage.keys() == ["greetings", "greetings/Ada"]
    someone_else = ServiceBackedStorage(services.for_caller("com.example.other"))
    assert await someone_else.keys() == []


async def test_greeting_comes_from_configuration(services: LocalServiceDirectory) -> None:
    await load_plugin(HelloPlugin, {"greeting": "Bonjour"}, services)
    assert (await services.get("hello").greet("Ada"))["message"] == "Bonjour, Ada!"


def test_configuration_defaults_and_checks() -> None:
    assert make_context(HelloPlugin).config == {"greeting": "Hello"}
    with pytest.raises(ValueError, match="greeting"):
        HelloPlugin.manifest.resolve_config({"greeting": 42})
    with pytest.raises(ValueError, match="unknown"):
        HelloPlugin.manifest.resolve_config({"greting": "Hi"})
    with pytest.raises(ValueError, match="greeting"):
        make_context(HelloPlugin, config={"greeting": ["Hi"]})


def test_manifest_declares_its_dependency_and_contributions() -> None:
    manifest = HelloPlugin.manifest
    assert manifest.dependencies == {"com.objectos.storage": "^0.1.0"}
    assert manifest.contributes.services == ["hello"]
    assert manifest.contributes.events == ["hello.greeted"]


async def test_greeting_triggers_an_event() -> None:
    events = RecordingEventPublisher()
    plugin = await load_plugin(HelloPlugin, events=events)
    await plugin.context.provided_services["hello"].greet("Ada")
    await plugin.context.provided_services["hello"].greet("Ada")
    assert events.triggered == [
        ("hello.greeted", {"name": "Ada", "count": 1}),
        ("hello.greeted", {"name": "Ada", "count": 2}),
    ]


async def test_insert_hook_counts_inserts_and_health_reports_counts() -> None:
    context = make_context(HelloPlugin)
    plugin = HelloPlugin(context)
    await plugin.on_load()

    [hook] = context.hooks
    assert hook.event == "data.afterInsert.*"
    for record in ({"object": "account", "id": "1"}, {"object": "contact", "id": "7"}):
        await hook.handler(record)
    await context.provided_services["hello"].greet("Ada")

    assert await plugin.health() == {"ready": True, "greetings": 1, "inserts": 2}


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, None, 42])
async def test_bad_names_are_refused(name: object) -> None:
    plugin = await load_plugin(HelloPlugin)
    with pytest.raises(InvalidField):
        await plugin.context.services.get("hello").greet(name)
    assert await plugin.health() == {"ready": True, "greetings": 0, "inserts": 0}


async def test_concurrent_greetings_are_all_counted(tmp_path: Path) -> None:
    # A real database makes every storage call yield to the event loop, so
    # greetings interleave the way concurrent actor calls do.
    services = LocalServiceDirectory()
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    storage = await load_plugin(StoragePlugin, {"url": url}, services)
    await load_plugin(HelloPlugin, {}, services)

    results = await asyncio.gather(*(services.get("hello").greet("Ada") for _ in range(20)))

    assert sorted(r["count"] for r in results) == list(range(1, 21))
    await storage.on_disable()


async def test_plugin_works_with_plain_memory_storage_too() -> None:
    storage = MemoryScopedStorage("com.example.hello")
    plugin = await load_plugin(HelloPlugin, storage=storage)
    await plugin.context.services.get("hello").greet("Ada")
    assert await storage.get("greetings/Ada") == 1
