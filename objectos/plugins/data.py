"""The data core plugin (``com.objectos.data``): the hub's schema, once, and a ``data`` service.

``on_load`` reads the hub's metadata (``metadataDirs`` of the hub settings,
or the plugin's ``metadata`` configuration), opens the hub database
(``databaseUrl``, or ``url``) and migrates the schema to the metadata. This
is the only place a hub migrates: HTTP replicas build their own in-process
:class:`~objectos.data.DataEngine` from the same URL and metadata and wait
(503) until this plugin runs, so they never race a migration.

It registers the ``data`` service, through which other plugins read and write
records **as a system actor** recorded as ``plugin:<caller id>`` (they are
trusted server code: they may write readonly fields and ``owner``). Writes
made through the service do not run plugin data hooks: a hook that writes
through the service would otherwise call itself.

``health()`` reports the metadata fingerprint (``metadataVersion``, equal for
equal metadata in any process; replicas compare theirs with it to notice a
reload) and what the migration did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data.actor import Actor
from objectos.data.engine import DataEngine
from objectos.data.migrate import MigrationPlan
from objectos.data.query import parse_query_ast
from objectos.data.schema import create_engine
from objectos.errors import ConfigError
from objectos.kernel.plugin import Plugin
from objectos.metadata.loader import content_etag
from objectos.metadata.registry import MetadataRegistry
from objectos.protocol.manifest import Contributes, PluginConfiguration, PluginManifest

DATA_SERVICE = "data"
"""Name under which the data plugin registers its service."""

DATA_PLUGIN_ID = "com.objectos.data"


def metadata_fingerprint(registry: MetadataRegistry) -> str:
    """An ETag of all metadata: equal in every process that loaded the same files."""
    items = [[k, i.name, i.etag] for k in registry.kinds() for i in registry.items(k)]
    return content_etag({"items": items})


def database_url(settings: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The configured ``url`` or the hub's ``databaseUrl``, with ``{dataDir}`` filled in."""
    url = config.get("url") or settings.get("databaseUrl")
    if not url:
        raise ConfigError("the data plugin needs a database URL (hub database.url)")
    if "{dataDir}" in url:
        url = url.replace("{dataDir}", str(settings.get("dataDir") or ".objectos"))
    return str(url)


