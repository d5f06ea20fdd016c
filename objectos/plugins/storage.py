"""The storage core plugin (``com.objectos.storage``): key-value storage scoped per plugin.

Every plugin gets ``context.storage``, a :class:`ScopedStorage`. In a running hub
that object is a :class:`ServiceBackedStorage`: it forwards each call to the
``storage`` service this plugin registers, and the plugin host adds the calling
plugin's id out-of-band as the keyword-only ``caller`` argument. The service
uses ``caller`` as the *scope* of every key, and no method takes a scope, so a
plugin can only ever reach its own keys — whatever it puts in a key
(``"../other"``, NUL, unicode), the key is just a string inside its scope.

Where the keys live is a :class:`StorageEngine`:

- :class:`MemoryStorageEngine` (``mode: memory``) — a dict; gone when the
  storage plugin's actor stops. For tests and throwaway hubs.
- :class:`SQLStorageEngine` (``mode: persistent``, the default) — one table
  ``_plugin_storage(scope, key, value JSON, updated_at)`` with primary key
  ``(scope, key)`` in the hub database, through SQLAlchemy async Core: SQLite via
  aiosqlite (WAL) on one machine, PostgreSQL via asyncpg on a cluster, chosen by URL.

Both engines accept exactly the same keys and values, so code tested against
the memory engine behaves the same on SQLite and PostgreSQL:

- a key is a non-empty string of at most :data:`MAX_KEY_LENGTH` characters,
  valid UTF-8, without NUL (PostgreSQL text cannot hold ``\\x00``);
- a value is JSON: ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``
  and ``dict`` with string keys, nested at most :data:`MAX_VALUE_DEPTH` deep and at
  most :data:`MAX_VALUE_BYTES` once serialized. Tuples, sets, bytes, NaN, ... are
  refused with a :class:`~objectos.errors.ValidationError` instead of being
  silently changed (a tuple would come back as a list, an int dict key as a str).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from objectos.data.schema import enable_wal
from objectos.errors import ConfigError, ServiceUnavailable, ValidationError
from objectos.kernel.plugin import Plugin, ServiceDirectory
from objectos.protocol.manifest import Contributes, PluginConfiguration, PluginManifest

STORAGE_SERVICE = "storage"
"""Name under which the storage plugin registers its service."""

DEFAULT_URL = "sqlite+aiosqlite:///objectos.db"
"""Database used when the host passes no ``url`` (a SQLite file in the working directory)."""

MAX_SCOPE_LENGTH = 255
MAX_KEY_LENGTH = 512
MAX_VALUE_BYTES = 1024 * 1024
MAX_VALUE_DEPTH = 64

TABLE_NAME = "_plugin_storage"


@runtime_checkable
class StorageEngine(Protocol):
    """Where scoped keys live. ``scope`` is a plugin id, chosen by the service, never by a plugin.

    Engines validate scope, key and value themselves (see the module docstring),
    so every engine refuses the same inputs with the same ValidationError.
    """

    async def start(self) -> None:
        """Open connections / create the table; call once before use."""
        ...

    async def close(self) -> None:
        """Release connections; the engine cannot be used afterwards."""
        ...

    async def ping(self) -> None:
        """Raise if the engine cannot serve requests right now."""
        ...

    async def get(self, scope: str, key: str, default: Any = None) -> Any: ...

    async def set(self, scope: str, key: str, value: Any) -> None: ...

    async def delete(self, scope: str, key: str) -> bool:
        """Remove a key; True if it existed."""
        ...

    async def keys(self, scope: str, prefix: str = "") -> list[str]:
        """Keys of ``scope`` starting with ``prefix``, sorted by code point."""
        ...


# --------------------------------------------------------------------------- validation


def _check_text(what: str, value: Any, max_length: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(
            f"storage {what} must be a string, not {type(value).__name__}",
            details={what: repr(value)[:100]},
        )
    if not value and not allow_empty:
        raise ValidationError(f"storage {what} must not be empty")
    if len(value) > max_length:
        raise ValidationError(
            f"storage {what} is {len(value)} characters long; the limit is {max_length}",
            details={"length": len(value), "limit": max_length},
        )
    if "\x00" in value:
        # PostgreSQL text cannot store NUL; refuse it everywhere so engines agree.
        raise ValidationError(f"storage {what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"storage {what} is not valid UTF-8 (lone surrogate)") from None
    return value


def _check_scope(scope: Any) -> str:
    return _check_text("scope", scope, MAX_SCOPE_LENGTH)


def _check_key(key: Any) -> str:
    return _check_text("key", key, MAX_KEY_LENGTH)


def _check_prefix(prefix: Any) -> str:
    return _check_text("prefix", prefix, MAX_KEY_LENGTH, allow_empty=True)


def _check_json_value(value: Any) -> None:
    """Refuse anything json.dumps would change, refuse or choke on.

    Iterative on purpose: a deeply nested or circular value must give a
    ValidationError, not a RecursionError from inside json. A circular value
    is caught by the depth limit, a huge one by the node budget (every JSON
    node takes at least one byte, so more nodes than MAX_VALUE_BYTES can never
    fit anyway).
    """
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    budget = MAX_VALUE_BYTES
    while stack:
        item, path, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ValidationError(f"storage value is larger than {MAX_VALUE_BYTES} bytes as JSON")
        if depth > MAX_VALUE_DEPTH:
            raise ValidationError(
                f"storage value is nested deeper than {MAX_VALUE_DEPTH} levels "
                f"(or is circular) at {path[:200]}"
            )
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(f"storage value at {path} is {item!r}; JSON has no NaN/Inf")
            continue
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError(
                    f"storage value at {path} is not valid UTF-8 (lone surrogate)"
                ) from None
            continue
        if isinstance(item, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
            continue
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise ValidationError(
                        f"storage value at {path} has a {type(k).__name__} key {k!r}; "
                        "JSON object keys are strings"
                    )
                stack.append((k, f"{path}.{k}", depth + 1))
                stack.append((v, f"{path}.{k}", depth + 1))
            continue
        raise ValidationError(
            f"storage value at {path} is a {type(item).__name__}; only JSON values "
            "(None, bool, int, float, str, list, dict with str keys) can be stored",
            details={"path": path, "type": type(item).__name__},
        )


def encode_value(value: Any) -> str:
    """Serialize a storable value to compact JSON, or raise ValidationError."""
    _check_json_value(value)
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise ValidationError(
            f"storage value is {size} bytes as JSON; the limit is {MAX_VALUE_BYTES}",
            details={"bytes": size, "limit": MAX_VALUE_BYTES},
        )
    return text


# --------------------------------------------------------------------------- engines


class MemoryStorageEngine:
    """Keys in a dict, values kept as JSON text.

    Keeping the serialized text (not the object) gives the same semantics as the
    database: a caller mutating a value it got back, or one it stored, changes
    nothing in storage.
    """

    def __init__(self) -> None:
        self._scopes: dict[str, dict[str, str]] = {}

    async def start(self) -> None:
        """Nothing to open; present so both engines share one lifecycle."""

    async def close(self) -> None:
        """Nothing to release; the data lives as long as this object."""

    async def ping(self) -> None:
        """Always ready."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get(self, scope: str, key: str, default: Any = None) -> Any:
        text = self._scopes.get(_check_scope(scope), {}).get(_check_key(key))
        return default if text is None else json.loads(text)

    async def set(self, scope: str, key: str, value: Any) -> None:
        scope, key, text = _check_scope(scope), _check_key(key), encode_value(value)
        self._scopes.setdefault(scope, {})[key] = text

    async def delete(self, scope: str, key: str) -> bool:
        entries = self._scopes.get(_check_scope(scope), {})
        return entries.pop(_check_key(key), None) is not None

    async def keys(self, scope: str, prefix: str = "") -> list[str]:
        prefix = _check_prefix(prefix)
        return sorted(k for k in self._scopes.get(_check_scope(scope), {}) if k.startswith(prefix))


