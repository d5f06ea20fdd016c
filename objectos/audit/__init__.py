"""The audit trail: every write with old and new values, sign-ins, denials, audited reads.

- :mod:`~objectos.audit.events` — :class:`AuditEvent`, the one record of the trail;
- :mod:`~objectos.audit.projection` — change log → events, off the request path;
- :mod:`~objectos.audit.store` — the SQL table: search, per-record trail, prune;
- :mod:`~objectos.audit.sink` — :class:`AuditSink` for events that are not writes;
- :mod:`~objectos.audit.audited` — a data service wrapper recording denials and reads;
- :mod:`~objectos.audit.export` — CSV and JSON lines, streamed;
- :mod:`~objectos.audit.retention` — pruning on a cron schedule.

The plugin that runs all of it is :mod:`objectos.plugins.audit`; the HTTP
routes are :mod:`objectos.api.audit`.
"""

from objectos.audit.audited import AuditedDataService
from objectos.audit.events import AuditEvent, FieldChange
from objectos.audit.export import export_chunk, export_stream
from objectos.audit.projection import AuditProjection
from objectos.audit.retention import RetentionPolicy
from objectos.audit.sink import AuditSink, ServiceAuditSink, SQLAuditSink, auth_event_recorder
from objectos.audit.store import AuditPage, AuditQuery, AuditStore

__all__ = [
    "AuditEvent",
    "AuditPage",
    "AuditProjection",
    "AuditQuery",
    "AuditSink",
    "AuditStore",
    "AuditedDataService",
    "FieldChange",
    "RetentionPolicy",
    "SQLAuditSink",
    "ServiceAuditSink",
    "auth_event_recorder",
    "export_chunk",
    "export_stream",
]
