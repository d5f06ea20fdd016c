"""The DataEngine: metadata-driven CRUD over SQLAlchemy async Core.

One engine serves every object of a :class:`~objectos.metadata.MetadataRegistry`::

    engine = DataEngine(create_engine(url), registry)
    await engine.migrate()
    alice = Actor.user("alice", roles=["support"])
    case = await engine.insert("case", {"subject": "Printer on fire"}, actor=alice)
    page = await engine.find("case", parse_list_params({"status": "new"}), actor=alice)

**Writes** run in one transaction each (``batch`` with ``all_or_none`` runs
all its operations in one): client input is checked (unknown, system,
computed and readonly fields are refused with ``invalid_field``; system
actors may write readonly fields and ``owner``), before hooks may change or
veto it, values are coerced, defaults, autonumbers and formulas filled, then
required fields, validation rules, references and uniqueness are checked.
Every error of a record is reported at once (``fieldErrors``); duplicates
raise :class:`~objectos.errors.DuplicateValue` (409). Deleting a parent
applies each child reference's ``deleteBehavior`` (restrict raises
:class:`~objectos.errors.DeleteRestricted`, cascade deletes, set_null
clears), and summary fields of parents are recomputed — all inside the same
transaction, all written to the change log with one server version each.
``expected_version`` gives optimistic concurrency
(:class:`~objectos.errors.ConcurrentModification`); ``version`` grows by one
on every change. An update that changes nothing is a no-op (no new version,
no log entry). A PostgreSQL deadlock also surfaces as ConcurrentModification
and a SQLite database locked past its busy timeout as ServiceUnavailable:
both are safe to retry, nothing of the write was applied.

**Reads** use the query compiler (:mod:`objectos.data.query`); lookups named
in ``expand`` are fetched with one ``IN`` query per field and level, never one
per record.

**Scope.** Every read, update and delete takes ``scope``: a callable
``(object_name, table) -> condition | filter | None`` that the permission
engine uses to inject row-level security. It is applied to the object read or
written, to every expanded object and to lookup targets on writes (a record
the actor cannot see cannot be linked), so no path of this engine bypasses it.
Cascades, roll-ups and uniqueness are integrity rules and deliberately see all
rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from objectos.data.actor import Actor
from objectos.data.changelog import Change, ChangeLog, Operation
from objectos.data.filter import ColumnInfo, compile_filter, filter_fields, normalize_filter
from objectos.data.hooks import DataHooks
from objectos.data.migrate import MigrationPlan, MigrationStep, migrate
from objectos.data.query import (
    MAX_EXPAND_DEPTH,
    QuerySpec,
    build_aggregate,
    build_count,
    build_select,
    encode_cursor,
    selected_fields,
)
from objectos.data.reads import ReadRunner
from objectos.data.schema import WRITE_OPTION, DecimalType, ObjectTables, new_id
from objectos.data.sequence import allocate, autonumber_sequence
from objectos.data.validation import RecordRules, format_autonumber
from objectos.data.values import InvalidValue, coerce, to_json, valid_id
from objectos.errors import (
    ConcurrentModification,
    DeleteRestricted,
    DuplicateValue,
    FieldError,
    InvalidField,
    InvalidFilter,
    MissingRequiredField,
    ObjectOSError,
    RecordNotFound,
    ServiceUnavailable,
    ValidationError,
)
from objectos.kernel.events import data_event
from objectos.metadata.registry import MetadataRegistry
from objectos.metadata.relations import reference_target
from objectos.protocol.object import (
    SYSTEM_FIELDS,
    FieldType,
    ObjectSchema,
    UniqueRule,
)

ScopeCondition = ColumnElement[bool] | Mapping[str, Any] | None
#: ``scope(object_name, table)``: the row-level condition for that object (None: all rows).
Scope = Callable[[str, sa.Table], ScopeCondition]
Row = dict[str, Any]

_EXPAND_CHUNK = 500
#: Fields the engine maintains itself; ``id`` may only be given on create.
_MANAGED_FIELDS = frozenset(SYSTEM_FIELDS) - {"id", "owner"}


# --- results ---------------------------------------------------------------------------------


@dataclass
class FindResult:
    """One page of records and what the REST envelope's ``pagination`` needs."""

    records: list[dict[str, Any]]
    total: int | None = None
    has_more: bool = False
    next_cursor: str | None = None
    limit: int | None = None
    offset: int = 0

    def pagination(self) -> dict[str, Any]:
        """``{total, limit, offset, hasMore, nextCursor}`` of PROTOCOL.md."""
        return {
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
            "hasMore": self.has_more,
            "nextCursor": self.next_cursor,
        }


BatchKind = Literal["create", "update", "upsert", "delete"]


@dataclass(frozen=True)
class BatchOperation:
    """One operation of :meth:`DataEngine.batch`."""

    operation: BatchKind
    data: dict[str, Any] | None = None
    id: str | None = None
    expected_version: int | None = None

    @classmethod
    def from_dict(cls, item: Mapping[str, Any]) -> BatchOperation:
        """Parse ``{operation|op, id, data|record, expectedVersion}`` (InvalidField if wrong)."""
        if not isinstance(item, Mapping):
            raise InvalidField("a batch operation is an object")
        unknown = set(item) - {"operation", "op", "id", "data", "record", "expectedVersion"}
        if unknown:
            raise InvalidField(f"unknown batch operation keys: {', '.join(sorted(unknown))}")
        kind = item.get("operation", item.get("op"))
        if kind not in ("create", "update", "upsert", "delete"):
            raise InvalidField(f"operation must be create, update, upsert or delete, not {kind!r}")
        data = item.get("data", item.get("record"))
        if data is not None and not isinstance(data, Mapping):
            raise InvalidField("batch operation data must be an object")
        version = item.get("expectedVersion")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise InvalidField("expectedVersion must be an integer")
        record_id = item.get("id")
        if record_id is not None and not isinstance(record_id, str):
            raise InvalidField("id must be text")
        return cls(kind, dict(data) if data is not None else None, record_id, version)


@dataclass
class BatchResult:
    """What happened to one batch operation.

    ``status`` is ``applied``, ``failed`` (``error`` says why) or
    ``rolled_back`` (it worked, but an all-or-none batch failed elsewhere).
    """

    index: int
    operation: str
    status: Literal["applied", "failed", "rolled_back"]
    id: str | None = None
    record: dict[str, Any] | None = None
    error: ObjectOSError | None = None

    @property
    def success(self) -> bool:
        """Whether the operation is in the database."""
        return self.status == "applied"

    def to_dict(self) -> dict[str, Any]:
        """The spec's BulkResponse item: ``{index, success, status, id, data, errors}``."""
        out: dict[str, Any] = {
            "index": self.index,
            "operation": self.operation,
            "success": self.success,
            "status": self.status,
            "id": self.id,
        }
        if self.record is not None:
            out["data"] = self.record
        if self.error is not None:
            out["errors"] = [self.error.to_dict()]
        return out