def _storage_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE_NAME,
        metadata,
        sa.Column("scope", sa.String(MAX_SCOPE_LENGTH), primary_key=True),
        sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
        sa.Column("value", sa.JSON(none_as_null=False), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def _strict_json_dumps(value: Any) -> str:
    # Values are validated before they reach SQLAlchemy; allow_nan=False is a backstop.
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


class SQLStorageEngine:
    """Keys in the ``_plugin_storage`` table of the hub database (SQLAlchemy async Core).

    ``url`` is an async SQLAlchemy URL: ``sqlite+aiosqlite:///path/objectos.db``
    (the parent directory is created; journal mode WAL so readers never block the
    writer) or ``postgresql+asyncpg://user@host/db``. Other dialects are refused,
    because the upsert is dialect-specific.

    The table is created on :meth:`start` if missing and never dropped or
    altered here; schema changes belong to migrations.
    """

    SUPPORTED_DIALECTS = ("sqlite", "postgresql")

    def __init__(self, url: str, *, echo: bool = False) -> None:
        """Remember the database; nothing connects before :meth:`start`."""
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"storage url {url!r} is not a database URL: {exc}") from None
        if parsed.get_backend_name() not in self.SUPPORTED_DIALECTS:
            raise ConfigError(
                f"storage url {parsed.render_as_string(hide_password=True)!r} uses "
                f"{parsed.get_backend_name()!r}; supported: {', '.join(self.SUPPORTED_DIALECTS)}"
            )
        self.url = parsed
        self._echo = echo
        self._engine: AsyncEngine | None = None
        self._closed = False
        self.table = _storage_table(sa.MetaData())

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    async def start(self) -> None:
        """Connect, switch SQLite to WAL, create the table if it is missing."""
        if self._engine is not None or self._closed:
            raise RuntimeError("SQLStorageEngine.start() may be called once")
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            self.url, echo=self._echo, json_serializer=_strict_json_dumps, pool_pre_ping=True
        )
        if self.dialect == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(self.table.metadata.create_all, checkfirst=True)
        except Exception:
            await engine.dispose()
            raise
        self._engine = engine

    async def close(self) -> None:
        """Dispose of the connection pool; idempotent."""
        self._closed = True
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            state = "closed" if self._closed else "not started"
            raise ServiceUnavailable(f"storage engine is {state}")
        return self._engine

    async def ping(self) -> None:
        async with self._require_engine().connect() as conn:
            await conn.execute(sa.select(1))

    async def get(self, scope: str, key: str, default: Any = None) -> Any:
        scope, key = _check_scope(scope), _check_key(key)
        t = self.table
        async with self._require_engine().connect() as conn:
            row = (
                await conn.execute(sa.select(t.c.value).where(t.c.scope == scope, t.c.key == key))
            ).first()
        # A stored JSON null is a row whose value is None: the key exists, so no default.
        return default if row is None else row.value

    async def set(self, scope: str, key: str, value: Any) -> None:
        scope, key = _check_scope(scope), _check_key(key)
        encode_value(value)  # validation + size limit; SQLAlchemy serializes for the driver
        insert = self._insert()
        stmt = insert.values(scope=scope, key=key, value=value, updated_at=datetime.now(UTC))
        stmt = stmt.on_conflict_do_update(
            index_elements=[self.table.c.scope, self.table.c.key],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        async with self._require_engine().begin() as conn:
            await conn.execute(stmt)

    async def delete(self, scope: str, key: str) -> bool:
        scope, key = _check_scope(scope), _check_key(key)
        t = self.table
        async with self._require_engine().begin() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.scope == scope, t.c.key == key))
        return bool(result.rowcount)

    async def keys(self, scope: str, prefix: str = "") -> list[str]:
        scope, prefix = _check_scope(scope), _check_prefix(prefix)
        t = self.table
        query = sa.select(t.c.key).where(t.c.scope == scope)
        if prefix:
            # Not LIKE: SQLite's LIKE ignores ASCII case and both treat % and _ as
            # wildcards. substr counts characters on both dialects, like len().
            query = query.where(sa.func.substr(t.c.key, 1, len(prefix)) == prefix)
        async with self._require_engine().connect() as conn:
            found = (await conn.execute(query)).scalars().all()
        # Sort here: database collations order strings differently; Python's is by code point.
        return sorted(found)

    def _insert(self) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self.table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(self.table)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets readers run while one writer commits; busy_timeout makes a second
    # writer wait instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=5000")
        enable_wal(cursor, timeout_s=5.0)
    finally:
        cursor.close()


