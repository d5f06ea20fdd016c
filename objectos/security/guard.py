"""SecuredDataService: the DataEngine as a caller may use it.

It has :class:`~objectos.data.DataEngine`'s method signatures (the REST
layer's ``DataService``), so routes swap it in unchanged. On every call it

1. checks the object permission for the action (403 ``permission_denied``);
2. injects the record predicate of :class:`~objectos.security.permissions.PermissionEngine`
   as ``scope`` — sharing AND row-level security — into every path of the
   engine: list, get, count, aggregate, expanded lookups, batch, update and
   delete. Lookups written by a create or update must point at records the
   caller can read (at master records it can edit, for a
   ``controlled_by_parent`` detail). A caller's own ``scope`` is ANDed in;
3. applies field-level security to queries: a field the caller cannot read
   may not be selected, filtered (``$field`` references included), sorted,
   searched, grouped, aggregated or expanded — that is 403
   ``field_not_accessible`` naming the fields (an unknown field stays 400
   ``invalid_field``). The object's metadata (``GET /api/v1/meta``) already
   lists its fields, so naming the reason tells a client nothing new, while a
   400 would send it hunting for a typo; the value itself never leaves. The
   default projection and the default search fields are the readable ones;
4. strips unreadable fields from every record it returns (expanded ones too);
5. refuses writes to fields the caller cannot edit, and to ``owner``,
   ``created_by``, ``updated_by``, ``created_at``, ``updated_at`` and
   ``version`` (403 ``field_not_accessible``), before anything is written;
6. evaluates RLS ``check`` policies on the row a create or update would
   write (403 ``record_not_accessible``); an update checked this way is
   pinned to the version it was checked against, so a concurrent change
   makes it a 409 instead of slipping through.

A record the caller cannot see answers 404 ``record_not_found``, exactly as a
missing one (existence does not leak); one it can see but not change answers
403 ``record_not_accessible``. A batch is checked operation by operation
before the engine runs; with ``allOrNone`` one refused operation means
nothing is applied. System actors pass straight through.

:meth:`SecuredDataService.explain` answers ``POST /api/v1/permissions/check``:
may this actor do this, and why (or why not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data.actor import Actor
from objectos.data.engine import BatchOperation, BatchResult, DataEngine, FindResult, Scope
from objectos.data.filter import FieldKind, compile_filter, field_kind, filter_fields
from objectos.data.query import QuerySpec
from objectos.data.values import InvalidValue, coerce
from objectos.errors import (
    FieldError,
    FieldNotAccessible,
    InvalidField,
    ObjectOSError,
    PermissionDenied,
    RecordNotAccessible,
    RecordNotFound,
    ValidationError,
)
from objectos.metadata.registry import MetadataRegistry
from objectos.metadata.relations import reference_target
from objectos.protocol.object import SYSTEM_FIELDS, FieldType, ObjectSchema
from objectos.security.permissions import ACTIONS, Action, ObjectAccess, PermissionEngine
from objectos.security.rls import OPERATION_OF_ACTION, candidate_row

#: Fields only the server writes; a client naming one is refused.
SERVER_FIELDS = frozenset(SYSTEM_FIELDS) - {"id"}

_BATCH_ACTION: dict[str, Action] = {"create": "create", "update": "edit", "delete": "delete"}


@dataclass(frozen=True)
class Decision:
    """Whether an actor may do something, and every reason that decided it."""

    allowed: bool
    reasons: tuple[str, ...]
    action: str
    object: str
    record_id: str | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The body of ``POST /api/v1/permissions/check``'s answer."""
        out: dict[str, Any] = {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "action": self.action,
            "object": self.object,
        }
        if self.record_id is not None:
            out["recordId"] = self.record_id
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass
class _Reasons:
    allowed: bool = True
    items: list[str] = field(default_factory=list)

    def grant(self, reason: str) -> None:
        self.items.append(reason)

    def deny(self, reason: str) -> None:
        self.allowed = False
        self.items.append(reason)


