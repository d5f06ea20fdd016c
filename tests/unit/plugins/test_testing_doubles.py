"""objectos.testing behaves like the plugin host where plugin code could tell the difference."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from objectos.errors import NotFound, ServiceNotFound, ValidationError
from objectos.kernel.plugin import EventPublisher, ScopedStorage, ServiceDirectory
from objectos.plugins.example import HelloPlugin
from objectos.plugins.storage import ServiceBackedStorage, StoragePlugin
from objectos.testing import (
    LocalServiceDirectory,
    MemoryScopedStorage,
    RecordingEventPublisher,
    load_plugin,
    make_context,
)


class Ledger:
    """A service that shows what it was called with."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def whoami(self, *, caller: str) -> str:
        return caller

    async def echo(self, value: Any) -> Any:
        self.seen.append(value)
        return value

    async def keep(self, value: list[Any]) -> list[Any]:
        value.append("added by the service")
        return value

    async def fail(self) -> None:
        raise NotFound("nothing here", details={"why": "test"})

    def not_async(self) -> int:
        return 1

    async def _private(self) -> int:
        return 1


def test_doubles_satisfy_the_context_protocols() -> None:
    assert isinstance(MemoryScopedStorage(), ScopedStorage)
    assert isinstance(LocalServiceDirectory(), ServiceDirectory)
    assert isinstance(RecordingEventPublisher(), EventPublisher)


async def test_caller_is_the_calling_plugin_and_only_for_methods_that_ask() -> None:
    directory = LocalServiceDirectory(services={"ledger": Ledger()})
    assert await directory.for_caller("com.a").get("ledger").whoami() == "com.a"
    assert await directory.for_caller("com.b").get("ledger").whoami() == "com.b"
    assert await directory.get("ledger").echo(5) == 5  # echo has no caller parameter


async def test_plugin_code_cannot_choose_the_caller() -> None:
    directory = LocalServiceDirectory(services={"ledger": Ledger()})
    with pytest.raises(TypeError, match="caller"):
        await directory.get("ledger").whoami(caller="com.someone.else")


async def test_arguments_and_results_are_copied_like_an_actor_call() -> None:
    directory = LocalServiceDirectory(services={"ledger": Ledger()})
    mine = ["mine"]
    returned = await directory.get("ledger").keep(mine)
    assert mine == ["mine"]
    assert returned == ["mine", "added by the service"]
    with pytest.raises(TypeError):  # a lock cannot be pickled, so it cannot cross actors
        await directory.get("ledger").echo(threading.Lock())


async def test_errors_cross_with_their_code_and_details() -> None:
    directory = LocalServiceDirectory(services={"ledger": Ledger()})
    with pytest.raises(NotFound) as raised:
        await directory.get("ledger").fail()
    assert raised.value.to_dict()["details"] == {"why": "test"}


async def test_only_public_async_methods_of_registered_services_are_callable() -> None:
    directory = LocalServiceDirectory(services={"ledger": Ledger()})
    with pytest.raises(ServiceNotFound):
        await directory.get("missing").anything()
    with pytest.raises(AttributeError):
        await directory.get("ledger").not_async()
    with pytest.raises(AttributeError):
        await directory.get("ledger").nope()
    with pytest.raises(AttributeError):
        await directory.get("ledger")._private()
    assert await directory.names() == ["ledger"]


def test_a_service_name_is_registered_once() -> None:
    directory = LocalServiceDirectory(services={"ledger": Ledger()})
    with pytest.raises(ValueError, match="ledger"):
        directory.for_caller("com.b").register("ledger", Ledger())


async def test_memory_scoped_storage_refuses_what_the_real_storage_refuses() -> None:
    storage = MemoryScopedStorage()
    with pytest.raises(ValidationError):
        await storage.set("k", (1, 2))
    with pytest.raises(ValidationError):
        await storage.set("", 1)


async def test_context_storage_goes_through_the_storage_service_when_it_runs() -> None:
    services = LocalServiceDirectory()
    alone = make_context(HelloPlugin, services=services)
    assert isinstance(alone.storage, MemoryScopedStorage)
    assert alone.storage.scope == "com.example.hello"

    await load_plugin(StoragePlugin, {"mode": "memory"}, services)
    wired = make_context(HelloPlugin, services=services)
    assert isinstance(wired.storage, ServiceBackedStorage)
    await wired.storage.set("k", 1)
    scoped = services.for_caller("com.example.hello").get("storage")
    assert await scoped.keys() == ["k"]


def test_make_context_fills_what_the_host_fills() -> None:
    context = make_context(
        HelloPlugin, config={"greeting": "Hi"}, settings={"databaseUrl": "sqlite+aiosqlite://"}
    )
    assert context.plugin_id == "com.example.hello"
    assert context.manifest is HelloPlugin.manifest
    assert context.config == {"greeting": "Hi"}
    assert context.settings == {"databaseUrl": "sqlite+aiosqlite://"}
    assert context.logger.name == "objectos.plugin.com.example.hello"