def create_storage_engine(mode: str, url: str | None = None) -> StorageEngine:
    """The engine for the plugin's ``mode`` (``memory`` | ``persistent``) and ``url``."""
    if mode == "memory":
        return MemoryStorageEngine()
    if mode == "persistent":
        return SQLStorageEngine(url or DEFAULT_URL)
    raise ConfigError(f"storage mode must be 'memory' or 'persistent', not {mode!r}")


# --------------------------------------------------------------------------- service


def _check_caller(caller: Any) -> str:
    # The host always fills caller; anything else means it was not wired correctly,
    # and guessing a scope would be the one way to leak another plugin's keys.
    if not isinstance(caller, str) or not caller:
        raise ValidationError("storage service needs the calling plugin id (host-provided caller)")
    return caller


class StorageService:
    """The ``storage`` service: the four ScopedStorage methods, scoped by ``caller``.

    ``caller`` is keyword-only and filled by the plugin host with the id of the
    plugin making the call; there is deliberately no scope argument.
    """

    def __init__(self, engine: StorageEngine) -> None:
        self._engine = engine

    async def get(self, key: str, default: Any = None, *, caller: str) -> Any:
        return await self._engine.get(_check_caller(caller), key, default)

    async def set(self, key: str, value: Any, *, caller: str) -> None:
        await self._engine.set(_check_caller(caller), key, value)

    async def delete(self, key: str, *, caller: str) -> bool:
        return await self._engine.delete(_check_caller(caller), key)

    async def keys(self, prefix: str = "", *, caller: str) -> list[str]:
        return await self._engine.keys(_check_caller(caller), prefix)