def _and(*conditions: ColumnElement[bool] | None) -> ColumnElement[bool] | None:
    present = [c for c in conditions if c is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else sa.and_(*present)


class SecuredDataService:
    """A DataEngine that only lets through what the caller may see and change."""

    def __init__(
        self, data: DataEngine, permissions: PermissionEngine, *, database: AsyncEngine
    ) -> None:
        """Guard ``data`` with ``permissions``.

        ``database`` is the AsyncEngine ``data`` runs on: the guard reads
        records it must decide about (RLS checks, 403 vs 404, explanations)
        without going through the engine's hooks.
        """
        self.data = data
        self.permissions = permissions
        self.database = database
        self._targets: dict[tuple[int, str], dict[str, str]] = {}

    @property
    def registry(self) -> MetadataRegistry:
        """The metadata registry of the guarded engine."""
        return self.data.registry

    # -- scopes -----------------------------------------------------------------------------

    def _target_action(self, object_name: str, target: str, writing: bool) -> Action:
        """What a caller needs on a referenced record: read, or edit on a cbp master."""
        sharing = self.permissions.sharing
        if (
            writing
            and sharing.default(object_name) == "controlled_by_parent"
            and sharing.master_field(object_name)[1] == target
        ):
            return "edit"
        return "read"

    def _scope(
        self,
        actor: Actor,
        object_name: str,
        actions: Sequence[Action],
        extra: Scope | None,
        *,
        writing: bool = False,
    ) -> Scope:
        """The engine scope: ``actions`` (ORed) on the object, read/edit on the others."""

        def scope(name: str, table: sa.Table) -> ColumnElement[bool] | None:
            if name == object_name:
                found = [
                    self.permissions.record_condition(actor, name, action, table)
                    for action in actions
                ]
                conditions = [c for c in found if c is not None]
                if len(conditions) < len(found):
                    ours = None  # one of the actions reaches every record
                else:
                    ours = sa.or_(*conditions) if len(conditions) > 1 else conditions[0]
            else:
                action = self._target_action(object_name, name, writing)
                ours = self.permissions.record_condition(actor, name, action, table)
            theirs = extra(name, table) if extra is not None else None
            if isinstance(theirs, Mapping):
                theirs = compile_filter(theirs, table, self.data.tables.columns(name))
            return _and(ours, theirs)

        return scope

    # -- field-level security ---------------------------------------------------------------

    def _object(self, object_name: str) -> ObjectSchema:
        return self.data.registry.get_object(object_name)

    def _refuse_unreadable(
        self, object_name: str, names: Iterable[str], access: ObjectAccess, usage: str
    ) -> None:
        """FieldNotAccessible for every existing field in ``names`` the caller cannot read."""
        obj = self._object(object_name)
        hidden = sorted(
            name
            for name in set(names)
            if isinstance(name, str)
            and name not in access.readable
            and (name in obj.fields or name in SYSTEM_FIELDS)
        )
        if hidden:
            raise FieldNotAccessible(
                f"you may not read {', '.join(hidden)} of {object_name}",
                details={"object": object_name, "fields": hidden, "usage": usage},
                field_errors=[
                    FieldError(name, "field_not_accessible", f"{name} is not readable")
                    for name in hidden
                ],
            )

    def _readable_columns(self, object_name: str, access: ObjectAccess) -> list[str]:
        """Readable fields in table order, passwords left out (the default projection)."""
        return [
            name
            for name, info in self.data.tables.columns(object_name).items()
            if name in access.readable and field_kind(info) is not FieldKind.SECRET
        ]

    def _secure_spec(self, actor: Actor, object_name: str, spec: QuerySpec) -> QuerySpec:
        """``spec`` with fields checked, projection and search narrowed, expands secured."""
        access = self.permissions.require(actor, object_name, "read")
        self._refuse_unreadable(object_name, spec.referenced_fields(), access, "query")
        spec = replace(spec, expand=list(spec.expand), expand_specs=dict(spec.expand_specs))
        if spec.fields is None and not spec.aggregations and not spec.group_by:
            spec.fields = self._readable_columns(object_name, access)
        if spec.search and spec.search_fields is None:
            columns = self.data.tables.columns(object_name)
            spec.search_fields = [
                name
                for name, info in columns.items()
                if info.searchable and name in access.readable
            ]
        obj = self._object(object_name)
        for name in dict.fromkeys(spec.expand):
            fld = obj.fields.get(name)
            target = reference_target(object_name, fld) if fld is not None else None
            if target is None:
                continue  # the engine explains what cannot be expanded
            if not self.permissions.object_access(actor, target).allows("read"):
                raise PermissionDenied(
                    f"cannot expand {name!r}: you may not read {target} records",
                    details={"object": target, "action": "read", "field": name},
                )
            nested = spec.expand_specs.get(name) or QuerySpec(limit=None)
            spec.expand_specs[name] = self._secure_spec(actor, target, nested)
        return spec

    def _lookup_targets(self, object_name: str) -> dict[str, str]:
        """``{lookup field: target object}`` of an object (cached per metadata version)."""
        key = (self.data.registry.version, object_name)
        targets = self._targets.get(key)
        if targets is None:
            obj = self._object(object_name)
            targets = {
                name: target
                for name, fld in obj.fields.items()
                if (target := reference_target(object_name, fld)) is not None
            }
            self._targets = {k: v for k, v in self._targets.items() if k[0] == key[0]}
            self._targets[key] = targets
        return targets

    def _strip(
        self, actor: Actor, object_name: str, records: Iterable[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Records without the fields the caller cannot read (expanded lookups too)."""
        if actor.system:
            return [dict(record) for record in records]
        readable = self.permissions.object_access(actor, object_name).readable
        targets = self._lookup_targets(object_name)
        out = []
        for record in records:
            kept: dict[str, Any] = {}
            for name, value in record.items():
                if name not in readable:
                    continue
                target = targets.get(name)
                if target is not None and isinstance(value, Mapping):
                    value = self._strip(actor, target, [value])[0]
                elif target is not None and isinstance(value, list):
                    value = [
                        self._strip(actor, target, [v])[0] if isinstance(v, Mapping) else v
                        for v in value
                    ]
                kept[name] = value
            out.append(kept)
        return out

    def _strip_one(
        self, actor: Actor, object_name: str, record: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._strip(actor, object_name, [record])[0]

    def _refuse_unwritable(
        self, object_name: str, data: Any, access: ObjectAccess, *, creating: bool
    ) -> None:
        """FieldNotAccessible for server-set fields and fields the caller cannot edit."""
        if not isinstance(data, Mapping):
            return  # the engine answers "a record is an object"
        obj = self._object(object_name)
        errors = []
        for name in data:
            if name in SERVER_FIELDS:
                errors.append(
                    FieldError(name, "field_not_accessible", f"{name} is set by the server")
                )
            elif name in obj.fields and name not in access.editable:
                errors.append(FieldError(name, "field_not_accessible", f"you may not edit {name}"))
        if errors:
            verb = "create" if creating else "edit"
            raise FieldNotAccessible(
                f"you may not {verb} {', '.join(e.field for e in errors)} of {object_name}",
                details={"object": object_name},
                field_errors=errors,
            )

    # -- records the guard reads itself -----------------------------------------------------

    async def _ids_where(
        self, object_name: str, ids: Iterable[str], condition: ColumnElement[bool] | None
    ) -> set[str]:
        """Which of ``ids`` exist and match ``condition`` (None: exist at all)."""
        wanted = sorted({i for i in ids if isinstance(i, str)})
        if not wanted:
            return set()
        table = self.data.table(object_name)
        found: set[str] = set()
        async with self.database.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = sa.select(table.c.id).where(table.c.id.in_(wanted[start : start + 500]))
                if condition is not None:
                    query = query.where(condition)
                found |= set((await conn.execute(query)).scalars())
        return found

    async def _row(
        self, object_name: str, record_id: str, condition: ColumnElement[bool] | None
    ) -> dict[str, Any] | None:
        table = self.data.table(object_name)
        query = sa.select(table).where(table.c.id == record_id)
        if condition is not None:
            query = query.where(condition)
        async with self.database.connect() as conn:
            row = (await conn.execute(query)).first()
        return dict(row._mapping) if row is not None else None

    def _condition(self, actor: Actor, object_name: str, action: Action) -> Any:
        return self.permissions.record_condition(
            actor, object_name, action, self.data.table(object_name)
        )

    async def _inaccessible(
        self, actor: Actor, object_name: str, record_id: str, action: Action
    ) -> ObjectOSError:
        """404 for a record the caller cannot see (or that is gone), 403 if it only can't act."""
        visible = await self._ids_where(
            object_name, [record_id], self._condition(actor, object_name, "read")
        )
        if record_id in visible:
            return RecordNotAccessible(
                f"you may not {action} {object_name} record {record_id!r}",
                details={"object": object_name, "id": record_id, "action": action},
            )
        return RecordNotFound(
            f"{object_name} record {record_id!r} does not exist",
            details={"object": object_name, "id": record_id},
        )

    # -- RLS check on written rows ----------------------------------------------------------

    def _candidate(
        self, object_name: str, base: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``base`` with ``changes`` coerced to stored values (ValidationError if one is bad)."""
        obj = self._object(object_name)
        values = dict(base)
        errors: list[FieldError] = []
        for name, raw in changes.items():
            fld = obj.fields.get(name)
            if fld is None or fld.computed:
                if name == "id":
                    values[name] = raw
                continue  # the engine refuses unknown and computed fields itself
            try:
                values[name] = coerce(fld, raw)
            except InvalidValue as exc:
                errors.append(FieldError(name, exc.code, f"{name} {exc.message}"))
        if errors:
            raise ValidationError(
                f"invalid {object_name} record: "
                + "; ".join(f"{e.field}: {e.message}" for e in errors),
                details={"object": object_name},
                field_errors=errors,
            )
        return values

    def _defaults(self, object_name: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Default values the engine will fill in for fields ``given`` lacks."""
        obj = self._object(object_name)
        values: dict[str, Any] = {}
        for name, fld in obj.fields.items():
            if name in given or fld.computed:
                continue
            default: Any = fld.defaultValue
            if default is None and fld.options:
                chosen = [o.value for o in fld.options if o.default]
                if chosen:
                    many = fld.type in (FieldType.MULTISELECT, FieldType.CHECKBOXES) or fld.multiple
                    default = chosen if many else chosen[0]
            if default is not None:
                try:
                    values[name] = coerce(fld, default)
                except InvalidValue:
                    continue  # the engine reports a bad default
        return values

    async def _check_row(
        self, actor: Actor, object_name: str, action: Action, values: Mapping[str, Any]
    ) -> None:
        """RecordNotAccessible unless ``values`` pass the RLS check policies of ``action``."""
        subject = self.permissions.subject(actor)
        if subject.modify_all_data or subject.user is None:
            return
        filters = self.permissions.rls.check_filters(
            subject.user,
            object_name,
            OPERATION_OF_ACTION[action],
            holds=self.permissions.holds(subject),
        )
        if not filters:
            return
        names: set[str] = set()
        for _, clause in filters:
            names |= filter_fields(clause)
        candidate = candidate_row(self.data.table(object_name), values, names)
        columns = self.data.tables.columns(object_name)
        conditions = [compile_filter(clause, candidate, columns) for _, clause in filters]
        query = sa.select(sa.literal(1)).select_from(candidate).where(sa.or_(*conditions))
        async with self.database.connect() as conn:
            passed = (await conn.execute(query)).first() is not None
        if not passed:
            policies = [policy.name for policy, _ in filters]
            raise RecordNotAccessible(
                f"the {object_name} record would violate row-level security "
                f"({', '.join(policies)})",
                details={"object": object_name, "action": action, "policies": policies},
            )

    async def _check_create(self, actor: Actor, object_name: str, data: Mapping[str, Any]) -> None:
        if object_name not in self.permissions.rls.objects():
            return  # no policy at all: skip computing the candidate row
        base = {
            "owner": actor.user_id,
            "created_by": actor.user_id,
            "updated_by": actor.user_id,
            **self._defaults(object_name, data),
        }
        await self._check_row(
            actor, object_name, "create", self._candidate(object_name, base, data)
        )

    async def _check_edit(
        self,
        actor: Actor,
        object_name: str,
        record_id: str,
        changes: Mapping[str, Any],
    ) -> int | None:
        """Run the RLS update check; return the version it checked (None: no check applies)."""
        subject = self.permissions.subject(actor)
        if subject.user is None or subject.modify_all_data:
            return None
        if not self.permissions.rls.check_filters(
            subject.user, object_name, "update", holds=self.permissions.holds(subject)
        ):
            return None
        current = await self._row(
            object_name, record_id, self._condition(actor, object_name, "edit")
        )
        if current is None:
            raise await self._inaccessible(actor, object_name, record_id, "edit")
        values = self._candidate(object_name, current, changes)
        values["updated_by"] = actor.user_id
        await self._check_row(actor, object_name, "edit", values)
        return int(current["version"])

    # -- reads ------------------------------------------------------------------------------

    async def find(
        self,
        object_name: str,
        spec: QuerySpec | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> FindResult:
        """One page of the records the caller may read, with readable fields only."""
        if actor.system:
            return await self.data.find(object_name, spec, actor=actor, scope=scope)
        secured = self._secure_spec(actor, object_name, spec if spec is not None else QuerySpec())
        result = await self.data.find(
            object_name,
            secured,
            actor=actor,
            scope=self._scope(actor, object_name, ["read"], scope),
        )
        result.records = self._strip(actor, object_name, result.records)
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
        """One record the caller may read (404 otherwise), with readable fields only."""
        if actor.system:
            return await self.data.find_one(
                object_name, record_id, actor=actor, fields=fields, expand=expand, scope=scope
            )
        secured = self._secure_spec(
            actor,
            object_name,
            QuerySpec(fields=list(fields) if fields is not None else None, expand=list(expand)),
        )
        record = await self.data.find_one(
            object_name,
            record_id,
            actor=actor,
            fields=secured.fields,
            expand=secured.expand,
            scope=self._scope(actor, object_name, ["read"], scope),
        )
        return self._strip_one(actor, object_name, record)

    async def count(
        self,
        object_name: str,
        where: QuerySpec | Mapping[str, Any] | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> int:
        """How many records the caller may read match ``where``."""
        if actor.system:
            return await self.data.count(object_name, where, actor=actor, scope=scope)
        spec = where if isinstance(where, QuerySpec) else QuerySpec(where=dict(where or {}) or None)
        secured = self._secure_spec(actor, object_name, spec)
        return await self.data.count(
            object_name,
            secured,
            actor=actor,
            scope=self._scope(actor, object_name, ["read"], scope),
        )

    async def aggregate(
        self,
        object_name: str,
        spec: QuerySpec,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> list[dict[str, Any]]:
        """Groups and aggregates over the records the caller may read, of readable fields."""
        if actor.system:
            return await self.data.aggregate(object_name, spec, actor=actor, scope=scope)
        secured = self._secure_spec(actor, object_name, spec)
        return await self.data.aggregate(
            object_name,
            secured,
            actor=actor,
            scope=self._scope(actor, object_name, ["read"], scope),
        )

    # -- writes -----------------------------------------------------------------------------

    async def insert(
        self,
        object_name: str,
        data: Mapping[str, Any],
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        """Create a record if the caller may, with fields it may write."""
        if actor.system:
            return await self.data.insert(object_name, data, actor=actor, scope=scope)
        access = self.permissions.require(actor, object_name, "create")
        self._refuse_unwritable(object_name, data, access, creating=True)
        if isinstance(data, Mapping):
            await self._check_create(actor, object_name, data)
        record = await self.data.insert(
            object_name,
            data,
            actor=actor,
            scope=self._scope(actor, object_name, ["read"], scope, writing=True),
        )
        return self._strip_one(actor, object_name, record)

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
        """Change a record the caller may edit, in fields it may edit."""
        if actor.system:
            return await self.data.update(
                object_name,
                record_id,
                changes,
                actor=actor,
                expected_version=expected_version,
                scope=scope,
            )
        access = self.permissions.require(actor, object_name, "edit")
        self._refuse_unwritable(object_name, changes, access, creating=False)
        if isinstance(changes, Mapping):
            checked = await self._check_edit(actor, object_name, record_id, changes)
            if expected_version is None:
                expected_version = checked
        try:
            record = await self.data.update(
                object_name,
                record_id,
                changes,
                actor=actor,
                expected_version=expected_version,
                scope=self._scope(actor, object_name, ["edit"], scope, writing=True),
            )
        except RecordNotFound:
            raise await self._inaccessible(actor, object_name, record_id, "edit") from None
        return self._strip_one(actor, object_name, record)

    async def delete(
        self,
        object_name: str,
        record_id: str,
        *,
        actor: Actor,
        expected_version: int | None = None,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        """Delete a record the caller may delete; return its last readable state."""
        if actor.system:
            return await self.data.delete(
                object_name, record_id, actor=actor, expected_version=expected_version, scope=scope
            )
        self.permissions.require(actor, object_name, "delete")
        try:
            record = await self.data.delete(
                object_name,
                record_id,
                actor=actor,
                expected_version=expected_version,
                scope=self._scope(actor, object_name, ["delete"], scope),
            )
        except RecordNotFound:
            raise await self._inaccessible(actor, object_name, record_id, "delete") from None
        return self._strip_one(actor, object_name, record)

    async def batch(
        self,
        object_name: str,
        operations: Sequence[BatchOperation | Mapping[str, Any]],
        *,
        actor: Actor,
        all_or_none: bool = True,
        scope: Scope | None = None,
    ) -> list[BatchResult]:
        """Run create/update/upsert/delete operations the caller may run.

        Every operation is checked first (object permission, fields, record
        access, RLS check); with ``all_or_none`` a refused one rolls the whole
        batch back before the engine writes anything, otherwise only the
        allowed operations run.
        """
        if actor.system:
            return await self.data.batch(
                object_name, operations, actor=actor, all_or_none=all_or_none, scope=scope
            )
        ops = [
            op if isinstance(op, BatchOperation) else BatchOperation.from_dict(op)
            for op in operations
        ]
        access = self.permissions.object_access(actor, object_name)
        upserts = [op.id for op in ops if op.operation == "upsert" and op.id is not None]
        existing = await self._ids_where(object_name, upserts, None)
        actions: list[Action] = [
            _BATCH_ACTION.get(op.operation, "edit" if op.id in existing else "create") for op in ops
        ]
        allowed: dict[Action, set[str]] = {}
        for action in ("edit", "delete"):
            ids = [str(op.id) for op, a in zip(ops, actions, strict=True) if a == action and op.id]
            if ids:
                allowed[action] = await self._ids_where(
                    object_name, ids, self._condition(actor, object_name, action)
                )
        results: list[BatchResult | None] = [None] * len(ops)
        pinned: dict[int, int] = {}
        for i, (op, action) in enumerate(zip(ops, actions, strict=True)):
            try:
                version = await self._check_batch_op(
                    actor, object_name, op, action, access, allowed
                )
            except ObjectOSError as exc:
                results[i] = BatchResult(i, op.operation, "failed", op.id, error=exc)
                if all_or_none:
                    return _rolled_back(ops, results)
                continue
            if version is not None and op.expected_version is None:
                pinned[i] = version
        runnable = [i for i in range(len(ops)) if results[i] is None]
        if not runnable:
            return [r for r in results if r is not None]
        kinds = sorted({actions[i] for i in runnable} - {"create"}) or ["read"]
        engine_results = await self.data.batch(
            object_name,
            [
                replace(ops[i], expected_version=pinned[i]) if i in pinned else ops[i]
                for i in runnable
            ],
            actor=actor,
            all_or_none=all_or_none,
            scope=self._scope(actor, object_name, kinds, scope, writing=True),
        )
        for i, result in zip(runnable, engine_results, strict=True):
            error = result.error
            if isinstance(error, RecordNotFound) and ops[i].id is not None:
                error = await self._inaccessible(actor, object_name, str(ops[i].id), actions[i])
            record = (
                self._strip_one(actor, object_name, result.record)
                if result.record is not None
                else None
            )
            results[i] = replace(result, index=i, record=record, error=error)
        return [r for r in results if r is not None]

    async def _check_batch_op(
        self,
        actor: Actor,
        object_name: str,
        op: BatchOperation,
        action: Action,
        access: ObjectAccess,
        allowed: Mapping[Action, set[str]],
    ) -> int | None:
        """Refuse one batch operation the caller may not run; return a version to pin."""
        if not access.allows(action):
            raise PermissionDenied(
                f"you may not {action} {object_name} records",
                details={"object": object_name, "action": action},
            )
        if op.operation != "create" and not op.id:
            return None  # the engine reports the missing id
        data = dict(op.data or {})
        if action == "create":
            self._refuse_unwritable(object_name, data, access, creating=True)
            if op.id is not None:
                data.setdefault("id", op.id)
            await self._check_create(actor, object_name, data)
            return None
        record_id = str(op.id)
        if record_id not in allowed.get(action, set()):
            raise await self._inaccessible(actor, object_name, record_id, action)
        if action == "delete":
            return None
        self._refuse_unwritable(object_name, data, access, creating=False)
        return await self._check_edit(actor, object_name, record_id, data)

    # -- explanations -----------------------------------------------------------------------

    async def explain(
        self,
        actor: Actor,
        action: str,
        object_name: str,
        record_id: str | None = None,
        field: str | None = None,
    ) -> Decision:
        """Whether ``actor`` may ``action`` (read, create, edit, delete) the object,
        one of its records and/or one of its fields — and why.

        Raises InvalidField for an unknown action or field, ObjectNotFound for an
        unknown object. A record the caller cannot read is reported as not
        visible, whether or not it exists.
        """
        if action not in ACTIONS:
            raise InvalidField(
                f"action must be one of {', '.join(ACTIONS)}, not {action!r}",
                details={"field": "action", "reason": "unknown action"},
            )
        act: Action = action
        self._object(object_name)
        if field is not None:
            self.permissions.check_field(object_name, field)
        if record_id is not None and act == "create":
            raise InvalidField(
                "create has no existing record; leave recordId out",
                details={"field": "recordId", "reason": "not for create"},
            )
        decided = _Reasons()
        subject = self.permissions.subject(actor)
        if subject.system:
            decided.grant("system actor: trusted server code bypasses permissions")
        elif subject.user is None:
            decided.deny("anonymous callers have no access")
        else:
            self._explain_object(actor, act, object_name, decided)
            if decided.allowed and field is not None:
                self._explain_field(actor, act, object_name, field, decided)
            if decided.allowed and record_id is not None:
                await self._explain_record(actor, act, object_name, record_id, decided)
        return Decision(decided.allowed, tuple(decided.items), act, object_name, record_id, field)

    def _explain_object(
        self, actor: Actor, action: Action, object_name: str, decided: _Reasons
    ) -> None:
        subject = self.permissions.subject(actor)
        access = self.permissions.object_access(actor, object_name)
        held = ", ".join(subject.permission_sets) or "none"
        if not access.allows(action):
            decided.deny(
                f"no permission set of yours grants {action} on {object_name} "
                f"(your permission sets: {held})"
            )
            return
        decided.grant(
            f"{action} on {object_name} is granted by {', '.join(access.granted_by[action])}"
        )

    def _explain_field(
        self, actor: Actor, action: Action, object_name: str, name: str, decided: _Reasons
    ) -> None:
        access = self.permissions.object_access(actor, object_name)
        if action == "delete":
            decided.grant("fields do not restrict deleting a record")
            return
        if action in ("create", "edit"):
            if name in SERVER_FIELDS or (name == "id" and action == "edit"):
                decided.deny(f"{name} is set by the server")
                return
            ok, verb = name in access.editable or name == "id", "edit"
        else:
            ok, verb = name in access.readable, "read"
        grants = self.permissions.field_grants(object_name, name)
        if grants is None and not ok:
            decided.deny(f"{object_name}.{name} is computed from fields you may not read")
            return
        if grants is None:
            decided.grant(f"{object_name}.{name} is not restricted by field permissions")
            return
        sets = grants[0] if verb == "read" else grants[1]
        if ok:
            subject = self.permissions.subject(actor)
            mine = sorted(sets & set(subject.permission_sets))
            by = ", ".join(mine) if mine else "your system permissions"
            decided.grant(f"{verb} on {object_name}.{name} is granted by {by}")
        else:
            who = ", ".join(sorted(sets)) or "no permission set"
            decided.deny(f"{object_name}.{name} is controlled: only {who} may {verb} it")

    async def _explain_record(
        self, actor: Actor, action: Action, object_name: str, record_id: str, decided: _Reasons
    ) -> None:
        table = self.data.table(object_name)
        readable = await self._ids_where(
            object_name, [record_id], self._condition(actor, object_name, "read")
        )
        if record_id not in readable:
            decided.deny(f"{object_name} record {record_id!r} is not visible to you")
            return
        access = self.permissions.object_access(actor, object_name)
        subject = self.permissions.subject(actor)
        if access.all_records(action):
            flag = "viewAllRecords" if action == "read" else "modifyAllRecords"
            decided.grant(f"{flag} on {object_name} reaches every record")
        else:
            matched = []
            for grant in self.permissions.grants(actor, object_name, action):
                condition = self.permissions.grant_condition(
                    actor, object_name, action, grant, table
                )
                if record_id in await self._ids_where(object_name, [record_id], condition):
                    matched.append(grant.reason)
            if not matched:
                decided.deny(
                    f"no sharing grant gives you {action} access to this record "
                    f"(org-wide default {self.permissions.sharing.default(object_name)})"
                )
                return
            for reason in matched:
                decided.grant(reason)
        if subject.modify_all_data or (action == "read" and subject.view_all_data):
            return
        assert subject.user is not None
        operation = OPERATION_OF_ACTION[action]
        holds = self.permissions.holds(subject)
        checks = self.permissions.rls.check_filters(
            subject.user, object_name, operation, holds=holds
        )
        policies = self.permissions.rls.applicable(object_name, operation, holds)
        if not policies:
            return
        using = self.permissions.rls.using(
            subject.user,
            object_name,
            operation,
            table,
            self.data.tables.columns(object_name),
            holds=holds,
        )
        names = ", ".join(p.name for p in policies)
        if using is not None and record_id not in await self._ids_where(
            object_name, [record_id], using
        ):
            decided.deny(f"row-level security ({names}) hides this record from you")
            return
        decided.grant(f"row-level security ({names}) lets this record through")
        if checks:
            names = ", ".join(policy.name for policy, _ in checks)
            decided.grant(f"the written row must also pass the row-level security check of {names}")


def _rolled_back(
    ops: Sequence[BatchOperation], results: list[BatchResult | None]
) -> list[BatchResult]:
    out = []
    for i, op in enumerate(ops):
        result = results[i]
        if result is None:
            result = BatchResult(i, op.operation, "rolled_back", op.id)
        out.append(result)
    return out


__all__ = ["SERVER_FIELDS", "Decision", "SecuredDataService"]
