"""The audit core plugin (``com.objectos.audit``): the hub's audit trail, kept current.

``on_load`` opens the hub database (``url``, default the hub's
``databaseUrl``), creates ``_audit_events`` and ``_audit_cursor`` when they
are missing, and starts three things it owns and stops in ``on_disable``:

- the **projection** (:class:`~objectos.audit.projection.AuditProjection`):
  tails the change log and stores one event per write, with old and new
  values and the writer's request context, ``batchSize`` entries per
  transaction, polling every ``pollIntervalMs`` when idle. The cursor is
  committed with each batch, so after a crash (the kernel restarts this
  plugin's process) it resumes where it stopped: no event lost, none twice;
- the **sink** (:class:`~objectos.audit.sink.SQLAuditSink`) behind
  ``record_event``, for events that are not writes, flushed every
  ``flushIntervalMs``;
- the **retention policy** (:class:`~objectos.audit.retention.RetentionPolicy`):
  prunes events older than ``retentionDays`` (0: keep forever) at every
  time of the cron expression ``pruneSchedule`` (UTC).

It depends on the data plugin, which migrates the change log (and adds its
audit columns to older databases) before this plugin starts.

The ``audit`` service (:class:`AuditService`) searches, pages per record,
exports in chunks and records non-write events for other plugins. HTTP
replicas serve ``/api/v1/audit`` reading the table directly
(:mod:`objectos.api.audit`), and record denials and the reads of the
objects listed in ``auditReads`` in-process
(:class:`~objectos.audit.audited.AuditedDataService`; see
:func:`audit_reads_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.audit.events import AuditEvent
from objectos.audit.export import export_chunk, export_format
from objectos.audit.projection import AuditProjection
from objectos.audit.retention import DEFAULT_RETENTION_DAYS, DEFAULT_SCHEDULE, RetentionPolicy
from objectos.audit.sink import AUDIT_SERVICE, SQLAuditSink
from objectos.audit.store import AuditQuery, AuditStore
from objectos.data.changelog import ChangeLog
from objectos.data.schema import create_engine
from objectos.errors import ConfigError, FieldError
from objectos.kernel.plugin import Plugin
from objectos.plugins.data import DATA_PLUGIN_ID, database_url
from objectos.protocol.manifest import Contributes, PluginConfiguration, PluginManifest

AUDIT_PLUGIN_ID = "com.objectos.audit"

_LIMITS = {
    "batchSize": (1, 10_000),
    "pollIntervalMs": (10, 600_000),
    "flushIntervalMs": (10, 60_000),
}


def audit_reads_of(plugins: Mapping[str, Any]) -> frozenset[str]:
    """The ``auditReads`` objects of a hub manifest's plugins (empty when audit is off).

    ``plugins`` is ``HubManifest.plugins`` (entries as models or dicts);
    HTTP replicas pass the result to ``AuditedDataService(audit_reads=...)``.
    """
    entry = plugins.get(AUDIT_PLUGIN_ID)
    if entry is None:
        return frozenset()
    if isinstance(entry, Mapping):
        enabled, config = entry.get("enabled", True), entry.get("config") or {}
    else:
        enabled, config = entry.enabled, entry.config
    return frozenset(config.get("auditReads") or ()) if enabled else frozenset()


class AuditService:
    """The ``audit`` service. Arguments and results are JSON-like (they cross actors).

    Queries are the parameters of ``GET /api/v1/audit/events`` as a dict
    (``object recordId actor action from to ip requestId limit cursor
    order``); results are ``{events, pagination}``.
    """

    def __init__(
        self,
        store: AuditStore,
        sink: SQLAuditSink,
        projection: AuditProjection,
        retention: RetentionPolicy,
    ) -> None:
        self._store = store
        self._sink = sink
        self._projection = projection
        self._retention = retention

    async def search(
        self, query: Mapping[str, Any] | None = None, count: bool = False
    ) -> dict[str, Any]:
        """Events matching ``query``, newest first unless ``order: asc``."""
        page = await self._store.search(AuditQuery.from_params(query or {}), count=count)
        return page.to_dict()

    async def trail(
        self, object_name: str, record_id: str, query: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The events of one record (``query`` may narrow and page them)."""
        page = await self._store.trail(object_name, record_id, AuditQuery.from_params(query or {}))
        return page.to_dict()

    async def export_chunk(
        self,
        format: str = "jsonl",
        query: Mapping[str, Any] | None = None,
        max_events: int = 1000,
    ) -> dict[str, Any]:
        """One chunk of a CSV/JSON-lines export: ``{data, cursor, done}``.

        Call again with ``query`` plus ``cursor`` until ``done``; the CSV
        header comes with the first chunk only.
        """
        return await export_chunk(
            self._store,
            AuditQuery.from_params(query or {}),
            export_format(format),
            max_events=max_events,
        )

    async def record_event(self, event: Mapping[str, Any], *, caller: str) -> dict[str, Any]:
        """Record a non-write event (``AuditEvent`` JSON); returns ``{id}`` once committed.

        The calling plugin is kept in ``details.recordedBy`` (filled in by
        the hub, so it cannot be forged); write actions are refused, only
        the change log may claim a write.
        """
        parsed = AuditEvent.from_dict(event)
        parsed = replace(parsed, details={**parsed.details, "recordedBy": caller})
        await self._sink.record_durably(parsed)
        return {"id": parsed.id}

    async def prune(self) -> dict[str, Any]:
        """Apply the retention policy now: ``{removed}``."""
        return {"removed": await self._retention.prune_now()}

    async def status(self) -> dict[str, Any]:
        """Projection cursor and lag, sink and retention state."""
        latest = await self._projection.log.latest()
        projection = self._projection.status()
        cursor = projection["cursor"] if projection["cursor"] is not None else 0
        return {
            "projection": {**projection, "latest": latest, "lag": max(latest - cursor, 0)},
            "sink": self._sink.status(),
            "retention": self._retention.status(),
        }