class StoragePlugin(Plugin):
    """Core plugin offering the ``storage`` service to every other plugin.

    Configuration: ``mode`` (``persistent`` by default, or ``memory``) and
    ``url``, the hub database URL the host passes from the hub manifest
    (``database.url``); without it the hub-wide ``databaseUrl`` setting of the
    context is used, and without that :data:`DEFAULT_URL`.
    """

    manifest = PluginManifest(
        id="com.objectos.storage",
        version="0.1.0",
        name="Storage",
        description="Key-value storage scoped per plugin.",
        author="ObjectOS",
        configuration=PluginConfiguration.model_validate(
            {
                "title": "Storage",
                "properties": {
                    "mode": {
                        "type": "string",
                        "default": "persistent",
                        "enum": ["memory", "persistent"],
                        "description": "memory: lost when the actor stops; persistent: database.",
                    },
                    "url": {
                        "type": "string",
                        "default": None,
                        "secret": True,  # URLs carry database passwords
                        "description": "SQLAlchemy async URL of the hub database (host-set).",
                    },
                },
            }
        ),
        contributes=Contributes(services=[STORAGE_SERVICE]),
    )

    engine: StorageEngine | None = None

    def database_url(self) -> str | None:
        """``url`` from the configuration, else the hub's ``databaseUrl`` setting, else None.

        ``{dataDir}`` (the hub manifest's placeholder) becomes the hub's data directory.
        """
        settings = self.context.settings
        url = self.context.config.get("url") or settings.get("databaseUrl")
        if url and "{dataDir}" in url:
            url = url.replace("{dataDir}", str(settings.get("dataDir") or ".objectos"))
        return str(url) if url else None

    async def on_load(self) -> None:
        engine = create_storage_engine(
            self.context.config.get("mode") or "persistent", self.database_url()
        )
        await engine.start()
        self.engine = engine
        # A separate service object, not self: the host exposes every public async
        # method of what is registered, and lifecycle hooks must not be callable.
        self.context.register_service(STORAGE_SERVICE, StorageService(engine))

    async def on_disable(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await engine.close()

    async def health(self) -> dict[str, Any]:
        if self.engine is None:
            return {"ready": False, "reason": "not loaded"}
        await self.engine.ping()
        return {"ready": True, "mode": self.context.config.get("mode") or "persistent"}


class ServiceBackedStorage:
    """The ScopedStorage a plugin host puts into every plugin's context.

    Forwards each call to the ``storage`` service. It cannot name a scope: the
    host attaches the calling plugin's id as ``caller`` and the service scopes by it.
    The proxy is looked up on every call so a restarted storage plugin is found again.
    """

    def __init__(self, services: ServiceDirectory, service_name: str = STORAGE_SERVICE) -> None:
        self._services = services
        self._service_name = service_name

    def _service(self) -> Any:
        return self._services.get(self._service_name)

    async def get(self, key: str, default: Any = None) -> Any:
        return await self._service().get(key, default)

    async def set(self, key: str, value: Any) -> None:
        await self._service().set(key, value)

    async def delete(self, key: str) -> bool:
        return bool(await self._service().delete(key))

    async def keys(self, prefix: str = "") -> list[str]:
        return list(await self._service().keys(prefix))


__all__ = [
    "DEFAULT_URL",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "STORAGE_SERVICE",
    "MemoryStorageEngine",
    "SQLStorageEngine",
    "ServiceBackedStorage",
    "StorageEngine",
    "StoragePlugin",
    "StorageService",
    "create_storage_engine",
    "encode_value",
]