# --- per-object compiled metadata ------------------------------------------------------------


@dataclass(frozen=True)
class _Rollup:
    """A summary field of ``parent`` fed by ``child`` through ``link``."""

    parent: str
    field: str
    child: str
    link: str
    relevant: frozenset[str]


@dataclass
class _ObjectPlan:
    obj: ObjectSchema
    table: sa.Table
    columns: dict[str, ColumnInfo]
    rules: RecordRules
    uniques: list[tuple[tuple[str, ...], bool, str]]
    feeds: list[_Rollup]  # summaries of parents this object feeds
    summaries: list[_Rollup]  # summary fields this object has


class _Compiled:
    """Tables and compiled rules for one metadata version."""

    def __init__(self, registry: MetadataRegistry) -> None:
        self.version = registry.version
        self.tables = ObjectTables(registry)
        rollups: list[_Rollup] = []
        for parent in registry.objects.values():
            for name, fld in parent.fields.items():
                ops = fld.summaryOperations
                if fld.type != FieldType.SUMMARY or ops is None:
                    continue
                link = registry.summary_link(parent.name, ops.object)
                relevant = {link} | ({ops.field} if ops.field else set())
                relevant |= filter_fields(normalize_filter(ops.filter)) if ops.filter else set()
                rollups.append(_Rollup(parent.name, name, ops.object, link, frozenset(relevant)))
        self.plans: dict[str, _ObjectPlan] = {}
        for obj in registry.objects.values():
            uniques: list[tuple[tuple[str, ...], bool, str]] = [
                ((n,), True, f"{n} must be unique") for n, f in obj.fields.items() if f.unique
            ]
            for rule in obj.validations:
                if isinstance(rule, UniqueRule) and rule.active:
                    uniques.append((tuple(rule.fields), rule.caseSensitive, rule.message))
            for index in obj.indexes:
                if index.unique:
                    message = f"{', '.join(index.fields)} must be unique together"
                    uniques.append((tuple(index.fields), True, message))
            self.plans[obj.name] = _ObjectPlan(
                obj=obj,
                table=self.tables.table(obj.name),
                columns=self.tables.columns(obj.name),
                rules=RecordRules(obj),
                uniques=uniques,
                feeds=[r for r in rollups if r.child == obj.name],
                summaries=[r for r in rollups if r.parent == obj.name],
            )


# --- one write transaction -------------------------------------------------------------------


@dataclass
class _Tx:
    conn: AsyncConnection
    actor: Actor
    now: dt.datetime
    changes: list[Change] = field(default_factory=list)
    after: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dirty: dict[str, set[str]] = field(default_factory=dict)  # parent object -> ids
    deleting: set[tuple[str, str]] = field(default_factory=set)


def _validation_error(obj: str, errors: list[FieldError]) -> ValidationError:
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    cls = (
        MissingRequiredField
        if all(e.code == "missing_required_field" for e in errors)
        else ValidationError
    )
    return cls(
        f"invalid {obj} record: {summary}{more}",
        details={"object": obj},
        field_errors=errors,
    )


class _Target(NamedTuple):
    """An object a read touches: its plan and the caller's scope condition on it."""

    plan: _ObjectPlan
    condition: ColumnElement[bool] | None