class AuditPlugin(Plugin):
    """Core plugin: the audit trail (see the module docstring)."""

    manifest = PluginManifest(
        id=AUDIT_PLUGIN_ID,
        version="0.1.0",
        name="Audit",
        description="Audit trail: every write with old/new values, sign-ins, denials, reads.",
        author="ObjectOS",
        dependencies={DATA_PLUGIN_ID: "^0.1.0"},
        configuration=PluginConfiguration.model_validate(
            {
                "title": "Audit",
                "properties": {
                    "url": {
                        "type": "string",
                        "default": None,
                        "secret": True,
                        "description": "SQLAlchemy async URL (default: the hub's database.url).",
                    },
                    "retentionDays": {
                        "type": "integer",
                        "default": DEFAULT_RETENTION_DAYS,
                        "description": "Events older than this many days are pruned; 0 keeps all.",
                    },
                    "pruneSchedule": {
                        "type": "string",
                        "default": DEFAULT_SCHEDULE,
                        "description": "When to prune: a five-field cron expression, in UTC.",
                    },
                    "auditReads": {
                        "type": "array",
                        "default": [],
                        "description": "Objects whose reads are audited (by the HTTP replicas).",
                    },
                    "batchSize": {
                        "type": "integer",
                        "default": 500,
                        "description": "Change-log entries projected per transaction.",
                    },
                    "pollIntervalMs": {
                        "type": "integer",
                        "default": 500,
                        "description": "How often an idle projection looks for new writes.",
                    },
                    "flushIntervalMs": {
                        "type": "integer",
                        "default": 200,
                        "description": "How often recorded non-write events are written.",
                    },
                },
            }
        ),
        contributes=Contributes(services=[AUDIT_SERVICE], routes=["/api/v1/audit"]),
    )

    _database: AsyncEngine | None = None
    store: AuditStore | None = None
    projection: AuditProjection | None = None
    sink: SQLAuditSink | None = None
    retention: RetentionPolicy | None = None

    def _checked_config(self) -> dict[str, Any]:
        config = dict(self.context.config)
        errors = []
        for key, (low, high) in _LIMITS.items():
            if not low <= config[key] <= high:
                errors.append(FieldError(key, "invalid_config", f"must be {low}-{high}"))
        reads = config["auditReads"]
        if not all(isinstance(name, str) and name for name in reads):
            errors.append(FieldError("auditReads", "invalid_config", "must list object names"))
        if errors:
            raise ConfigError(
                f"invalid {AUDIT_PLUGIN_ID} configuration: "
                + "; ".join(f"{e.field} {e.message}" for e in errors),
                details={"field": errors[0].field, "reason": errors[0].message},
                field_errors=errors,
            )
        return config

    async def on_load(self) -> None:
        config = self._checked_config()
        database = create_engine(database_url(self.context.settings, config))
        store = AuditStore(database)
        try:
            retention = RetentionPolicy(
                store, days=config["retentionDays"], schedule=config["pruneSchedule"]
            )
            if await store.create():
                self.context.logger.info("audit: created the audit tables")
            projection = AuditProjection(
                ChangeLog.open(database),
                store,
                batch_size=config["batchSize"],
                poll_interval_s=config["pollIntervalMs"] / 1000,
            )
            sink = SQLAuditSink(store, flush_interval_s=config["flushIntervalMs"] / 1000)
            await sink.start()
            await projection.start()
            await retention.start()
        except BaseException:
            await database.dispose()
            raise
        self._database, self.store = database, store
        self.projection, self.sink, self.retention = projection, sink, retention
        self.context.register_service(
            AUDIT_SERVICE, AuditService(store, sink, projection, retention)
        )

    async def on_disable(self) -> None:
        # Reverse of on_load; the sink last but one, so its buffer is written.
        if self.retention is not None:
            await self.retention.stop()
        if self.projection is not None:
            await self.projection.stop()
        if self.sink is not None:
            await self.sink.stop()
        if self._database is not None:
            database, self._database = self._database, None
            await database.dispose()
        self.store = self.projection = self.sink = self.retention = None

    async def health(self) -> dict[str, Any]:
        if self.projection is None or self.sink is None:
            return {"ready": False, "reason": "not loaded"}
        projection = self.projection.status()
        return {
            "ready": projection["running"] and self.sink.status()["running"],
            "cursor": projection["cursor"],
            "projected": projection["projected"],
            "lastError": projection["lastError"],
            "sink": self.sink.status(),
            "auditReads": sorted(self.context.config.get("auditReads") or []),
        }


__all__ = ["AUDIT_PLUGIN_ID", "AuditPlugin", "AuditService", "audit_reads_of"]
