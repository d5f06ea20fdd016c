"""The example plugin: copy this file to start your own.

``com.example.hello`` shows every part of the plugin API in a few lines:

- a **manifest**: id, version, a dependency, a configuration schema, and what it
  contributes;
- a **service** other plugins (and the REST layer) call by name:
  ``await context.services.get("hello").greet("Ada")``;
- **scoped storage**: ``context.storage`` only ever sees this plugin's keys;
- a **hook** on the event bus, and an **event** it triggers itself;
- **health** the kernel polls.

Test it without Ray (see ``tests/unit/plugins/test_example_plugin.py``)::

    from objectos.testing import load_plugin

    hello = await load_plugin(HelloPlugin, {"greeting": "Hi"})
    await hello.context.services.get("hello").greet("Ada")
    # {"message": "Hi, Ada!", "count": 1}
"""

from __future__ import annotations

import asyncio
from typing import Any

from objectos.errors import InvalidField
from objectos.kernel.plugin import Plugin, PluginContext, ScopedStorage
from objectos.protocol.manifest import PluginManifest

MAX_NAME_LENGTH = 100


class Counters:
    """Integer counters kept in the plugin's scoped storage."""

    def __init__(self, storage: ScopedStorage) -> None:
        self.storage = storage
        # Calls into one actor interleave at every ``await``: without the lock two
        # concurrent increments could both read 1 and both write 2.
        self._lock = asyncio.Lock()

    async def increment(self, key: str) -> int:
        async with self._lock:
            value = await self.storage.get(key, 0) + 1
            await self.storage.set(key, value)
            return value

    async def get(self, key: str) -> int:
        return int(await self.storage.get(key, 0))


class HelloService:
    """The ``hello`` service.

    A service is its own small class rather than the plugin itself: the host
    exposes every public async method of what is registered, and ``on_disable``
    or ``on_uninstall`` must not be callable by other plugins.

    Arguments and results cross an actor boundary (they are pickled), so they
    are plain JSON-like values: ``str`` in, ``dict`` out.
    """

    def __init__(self, context: PluginContext, counters: Counters) -> None:
        self.context = context
        self.counters = counters

    async def greet(self, name: str) -> dict[str, Any]:
        """Greet ``name``; ``count`` says how many times ``name`` was greeted, this one included."""
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise InvalidField(
                f"name must be a non-empty string of at most {MAX_NAME_LENGTH} characters",
                details={"field": "name"},
            )
        # Keys are this plugin's own: no need to prefix them with the plugin id.
        count = await self.counters.increment(f"greetings/{name}")
        await self.counters.increment("greetings")
        # Whoever hooked "hello.greeted" runs now; trigger returns their results,
        # which a greeting does not need.
        await self.context.trigger("hello.greeted", {"name": name, "count": count})
        return {"message": f"{self.context.config['greeting']}, {name}!", "count": count}


class HelloPlugin(Plugin):
    """Greets people, counts greetings per name, counts record inserts."""

    # The manifest is plain data: the kernel reads it before creating the plugin
    # (dependency order, configuration checks), so it must not depend on runtime state.
    manifest = PluginManifest.model_validate(
        {
            "id": "com.example.hello",
            "version": "0.1.0",
            "name": "Hello",
            "description": "Example plugin: a greeting service, a hook and an event.",
            "author": "ObjectOS",
            # Started after the storage plugin; any 0.x >= 0.1.0 will do.
            "dependencies": {"com.objectos.storage": "^0.1.0"},
            "configuration": {
                "properties": {
                    "greeting": {
                        "type": "string",
                        "default": "Hello",
                        "description": "First word of every greeting.",
                    },
                },
            },
            "contributes": {"services": ["hello"], "events": ["hello.greeted"]},
        }
    )

    def __init__(self, context: PluginContext) -> None:
        # Keep __init__ cheap and side-effect free; real work starts in on_load.
        super().__init__(context)
        self.counters = Counters(context.storage)

    async def on_load(self) -> None:
        # Register what we offer; the host publishes it to the kernel after on_load.
        self.context.register_service("hello", HelloService(self.context, self.counters))
        # "*" stands for any object: count inserts into every object.
        self.context.hook("data.afterInsert.*", self.count_insert)

    async def count_insert(self, payload: dict[str, Any]) -> None:
        """Hook handler: runs after a record is inserted anywhere in the hub."""
        await self.counters.increment("inserts")

    async def health(self) -> dict[str, Any]:
        # Polled every second or so: a couple of cheap reads, nothing more.
        return {
            "ready": True,
            "greetings": await self.counters.get("greetings"),
            "inserts": await self.counters.get("inserts"),
        }