class DataEngine:
    """CRUD, validation, formulas, roll-ups and change log for every object of a registry."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: MetadataRegistry,
        hooks: DataHooks | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """``engine`` from :func:`~objectos.data.schema.create_engine`; ``clock`` gives UTC."""
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._reads = ReadRunner(engine)
        self.registry = registry
        self.hooks = hooks
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._compiled = _Compiled(registry)
        self.change_log = ChangeLog(
            engine, self._compiled.tables.change_log, self._compiled.tables.sequence
        )

    @property
    def read_engine(self) -> sa.Engine:
        """The (sync) engine reads execute on: see :mod:`objectos.data.reads`."""
        return self._reads.engine

    # -- metadata ---------------------------------------------------------------------------

    @property
    def tables(self) -> ObjectTables:
        """The tables of the registry's current metadata version."""
        return self._current().tables

    def _current(self) -> _Compiled:
        if self._compiled.version != self.registry.version:
            self._compiled = _Compiled(self.registry)
        return self._compiled

    def _plan(self, object_name: str) -> _ObjectPlan:
        compiled = self._current()
        plan = compiled.plans.get(object_name)
        if plan is None:
            self.registry.get_object(object_name)  # raises ObjectNotFound
            raise LookupError(object_name)
        return plan

    def table(self, object_name: str) -> sa.Table:
        """The table of ``object_name`` (for building scope conditions)."""
        return self._plan(object_name).table

    async def migrate(self, *, dry_run: bool = False) -> MigrationPlan:
        """Bring the database schema to the current metadata (see :mod:`objectos.data.migrate`)."""
        plan = await migrate(self._engine, self.tables, dry_run=dry_run)
        if not dry_run:  # change logs of older databases get the audit columns in place
            for name in await self.change_log.upgrade():
                plan.steps.append(MigrationStep("add_column", "_change_log", name, "audit column"))
                plan.applied = True
        return plan

    # -- helpers ----------------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        now = self._clock()
        return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)

    def _condition(self, scope: Scope | None, plan: _ObjectPlan) -> ColumnElement[bool] | None:
        if scope is None:
            return None
        condition = scope(plan.obj.name, plan.table)
        if condition is None:
            return None
        if isinstance(condition, Mapping):
            return compile_filter(condition, plan.table, plan.columns)
        return condition

    def _to_json(self, plan: _ObjectPlan, row: Mapping[str, Any]) -> dict[str, Any]:
        """A record as the engine returns it: table column order, no passwords, JSON values."""
        out: dict[str, Any] = {}
        for column in plan.table.columns:
            name = column.name
            if name not in row:
                continue
            fld = plan.obj.fields.get(name)
            if fld is not None and fld.type == FieldType.PASSWORD:
                continue
            out[name] = to_json(row[name])
        return out

    async def _before(
        self, hook: str, plan: _ObjectPlan, actor: Actor, payload: dict[str, Any]
    ) -> dict[str, Any]:
        if self.hooks is None:
            return payload
        payload = {"object": plan.obj.name, "event": hook, **payload, "session": actor.to_dict()}
        result = await self.hooks.run_before(data_event(hook, plan.obj.name), payload)
        return result if result is not None else payload

    async def _after(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        if self.hooks is None:
            return
        for event, payload in events:
            await self.hooks.run_after(event, payload)

    def _after_event(self, tx: _Tx, hook: str, plan: _ObjectPlan, payload: dict[str, Any]) -> None:
        if self.hooks is not None:
            tx.after.append(
                (
                    data_event(hook, plan.obj.name),
                    {
                        "object": plan.obj.name,
                        "event": hook,
                        **payload,
                        "session": tx.actor.to_dict(),
                    },
                )
            )

    @asynccontextmanager
    async def _transaction(self, actor: Actor) -> AsyncIterator[_Tx]:
        try:
            async with self._write_engine.begin() as conn:
                tx = _Tx(conn, actor, self._now())
                yield tx
                await self._flush_rollups(tx)
                await self.change_log.append(conn, tx.changes, at=tx.now)
        except sa.exc.DBAPIError as exc:
            mapped = _contention_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    # -- reads ------------------------------------------------------------------------------

    async def find(
        self,
        object_name: str,
        spec: QuerySpec | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> FindResult:
        """One page of records matching ``spec`` (default: the first page of all records)."""
        plan = self._plan(object_name)
        spec = spec if spec is not None else QuerySpec()
        if spec.object is not None and spec.object != object_name:
            raise InvalidFilter(
                f"the query names object {spec.object!r} but addresses {object_name!r}",
                details={"object": spec.object},
            )
        payload = await self._before(
            "beforeFind", plan, actor, {"input": {"operation": "find", "query": spec}}
        )
        spec = payload["input"]["query"]
        result = await self._find(plan, spec, scope)
        if self.hooks is not None:
            await self.hooks.run_after(
                data_event("afterFind", object_name),
                {
                    "object": object_name,
                    "event": "afterFind",
                    "input": {"operation": "find", "query": spec},
                    "result": result.records,
                    "session": actor.to_dict(),
                },
            )
        return result

    async def _find(self, plan: _ObjectPlan, spec: QuerySpec, scope: Scope | None) -> FindResult:
        if spec.fields is not None and spec.expand:
            spec = replace(spec, fields=list(dict.fromkeys([*spec.fields, *spec.expand])))
        # Plans and scope conditions are resolved here, on the event loop (the compiled
        # plans and the permission engine's caches are not shared with reader threads);
        # the statements then run in one hop.
        targets: dict[str, _Target] = {}
        self._scope_conditions(plan, spec, scope, targets, depth=1)
        return await self._reads.run(lambda conn: self._find_sync(conn, plan, spec, targets))

    def _scope_conditions(
        self,
        plan: _ObjectPlan,
        spec: QuerySpec,
        scope: Scope | None,
        out: dict[str, _Target],
        depth: int,
    ) -> None:
        """The plan and scope condition of ``plan``'s object and of every object ``spec``
        expands (checked: lookup fields only, nested at most MAX_EXPAND_DEPTH)."""
        if plan.obj.name not in out:
            out[plan.obj.name] = _Target(plan, self._condition(scope, plan))
        if spec.expand and depth > MAX_EXPAND_DEPTH:
            raise InvalidFilter(f"expand is nested deeper than {MAX_EXPAND_DEPTH} levels")
        for name in dict.fromkeys(spec.expand):
            fld = plan.obj.fields.get(name)
            target = reference_target(plan.obj.name, fld) if fld is not None else None
            if fld is None or target is None:
                raise InvalidField(
                    f"cannot expand {name!r}: not a lookup field of {plan.obj.name!r}",
                    details={"field": name, "usage": "expand"},
                )
            nested = spec.expand_specs.get(name) or QuerySpec(limit=None)
            self._scope_conditions(self._plan(target), nested, scope, out, depth + 1)

    def _find_sync(
        self,
        conn: sa.Connection,
        plan: _ObjectPlan,
        spec: QuerySpec,
        targets: Mapping[str, _Target],
    ) -> FindResult:
        condition = targets[plan.obj.name].condition
        stmt = build_select(spec, plan.table, plan.columns, extra_where=condition)
        if spec.limit is not None:
            stmt = stmt.limit(spec.limit + 1)
        wanted = selected_fields(spec, plan.columns)
        rows = [dict(r._mapping) for r in conn.execute(stmt).all()]
        total = None
        if spec.count:
            count_stmt = build_count(spec, plan.table, plan.columns, extra_where=condition)
            total = int(conn.execute(count_stmt).scalar_one())
        has_more = spec.limit is not None and len(rows) > spec.limit
        if has_more:
            rows = rows[: spec.limit]
        next_cursor = encode_cursor(rows[-1], spec.order_by) if has_more and rows else None
        records = [self._to_json(plan, {k: row[k] for k in wanted if k in row}) for row in rows]
        if spec.expand:
            self._expand(conn, plan, records, spec, targets)
        return FindResult(records, total, has_more, next_cursor, spec.limit, spec.offset)

    def _expand(
        self,
        conn: sa.Connection,
        plan: _ObjectPlan,
        records: list[dict[str, Any]],
        spec: QuerySpec,
        targets: Mapping[str, _Target],
    ) -> None:
        """Replace lookup ids in ``records`` by the records (runs on a reader thread: plans
        and conditions come resolved in ``targets``, see _scope_conditions)."""
        for name in dict.fromkeys(spec.expand):
            fld = plan.obj.fields[name]
            target = reference_target(plan.obj.name, fld)
            assert target is not None
            ids: set[str] = set()
            for record in records:
                value = record.get(name)
                if isinstance(value, str):
                    ids.add(value)
                elif isinstance(value, list):
                    ids.update(v for v in value if isinstance(v, str))
            if not ids:
                continue
            target_plan, condition = targets[target]
            nested = spec.expand_specs.get(name) or QuerySpec(limit=None)
            found: dict[str, dict[str, Any]] = {}
            ordered = sorted(ids)
            for start in range(0, len(ordered), _EXPAND_CHUNK):
                chunk = ordered[start : start + _EXPAND_CHUNK]
                where: dict[str, Any] = {"id": {"$in": chunk}}
                if nested.where:
                    where = {"$and": [where, nested.where]}
                sub = QuerySpec(
                    fields=None
                    if nested.fields is None
                    else list(dict.fromkeys([*nested.fields, *nested.expand])),
                    where=where,
                    limit=None,
                )
                stmt = build_select(
                    sub, target_plan.table, target_plan.columns, extra_where=condition
                )
                wanted = selected_fields(sub, target_plan.columns)
                for row in conn.execute(stmt).all():
                    mapping = row._mapping
                    found[mapping["id"]] = self._to_json(
                        target_plan, {k: mapping[k] for k in wanted if k in mapping}
                    )
            if nested.expand and found:
                self._expand(conn, target_plan, list(found.values()), nested, targets)
            for record in records:
                value = record.get(name)
                if isinstance(value, str) and value in found:
                    record[name] = found[value]
                elif isinstance(value, list):
                    record[name] = [found.get(v, v) if isinstance(v, str) else v for v in value]

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
        """The record ``record_id``; RecordNotFound (404) if it is missing or out of scope."""
        plan = self._plan(object_name)
        spec = QuerySpec(
            fields=list(fields) if fields is not None else None,
            where={"id": {"$eq": record_id}},
            limit=1,
            expand=list(expand),
        )
        payload = await self._before(
            "beforeFind",
            plan,
            actor,
            {"input": {"operation": "findOne", "id": record_id, "query": spec}},
        )
        result = await self._find(plan, payload["input"]["query"], scope)
        if not result.records:
            raise RecordNotFound(
                f"{object_name} record {record_id!r} does not exist",
                details={"object": object_name, "id": record_id},
            )
        record = result.records[0]
        if self.hooks is not None:
            await self.hooks.run_after(
                data_event("afterFind", object_name),
                {
                    "object": object_name,
                    "event": "afterFind",
                    "input": {"operation": "findOne", "id": record_id},
                    "result": [record],
                    "session": actor.to_dict(),
                },
            )
        return record

    async def count(
        self,
        object_name: str,
        where: QuerySpec | Mapping[str, Any] | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> int:
        """How many records match ``where`` (a filter or a QuerySpec; paging ignored)."""
        plan = self._plan(object_name)
        spec = where if isinstance(where, QuerySpec) else QuerySpec(where=dict(where or {}) or None)
        payload = await self._before(
            "beforeFind", plan, actor, {"input": {"operation": "count", "query": spec}}
        )
        spec = payload["input"]["query"]
        stmt = build_count(spec, plan.table, plan.columns, extra_where=self._condition(scope, plan))
        return await self._reads.run(lambda conn: int(conn.execute(stmt).scalar_one()))

    async def aggregate(
        self,
        object_name: str,
        spec: QuerySpec,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``groupBy`` fields and aggregation aliases (JSON-ready values)."""
        plan = self._plan(object_name)
        payload = await self._before(
            "beforeFind", plan, actor, {"input": {"operation": "aggregate", "query": spec}}
        )
        spec = payload["input"]["query"]
        stmt = build_aggregate(
            spec, plan.table, plan.columns, extra_where=self._condition(scope, plan)
        )
        rows = await self._reads.run(lambda conn: conn.execute(stmt).all())
        return [{k: to_json(v) for k, v in row._mapping.items()} for row in rows]

    # -- client input -----------------------------------------------------------------------

    def _client_fields(
        self, plan: _ObjectPlan, data: Mapping[str, Any], actor: Actor, *, creating: bool
    ) -> dict[str, Any]:
        """Refuse fields a client may not write (all at once, as invalid_field)."""
        if not isinstance(data, Mapping):
            raise InvalidField(f"a {plan.obj.name} record is an object")
        errors: list[FieldError] = []
        for name in data:
            fld = plan.obj.fields.get(name)
            if name == "id":
                if not creating:
                    errors.append(FieldError(name, "invalid_field", "id cannot be changed"))
                elif not valid_id(data[name]):
                    errors.append(
                        FieldError(name, "invalid_field", "id must be 1-36 letters, digits, - or _")
                    )
            elif name == "owner":
                if not actor.system:
                    errors.append(FieldError(name, "invalid_field", "owner is set by the server"))
            elif name in _MANAGED_FIELDS:
                errors.append(FieldError(name, "invalid_field", f"{name} is set by the server"))
            elif fld is None:
                errors.append(
                    FieldError(name, "invalid_field", f"{plan.obj.name} has no field {name!r}")
                )
            elif fld.computed:
                errors.append(
                    FieldError(name, "invalid_field", f"{name} is computed ({fld.type.value})")
                )
            elif fld.readonly and not actor.system:
                errors.append(FieldError(name, "invalid_field", f"{name} is read-only"))
        if errors:
            raise InvalidField(
                f"cannot write {', '.join(e.field for e in errors)} of {plan.obj.name}",
                details={"object": plan.obj.name},
                field_errors=errors,
            )
        return dict(data)

    def _coerce_doc(
        self, plan: _ObjectPlan, doc: Mapping[str, Any], errors: list[FieldError]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in doc.items():
            fld = plan.obj.fields.get(name)
            if name in ("id", "owner"):
                # Only reachable for values _client_fields allowed, or a hook added.
                if valid_id(raw) if name == "id" else raw is None or isinstance(raw, str):
                    values[name] = raw
                else:
                    errors.append(FieldError(name, "invalid_field", f"invalid {name} {raw!r}"))
                continue
            if fld is None:
                errors.append(
                    FieldError(name, "invalid_field", f"{plan.obj.name} has no field {name!r}")
                )
                continue
            if fld.computed:
                errors.append(FieldError(name, "invalid_field", f"{name} is computed"))
                continue
            try:
                values[name] = coerce(fld, raw)
            except InvalidValue as exc:
                errors.append(FieldError(name, exc.code, f"{name} {exc.message}"))
        return values

    def _defaults(
        self, plan: _ObjectPlan, given: Mapping[str, Any], errors: list[FieldError]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, fld in plan.obj.fields.items():
            if name in given or fld.computed:
                continue
            default: Any = fld.defaultValue
            if default is None and fld.options:
                chosen = [o.value for o in fld.options if o.default]
                if chosen:
                    default = (
                        chosen
                        if fld.type in (FieldType.MULTISELECT, FieldType.CHECKBOXES) or fld.multiple
                        else chosen[0]
                    )
            if default is not None:
                try:
                    values[name] = coerce(fld, default)
                except InvalidValue as exc:
                    errors.append(FieldError(name, exc.code, f"default of {name} {exc.message}"))
        return values

    # -- write-time checks ------------------------------------------------------------------

    async def _check_references(
        self,
        tx: _Tx,
        plan: _ObjectPlan,
        values: Mapping[str, Any],
        names: Iterable[str],
        scope: Scope | None,
        errors: list[FieldError],
    ) -> None:
        wanted: dict[str, dict[str, set[str]]] = {}
        for name in names:
            fld = plan.obj.fields.get(name)
            target = reference_target(plan.obj.name, fld) if fld is not None else None
            value = values.get(name)
            if target is None or value is None:
                continue
            ids = set(value) if isinstance(value, list) else {value}
            wanted.setdefault(target, {}).setdefault(name, set()).update(ids)
        for target, by_field in wanted.items():
            target_plan = self._plan(target)
            all_ids = sorted(set().union(*by_field.values()))
            query = sa.select(target_plan.table.c.id).where(target_plan.table.c.id.in_(all_ids))
            condition = self._condition(scope, target_plan)
            if condition is not None:
                query = query.where(condition)
            present = set((await tx.conn.execute(query)).scalars())
            if plan.obj.name == target:
                present |= {v for v in all_ids if v == values.get("id")}
            for name, ids in by_field.items():
                for missing in sorted(ids - present):
                    errors.append(
                        FieldError(name, "invalid_reference", f"no {target} record {missing!r}")
                    )

    async def _check_unique(
        self, tx: _Tx, plan: _ObjectPlan, record: Mapping[str, Any], changed: set[str] | None
    ) -> None:
        errors: list[FieldError] = []
        t = plan.table
        for fields, case_sensitive, message in plan.uniques:
            if changed is not None and not set(fields) & changed:
                continue
            values = [record.get(f) for f in fields]
            if any(v is None for v in values):
                continue
            conditions = []
            for name, value in zip(fields, values, strict=True):
                column = t.c[name]
                if not case_sensitive and isinstance(value, str):
                    conditions.append(sa.func.lower(column) == value.lower())
                else:
                    conditions.append(column == value)
            query = sa.select(t.c.id).where(*conditions, t.c.id != record["id"]).limit(1)
            if (await tx.conn.execute(query)).first() is not None:
                errors.append(FieldError(fields[0], "duplicate_value", message))
        if errors:
            raise DuplicateValue(
                f"duplicate {plan.obj.name}: " + "; ".join(e.message for e in errors),
                details={"object": plan.obj.name},
                field_errors=errors,
            )

    async def _execute_write(self, tx: _Tx, plan: _ObjectPlan, stmt: Any) -> Any:
        try:
            return await tx.conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            text = str(exc.orig).lower()
            if "unique" in text or "duplicate" in text:
                raise DuplicateValue(
                    f"duplicate {plan.obj.name}: a unique value is already taken",
                    details={"object": plan.obj.name},
                ) from None
            if "foreign key" in text:
                raise ValidationError(
                    f"invalid {plan.obj.name} record: a referenced record does not exist",
                    details={"object": plan.obj.name},
                ) from None
            raise

    # -- insert -----------------------------------------------------------------------------

    async def insert(
        self,
        object_name: str,
        data: Mapping[str, Any],
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        """Create a record; return it as stored (with id, version 1, computed fields)."""
        plan = self._plan(object_name)
        doc = await self._prepare_insert(plan, data, actor)
        async with self._transaction(actor) as tx:
            record = await self._insert_in(tx, plan, doc, scope)
        await self._after(tx.after)
        return record

    async def _prepare_insert(
        self, plan: _ObjectPlan, data: Mapping[str, Any], actor: Actor
    ) -> dict[str, Any]:
        doc = self._client_fields(plan, data, actor, creating=True)
        payload = await self._before("beforeInsert", plan, actor, {"input": {"doc": doc}})
        return dict(payload["input"]["doc"])

    async def _insert_in(
        self, tx: _Tx, plan: _ObjectPlan, doc: Mapping[str, Any], scope: Scope | None
    ) -> dict[str, Any]:
        errors: list[FieldError] = []
        values = self._coerce_doc(plan, doc, errors)
        values = {**self._defaults(plan, values, errors), **values}
        record: Row = {name: values.get(name) for name in plan.obj.fields}
        record_id = values.get("id") or new_id()
        record.update(
            id=record_id,
            created_at=tx.now,
            updated_at=tx.now,
            created_by=tx.actor.user_id,
            updated_by=tx.actor.user_id,
            owner=values.get("owner", tx.actor.user_id),
            version=1,
        )
        record.update(plan.rules.compute_formulas(record, tx.now))
        errors += plan.rules.check(record, event="insert", now=tx.now)
        await self._check_references(tx, plan, record, plan.obj.fields, scope, errors)
        if errors:
            raise _validation_error(plan.obj.name, _dedupe(errors))
        await self._check_unique(tx, plan, record, None)
        for name, fld in plan.obj.fields.items():
            if fld.type == FieldType.AUTONUMBER:
                number = await allocate(
                    tx.conn, self.tables.sequence, autonumber_sequence(plan.obj.name, name)
                )
                record[name] = format_autonumber(fld.autonumberFormat, number, tx.now)
        for rollup in plan.summaries:
            ops = plan.obj.fields[rollup.field].summaryOperations
            record[rollup.field] = (
                0 if ops is not None and ops.function in ("count", "sum") else None
            )
        record.update(plan.rules.compute_formulas(record, tx.now))
        await self._claim_parents(tx, plan, record, None)
        await self._execute_write(tx, plan, plan.table.insert().values(**record))
        result = self._to_json(plan, record)
        changed = [k for k, v in record.items() if v is not None and k in plan.obj.fields]
        self._log(tx, plan, record_id, "create", 1, changed, result)
        self._after_event(tx, "afterInsert", plan, {"input": {"doc": dict(doc)}, "result": result})
        return result

    def _log(
        self,
        tx: _Tx,
        plan: _ObjectPlan,
        record_id: str,
        operation: Operation,
        version: int,
        changed: Sequence[str],
        record: dict[str, Any] | None,
        previous: dict[str, Any] | None = None,
    ) -> None:
        tx.changes.append(
            Change(
                plan.obj.name,
                record_id,
                operation,
                version,
                list(changed),
                record,
                tx.actor.user_id,
                previous,
                tx.actor.context,
            )
        )

    # -- update -----------------------------------------------------------------------------

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
        """Change fields of a record; return it as stored after the change."""
        plan = self._plan(object_name)
        doc = await self._prepare_update(plan, record_id, changes, actor, scope)
        async with self._transaction(actor) as tx:
            record = await self._update_in(tx, plan, record_id, doc, expected_version, scope)
        await self._after(tx.after)
        return record

    async def _prepare_update(
        self,
        plan: _ObjectPlan,
        record_id: str,
        changes: Mapping[str, Any],
        actor: Actor,
        scope: Scope | None,
    ) -> dict[str, Any]:
        doc = self._client_fields(plan, changes, actor, creating=False)
        if self.hooks is None:
            return doc
        previous = await self._read_json(plan, record_id, scope)
        payload = await self._before(
            "beforeUpdate",
            plan,
            actor,
            {"input": {"id": record_id, "doc": doc}, "previous": previous},
        )
        return dict(payload["input"]["doc"])

    async def _read_json(
        self, plan: _ObjectPlan, record_id: str, scope: Scope | None
    ) -> dict[str, Any]:
        query = self._load_query(plan, record_id, scope, lock=None)
        row = await self._reads.run(lambda conn: conn.execute(query).first())
        return self._to_json(plan, self._found(plan, record_id, row))

    async def _load(
        self,
        conn: AsyncConnection,
        plan: _ObjectPlan,
        record_id: str,
        scope: Scope | None,
        *,
        lock: Literal["update", "delete"] | None,
    ) -> Row:
        query = self._load_query(plan, record_id, scope, lock=lock)
        return self._found(plan, record_id, (await conn.execute(query)).first())

    def _load_query(
        self,
        plan: _ObjectPlan,
        record_id: str,
        scope: Scope | None,
        *,
        lock: Literal["update", "delete"] | None,
    ) -> sa.Select[Any]:
        query = sa.select(plan.table).where(plan.table.c.id == record_id)
        condition = self._condition(scope, plan)
        if condition is not None:
            query = query.where(condition)
        if lock is not None:
            # An update never changes the id: FOR NO KEY UPDATE lets children keep
            # inserting (their foreign key check only takes KEY SHARE).
            query = query.with_for_update(key_share=lock == "update")
        return query

    @staticmethod
    def _found(plan: _ObjectPlan, record_id: str, row: sa.Row[Any] | None) -> Row:
        if row is None:
            raise RecordNotFound(
                f"{plan.obj.name} record {record_id!r} does not exist",
                details={"object": plan.obj.name, "id": record_id},
            )
        return dict(row._mapping)

    @staticmethod
    def _check_version(plan: _ObjectPlan, current: Row, expected: int | None) -> None:
        if expected is not None and current["version"] != expected:
            raise ConcurrentModification(
                f"{plan.obj.name} record {current['id']!r} is at version {current['version']}, "
                f"not {expected}",
                details={
                    "object": plan.obj.name,
                    "id": current["id"],
                    "expectedVersion": expected,
                    "currentVersion": current["version"],
                },
            )

    async def _update_in(
        self,
        tx: _Tx,
        plan: _ObjectPlan,
        record_id: str,
        doc: Mapping[str, Any],
        expected_version: int | None,
        scope: Scope | None,
    ) -> dict[str, Any]:
        current = await self._load(tx.conn, plan, record_id, scope, lock="update")
        self._check_version(plan, current, expected_version)
        errors: list[FieldError] = []
        values = self._coerce_doc(plan, doc, errors)
        values.pop("id", None)
        record = {**current, **values}
        record.update(plan.rules.compute_formulas(record, tx.now))
        changed = {k for k in record if record[k] != current.get(k)}
        if not changed and not errors:
            return self._to_json(plan, current)
        errors += plan.rules.check(record, event="update", previous=current, now=tx.now)
        await self._check_references(tx, plan, record, changed, scope, errors)
        if errors:
            raise _validation_error(plan.obj.name, _dedupe(errors))
        await self._check_unique(tx, plan, record, changed)
        result = await self._write_update(tx, plan, current, record, changed)
        self._after_event(
            tx,
            "afterUpdate",
            plan,
            {
                "input": {"id": record_id, "doc": dict(doc)},
                "previous": self._to_json(plan, current),
                "result": result,
                "changedFields": sorted(changed),
            },
        )
        return result

    async def _write_update(
        self, tx: _Tx, plan: _ObjectPlan, current: Row, record: Row, changed: set[str]
    ) -> dict[str, Any]:
        t = plan.table
        record.update(
            version=current["version"] + 1, updated_at=tx.now, updated_by=tx.actor.user_id
        )
        assignments = {k: record[k] for k in changed}
        assignments.update(
            version=record["version"], updated_at=tx.now, updated_by=tx.actor.user_id
        )
        stmt = (
            t.update()
            .where(t.c.id == current["id"], t.c.version == current["version"])
            .values(**assignments)
        )
        await self._claim_parents(tx, plan, record, current, changed)
        result = await self._execute_write(tx, plan, stmt)
        if result.rowcount != 1:
            raise ConcurrentModification(
                f"{plan.obj.name} record {current['id']!r} changed while it was being updated",
                details={"object": plan.obj.name, "id": current["id"]},
            )
        snapshot = self._to_json(plan, record)
        before = self._to_json(plan, {k: current[k] for k in changed if k in current})
        self._log(
            tx, plan, record["id"], "update", record["version"], sorted(changed), snapshot, before
        )
        return snapshot

    async def _system_update(
        self, tx: _Tx, plan: _ObjectPlan, current: Row, values: Mapping[str, Any]
    ) -> None:
        """An engine-made change (roll-up, set_null): formulas, version, log; no rules."""
        record = {**current, **values}
        record.update(plan.rules.compute_formulas(record, tx.now))
        changed = {k for k in record if record[k] != current.get(k)}
        if not changed:
            return
        previous = self._to_json(plan, current)
        result = await self._write_update(tx, plan, current, record, changed)
        self._after_event(
            tx,
            "afterUpdate",
            plan,
            {
                "input": {"id": current["id"], "doc": {}},
                "previous": previous,
                "result": result,
                "changedFields": sorted(changed),
            },
        )

    # -- delete -----------------------------------------------------------------------------

    async def delete(
        self,
        object_name: str,
        record_id: str,
        *,
        actor: Actor,
        expected_version: int | None = None,
        scope: Scope | None = None,
    ) -> dict[str, Any]:
        """Delete a record (and apply its children's deleteBehavior); return its last state."""
        plan = self._plan(object_name)
        await self._prepare_delete(plan, record_id, actor, scope)
        async with self._transaction(actor) as tx:
            record = await self._delete_in(tx, plan, record_id, expected_version, scope)
        await self._after(tx.after)
        return record

    async def _prepare_delete(
        self, plan: _ObjectPlan, record_id: str, actor: Actor, scope: Scope | None
    ) -> None:
        if self.hooks is None:
            return
        previous = await self._read_json(plan, record_id, scope)
        await self._before(
            "beforeDelete", plan, actor, {"input": {"id": record_id}, "previous": previous}
        )

    async def _delete_in(
        self,
        tx: _Tx,
        plan: _ObjectPlan,
        record_id: str,
        expected_version: int | None,
        scope: Scope | None,
    ) -> dict[str, Any]:
        current = await self._load(tx.conn, plan, record_id, scope, lock="delete")
        self._check_version(plan, current, expected_version)
        return await self._delete_row(tx, plan, current)

    async def _delete_row(self, tx: _Tx, plan: _ObjectPlan, current: Row) -> dict[str, Any]:
        key = (plan.obj.name, current["id"])
        if key in tx.deleting:
            return self._to_json(plan, current)
        tx.deleting.add(key)
        await self._claim_parents(tx, plan, None, current)
        relations = [r for r in self.registry.children_of(plan.obj.name) if not r.multiple]
        for relation in relations:
            if relation.on_delete != "restrict":
                continue
            child = self._plan(relation.child)
            column = child.table.c[relation.field]
            count = (
                await tx.conn.execute(
                    sa.select(sa.func.count())
                    .select_from(child.table)
                    .where(column == current["id"])
                )
            ).scalar_one()
            if count:
                raise DeleteRestricted(
                    f"cannot delete {plan.obj.name} {current['id']!r}: {count} {relation.child} "
                    f"record(s) reference it through {relation.field!r}",
                    details={
                        "object": plan.obj.name,
                        "id": current["id"],
                        "child": relation.child,
                        "field": relation.field,
                        "count": int(count),
                    },
                )
        for relation in relations:
            if relation.on_delete == "restrict":
                continue
            child = self._plan(relation.child)
            column = child.table.c[relation.field]
            query = sa.select(child.table).where(column == current["id"]).with_for_update()
            rows = [dict(r._mapping) for r in (await tx.conn.execute(query)).all()]
            for row in rows:
                if (child.obj.name, row["id"]) in tx.deleting:
                    continue
                if relation.on_delete == "cascade":
                    await self._delete_row(tx, child, row)
                else:
                    await self._system_update(tx, child, row, {relation.field: None})
        t = plan.table
        await tx.conn.execute(t.delete().where(t.c.id == current["id"]))
        snapshot = self._to_json(plan, current)
        self._log(tx, plan, current["id"], "delete", current["version"], [], snapshot, snapshot)
        self._after_event(
            tx, "afterDelete", plan, {"input": {"id": current["id"]}, "previous": snapshot}
        )
        return snapshot

    # -- roll-ups ---------------------------------------------------------------------------

    async def _claim_parents(
        self,
        tx: _Tx,
        plan: _ObjectPlan,
        record: Row | None,
        previous: Row | None,
        changed: set[str] | None = None,
    ) -> None:
        """Mark the summary parents of a child write for recompute, and lock them first.

        On PostgreSQL the parents are locked *before* the child is written:
        otherwise two transactions adding children to one parent each hold a
        KEY SHARE lock from their foreign key check and then deadlock when
        both want to update the parent's summary.
        """
        claimed: dict[str, set[str]] = {}
        for rollup in plan.feeds:
            if changed is not None and not rollup.relevant & changed:
                continue
            for row in (record, previous):
                parent_id = row.get(rollup.link) if row is not None else None
                if parent_id is not None and (rollup.parent, parent_id) not in tx.deleting:
                    claimed.setdefault(rollup.parent, set()).add(parent_id)
        for parent_name, ids in sorted(claimed.items()):
            tx.dirty.setdefault(parent_name, set()).update(ids)
            if tx.conn.dialect.name == "postgresql":
                table = self._plan(parent_name).table
                await tx.conn.execute(
                    sa.select(table.c.id)
                    .where(table.c.id.in_(sorted(ids)))
                    .order_by(table.c.id)
                    .with_for_update(key_share=True)
                )

    async def _flush_rollups(self, tx: _Tx) -> None:
        while tx.dirty:
            parent_name, ids = tx.dirty.popitem()
            ids = {i for i in ids if (parent_name, i) not in tx.deleting}
            if ids:
                await self._recompute_summaries(tx, self._plan(parent_name), sorted(ids))

    async def _recompute_summaries(self, tx: _Tx, plan: _ObjectPlan, ids: list[str]) -> None:
        values: dict[str, dict[str, Any]] = {i: {} for i in ids}
        for rollup in plan.summaries:
            fld = plan.obj.fields[rollup.field]
            ops = fld.summaryOperations
            assert ops is not None
            child = self._plan(rollup.child)
            link = child.table.c[rollup.link]
            if ops.function == "count":
                aggregate: Any = sa.func.count()
            else:
                column = child.table.c[ops.field or "id"]
                aggregate = getattr(sa.func, ops.function)(column)
            query = sa.select(link, aggregate).where(link.in_(ids)).group_by(link)
            if ops.filter:
                query = query.where(compile_filter(ops.filter, child.table, child.columns))
            found = {row[0]: row[1] for row in (await tx.conn.execute(query)).all()}
            target_column = plan.table.c[rollup.field]
            for parent_id in ids:
                raw = found.get(parent_id)
                if raw is None and ops.function in ("count", "sum"):
                    raw = 0
                values[parent_id][rollup.field] = _stored(target_column, raw)
        query = (
            sa.select(plan.table)
            .where(plan.table.c.id.in_(ids))
            .order_by(plan.table.c.id)
            .with_for_update(key_share=True)
        )
        for row in (await tx.conn.execute(query)).all():
            current = dict(row._mapping)
            await self._system_update(tx, plan, current, values[current["id"]])

    async def recompute(self, object_name: str, *, actor: Actor | None = None) -> int:
        """Recompute formulas and summaries of every record of ``object_name``.

        Needed after a formula's expression or a summary definition changed
        (stored values follow the metadata from then on). Returns how many
        records changed.
        """
        plan = self._plan(object_name)
        actor = actor or Actor.system_actor()
        async with self._transaction(actor) as tx:
            ids = [r for r in (await tx.conn.execute(sa.select(plan.table.c.id))).scalars()]
            before = len(tx.changes)
            if plan.summaries:
                for start in range(0, len(ids), _EXPAND_CHUNK):
                    await self._recompute_summaries(tx, plan, ids[start : start + _EXPAND_CHUNK])
            else:
                rows = (await tx.conn.execute(sa.select(plan.table).with_for_update())).all()
                for row in rows:
                    await self._system_update(tx, plan, dict(row._mapping), {})
            changed = len([c for c in tx.changes[before:] if c.object == object_name])
        await self._after(tx.after)
        return changed

    # -- batch ------------------------------------------------------------------------------

    async def batch(
        self,
        object_name: str,
        operations: Sequence[BatchOperation | Mapping[str, Any]],
        *,
        actor: Actor,
        all_or_none: bool = True,
        scope: Scope | None = None,
    ) -> list[BatchResult]:
        """Run create/update/upsert/delete operations on one object.

        With ``all_or_none`` (the spec's default) they share one transaction:
        the first failure rolls every operation back (its result says why, the
        others are ``rolled_back``). Otherwise each runs in its own
        transaction and failures are reported per operation.
        """
        plan = self._plan(object_name)
        ops = [
            op if isinstance(op, BatchOperation) else BatchOperation.from_dict(op)
            for op in operations
        ]
        prepared: list[tuple[BatchOperation, dict[str, Any] | None]] = []
        results: list[BatchResult | None] = [None] * len(ops)
        for i, op in enumerate(ops):
            try:
                prepared.append((op, await self._prepare_batch_op(plan, op, actor, scope)))
            except ObjectOSError as exc:
                results[i] = BatchResult(i, op.operation, "failed", op.id, error=exc)
                prepared.append((op, None))
                if all_or_none:
                    return self._rolled_back(ops, results)
        if all_or_none:
            failed_at: int | None = None
            try:
                async with self._transaction(actor) as tx:
                    for i, (op, doc) in enumerate(prepared):
                        failed_at = i
                        results[i] = await self._run_batch_op(tx, plan, op, doc, scope, i)
                    failed_at = None
            except ObjectOSError as exc:
                index = failed_at if failed_at is not None else len(ops) - 1
                results[index] = BatchResult(
                    index, ops[index].operation, "failed", ops[index].id, error=exc
                )
                return self._rolled_back(ops, results)
            await self._after(tx.after)
            return [r for r in results if r is not None]
        for i, (op, doc) in enumerate(prepared):
            if results[i] is not None:
                continue
            try:
                async with self._transaction(actor) as tx:
                    results[i] = await self._run_batch_op(tx, plan, op, doc, scope, i)
            except ObjectOSError as exc:
                results[i] = BatchResult(i, op.operation, "failed", op.id, error=exc)
                continue
            await self._after(tx.after)
        return [r for r in results if r is not None]

    @staticmethod
    def _rolled_back(
        ops: Sequence[BatchOperation], results: list[BatchResult | None]
    ) -> list[BatchResult]:
        out = []
        for i, op in enumerate(ops):
            result = results[i]
            if result is None or result.status == "applied":
                result = BatchResult(i, op.operation, "rolled_back", op.id)
            out.append(result)
        return out

    async def _prepare_batch_op(
        self, plan: _ObjectPlan, op: BatchOperation, actor: Actor, scope: Scope | None
    ) -> dict[str, Any] | None:
        if op.operation != "create" and not op.id:
            raise InvalidField(
                f"a batch {op.operation} needs an id",
                field_errors=[FieldError("id", "missing_required_field", "id is required")],
            )
        if op.operation == "delete":
            await self._prepare_delete(plan, str(op.id), actor, scope)
            return None
        data = dict(op.data or {})
        if op.operation == "create":
            if op.id is not None:
                data.setdefault("id", op.id)
            return await self._prepare_insert(plan, data, actor)
        if op.operation == "upsert":
            exists = await self._exists(plan, str(op.id), scope)
            if not exists:
                return await self._prepare_insert(plan, {**data, "id": op.id}, actor)
        return await self._prepare_update(plan, str(op.id), data, actor, scope)

    async def _exists(self, plan: _ObjectPlan, record_id: str, scope: Scope | None) -> bool:
        query = self._load_query(plan, record_id, scope, lock=None)
        return await self._reads.run(lambda conn: conn.execute(query).first()) is not None

    async def _run_batch_op(
        self,
        tx: _Tx,
        plan: _ObjectPlan,
        op: BatchOperation,
        doc: dict[str, Any] | None,
        scope: Scope | None,
        index: int,
    ) -> BatchResult:
        record_id = str(op.id) if op.id is not None else None
        if op.operation == "delete":
            assert record_id is not None
            record = await self._delete_in(tx, plan, record_id, op.expected_version, scope)
            return BatchResult(index, op.operation, "applied", record_id, record)
        assert doc is not None
        if op.operation == "create" or (op.operation == "upsert" and "id" in doc):
            if op.operation == "upsert":
                try:
                    await self._load(tx.conn, plan, str(doc["id"]), scope, lock="update")
                except RecordNotFound:
                    record = await self._insert_in(tx, plan, doc, scope)
                    return BatchResult(index, op.operation, "applied", record["id"], record)
                doc = {k: v for k, v in doc.items() if k != "id"}
            else:
                record = await self._insert_in(tx, plan, doc, scope)
                return BatchResult(index, op.operation, "applied", record["id"], record)
        assert record_id is not None
        record = await self._update_in(tx, plan, record_id, doc, op.expected_version, scope)
        return BatchResult(index, op.operation, "applied", record_id, record)


def _stored(column: sa.Column[Any], value: Any) -> Any:
    """An aggregate result in the Python type the column holds (for comparison)."""
    if value is None:
        return None
    column_type = column.type
    if isinstance(column_type, DecimalType):
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-column_type.scale))
    if isinstance(column_type, sa.Integer):
        return int(value)
    return value


def _contention_error(exc: sa.exc.DBAPIError) -> ObjectOSError | None:
    """A database conflict as the protocol error a client can retry on (None: not one)."""
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if state in ("40P01", "40001"):  # deadlock detected, serialization failure
        return ConcurrentModification(
            "the write collided with a concurrent one and was rolled back; retry it",
            details={"reason": "deadlock" if state == "40P01" else "serialization"},
        )
    if "database is locked" in str(exc.orig):  # SQLite's busy timeout ran out
        return ServiceUnavailable(
            "the database stayed locked by other writers; retry later",
            details={"reason": "database is locked"},
        )
    return None


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for error in errors:
        key = (error.field, error.code, error.message)
        if key not in seen:
            seen.add(key)
            out.append(error)
    return out


__all__ = [
    "BatchOperation",
    "BatchResult",
    "DataEngine",
    "FindResult",
    "Scope",
    "ScopeCondition",
]
