"""A data service that audits what the change log cannot see: denials and reads.

Wrap the permission-checking service (any object with
:class:`~objectos.data.DataEngine`'s methods, e.g.
:class:`~objectos.security.guard.SecuredDataService`) and hand the result to
the REST routes::

    service = AuditedDataService(secured, sink, audit_reads={"opportunity"})

- every :class:`~objectos.errors.PermissionDenied` it raises (also
  ``field_not_accessible``, ``record_not_accessible``, and refused
  operations inside a batch) records a ``permission.denied`` event with the
  actor, their request context, the object, the record id where there is
  one, the operation and the error's code and reason — then the error goes
  on to the client unchanged;
- reads of the objects in ``audit_reads`` record one ``record.read`` event
  per request (``find_one``: the record; ``find``: the ids of the page, at
  most :data:`MAX_READ_IDS` of them).

Writes are not recorded here: the change log has them, with old and new
values (:mod:`objectos.audit.projection`). Recording never fails or slows a
request: the sink buffers, and a sink error is logged and swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from objectos.audit.events import PERMISSION_DENIED, RECORD_READ, AuditEvent
from objectos.audit.sink import AuditSink
from objectos.data.actor import Actor
from objectos.data.engine import BatchOperation, BatchResult, FindResult, Scope
from objectos.data.query import QuerySpec
from objectos.errors import PermissionDenied

logger = logging.getLogger("objectos.audit")

#: Most record ids a ``record.read`` event of a list read names.
MAX_READ_IDS = 200


class AuditedDataService:
    """Forwards every call to ``inner``; records denials and audited reads to ``sink``."""

    def __init__(self, inner: Any, sink: AuditSink, *, audit_reads: Iterable[str] = ()) -> None:
        """``audit_reads``: object names whose reads are recorded."""
        self.inner = inner
        self.sink = sink
        self.audit_reads = frozenset(audit_reads)

    def __getattr__(self, name: str) -> Any:
        # Everything else the wrapped service offers (registry, explain, ...) as it is.
        return getattr(self.inner, name)

    async def _record(self, event: AuditEvent) -> None:
        try:
            await self.sink.record(event)
        except Exception:  # auditing must never turn a served request into an error
            logger.exception("could not record audit event %s", event.action)

    async def _denied(
        self,
        actor: Actor,
        object_name: str,
        operation: str,
        error: PermissionDenied,
        record_id: str | None = None,
    ) -> None:
        await self._record(
            AuditEvent.new(
                PERMISSION_DENIED,
                actor=actor.user_id,
                object=object_name,
                record_id=record_id,
                context=actor.context,
                details={
                    "operation": operation,
                    "code": error.code,
                    "reason": error.message,
                    "roles": sorted(actor.roles),
                },
            )
        )

    async def _read(
        self, actor: Actor, object_name: str, operation: str, ids: Sequence[Any]
    ) -> None:
        if object_name not in self.audit_reads:
            return
        named = [str(i) for i in ids[:MAX_READ_IDS]]
        await self._record(
            AuditEvent.new(
                RECORD_READ,
                actor=actor.user_id,
                object=object_name,
                record_id=named[0] if operation == "findOne" and named else None,
                context=actor.context,
                details={
                    "operation": operation,
                    "count": len(ids),
                    "ids": named,
                    "truncated": len(ids) > MAX_READ_IDS,
                },
            )
        )

    # -- reads ------------------------------------------------------------------------------

    async def find(
        self,
        object_name: str,
        spec: QuerySpec | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> FindResult:
        try:
            result: FindResult = await self.inner.find(object_name, spec, actor=actor, scope=scope)
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "find", exc)
            raise
        ids = [r["id"] for r in result.records if isinstance(r, Mapping) and r.get("id")]
        await self._read(actor, object_name, "find", ids)
        return result

    async def find_one(
        self,
        object_name: str,
        record_id: str,
        *,
        actor: Actor,
        fields: Sequence[str] | None = None,
        expand: Sequence[str] = (),
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        try:
            record: dict[str, Any] = await self.inner.find_one(
                object_name, record_id, actor=actor, fields=fields, expand=expand, scope=scope
            )
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "findOne", exc, record_id)
            raise
        await self._read(actor, object_name, "findOne", [record_id])
        return record

    async def count(
        self,
        object_name: str,
        where: QuerySpec | Mapping[str, Any] | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> int:
        try:
            return int(await self.inner.count(object_name, where, actor=actor, scope=scope))
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "count", exc)
            raise

    async def aggregate(
        self,
        object_name: str,
        spec: QuerySpec,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> list[dict[str, Any]]:
        try:
            rows: list[dict[str, Any]] = await self.inner.aggregate(
                object_name, spec, actor=actor, scope=scope
            )
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "aggregate", exc)
            raise
        return rows

    # -- writes (audited from the change log; only refusals are recorded here) ---------------

    async def insert(
        self,
        object_name: str,
        data: Mapping[str, Any],
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        try:
            record: dict[str, Any] = await self.inner.insert(
                object_name, data, actor=actor, scope=scope
            )
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "insert", exc)
            raise
        return record

    async def update(
        self,
        object_name: str,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        actor: Actor,
        expected_version: int | None = None,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        try:
            record: dict[str, Any] = await self.inner.update(
                object_name,
                record_id,
                changes,
                actor=actor,
                expected_version=expected_version,
                scope=scope,
            )
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "update", exc, record_id)
            raise
        return record

    async def delete(
        self,
        object_name: str,
        record_id: str,
        *,
        actor: Actor,
        expected_version: int | None = None,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        try:
            record: dict[str, Any] = await self.inner.delete(
                object_name, record_id, actor=actor, expected_version=expected_version, scope=scope
            )
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "delete", exc, record_id)
            raise
        return record

    async def batch(
        self,
        object_name: str,
        operations: Sequence[BatchOperation | Mapping[str, Any]],
        *,
        actor: Actor,
        all_or_none: bool = True,
        scope: Scope | None = None,
    ) -> list[BatchResult]:
        try:
            results: list[BatchResult] = await self.inner.batch(
                object_name, operations, actor=actor, all_or_none=all_or_none, scope=scope
            )
        except PermissionDenied as exc:
            await self._denied(actor, object_name, "batch", exc)
            raise
        for result in results:
            if isinstance(result.error, PermissionDenied):
                await self._denied(
                    actor, object_name, f"batch.{result.operation}", result.error, result.id
                )
        return results


__all__ = ["MAX_READ_IDS", "AuditedDataService"]