def metadata_dirs(settings: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The configured ``metadata`` directories or the hub's ``metadataDirs``."""
    dirs = config.get("metadata") or settings.get("metadataDirs")
    if not dirs:
        raise ConfigError("the data plugin needs metadata directories (hub metadata)")
    return [str(d) for d in dirs]


class DataService:
    """The ``data`` service: CRUD for other plugins, as a system actor.

    Arguments and results are plain JSON-like values (they cross actor
    boundaries): queries are QueryAST mappings, results records or
    ``{records, pagination}``. ``caller`` is filled in by the hub.
    """

    def __init__(self, engine: DataEngine) -> None:
        self._engine = engine

    @staticmethod
    def _actor(caller: str) -> Actor:
        return Actor.system_actor(f"plugin:{caller}")

    async def find(
        self, object_name: str, query: Mapping[str, Any] | None = None, *, caller: str
    ) -> dict[str, Any]:
        """Records matching a QueryAST: ``{records, pagination}``."""
        spec = parse_query_ast(dict(query or {}))
        result = await self._engine.find(object_name, spec, actor=self._actor(caller))
        return {"records": result.records, "pagination": result.pagination()}

    async def get(self, object_name: str, record_id: str, *, caller: str) -> dict[str, Any]:
        """One record (RecordNotFound if missing)."""
        return await self._engine.find_one(object_name, record_id, actor=self._actor(caller))

    async def count(
        self, object_name: str, where: Mapping[str, Any] | None = None, *, caller: str
    ) -> int:
        """How many records match the filter ``where``."""
        return await self._engine.count(object_name, where, actor=self._actor(caller))

    async def insert(
        self, object_name: str, data: Mapping[str, Any], *, caller: str
    ) -> dict[str, Any]:
        """Create a record; returns it as stored."""
        return await self._engine.insert(object_name, data, actor=self._actor(caller))

    async def update(
        self,
        object_name: str,
        record_id: str,
        changes: Mapping[str, Any],
        expected_version: int | None = None,
        *,
        caller: str,
    ) -> dict[str, Any]:
        """Change fields of a record (ConcurrentModification if ``expected_version`` is stale)."""
        return await self._engine.update(
            object_name,
            record_id,
            changes,
            actor=self._actor(caller),
            expected_version=expected_version,
        )

    async def delete(
        self,
        object_name: str,
        record_id: str,
        expected_version: int | None = None,
        *,
        caller: str,
    ) -> dict[str, Any]:
        """Delete a record; returns its last state."""
        return await self._engine.delete(
            object_name, record_id, actor=self._actor(caller), expected_version=expected_version
        )

    async def batch(
        self,
        object_name: str,
        operations: Sequence[Mapping[str, Any]],
        all_or_none: bool = True,
        *,
        caller: str,
    ) -> list[dict[str, Any]]:
        """Batch operations (``{operation, id, data, expectedVersion}``); one result each."""
        results = await self._engine.batch(
            object_name, operations, actor=self._actor(caller), all_or_none=all_or_none
        )
        return [r.to_dict() for r in results]

    async def objects(self) -> list[str]:
        """Names of every object."""
        return sorted(self._engine.registry.objects)


class DataPlugin(Plugin):
    """Core plugin: migrates the hub database to the metadata and offers ``data``."""

    manifest = PluginManifest(
        id=DATA_PLUGIN_ID,
        version="0.1.0",
        name="Data",
        description="Objects from metadata: schema migration and a data service.",
        author="ObjectOS",
        configuration=PluginConfiguration.model_validate(
            {
                "title": "Data",
                "properties": {
                    "url": {
                        "type": "string",
                        "default": None,
                        "secret": True,  # URLs carry database passwords
                        "description": "SQLAlchemy async URL (default: the hub's database.url).",
                    },
                    "metadata": {
                        "type": "array",
                        "default": None,
                        "description": "Metadata directories (default: the hub's metadata).",
                    },
                },
            }
        ),
        contributes=Contributes(services=[DATA_SERVICE]),
    )

    engine: DataEngine | None = None
    plan: MigrationPlan | None = None
    _database: AsyncEngine | None = None

    async def on_load(self) -> None:
        settings, config = self.context.settings, self.context.config
        url = database_url(settings, config)
        # Loading reads files: off the event loop.
        registry = await asyncio.to_thread(MetadataRegistry.load, metadata_dirs(settings, config))
        database = create_engine(url)
        engine = DataEngine(database, registry)
        try:
            self.plan = await engine.migrate()
        except BaseException:
            await database.dispose()
            raise
        self.engine, self._database = engine, database
        self.context.logger.info("data: %s", self.plan.describe())
        self.context.register_service(DATA_SERVICE, DataService(engine))

    async def on_disable(self) -> None:
        if self._database is not None:
            database, self._database, self.engine = self._database, None, None
            await database.dispose()

    async def health(self) -> dict[str, Any]:
        if self.engine is None:
            return {"ready": False, "reason": "not loaded"}
        registry = self.engine.registry
        return {
            "ready": True,
            "metadataVersion": metadata_fingerprint(registry),
            "objects": len(registry.objects),
            "schema": {
                "migrated": bool(self.plan and self.plan.applied),
                "steps": len(self.plan.steps) if self.plan else 0,
            },
        }


__all__ = [
    "DATA_PLUGIN_ID",
    "DATA_SERVICE",
    "DataPlugin",
    "DataService",
    "database_url",
    "metadata_dirs",
    "metadata_fingerprint",
]
