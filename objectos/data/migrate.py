"""Bring the database in line with the metadata, in place, never losing data.

:func:`migrate` compares the tables of :class:`~objectos.data.schema.ObjectTables`
with the live database (SQLAlchemy's inspector) and applies the difference
with Alembic operations (batch mode on SQLite, which rebuilds a table where it
cannot ``ALTER`` it):

- a new object creates its table, a new field adds a column, a new index or
  unique field creates an index; a removed index is dropped;
- a type change that keeps every value (longer text, more digits, integer to
  bigger integer or exact decimal) alters the column in place;
- removing a field or object, or narrowing/changing a type, is only done when
  no record holds a value there. Otherwise the change is **refused**: a
  :class:`~objectos.errors.ConfigError` names each object/field and why, and
  nothing at all is applied. A new unique index over duplicate values is
  refused the same way.

Everything happens in one transaction, after taking a migration lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), and the plan
is made inside it: two hub replicas starting together migrate once, and a
failed step rolls everything back. Only tables recorded in ``_schema_objects``
(created by this module) are ever dropped, so tables of other components
sharing the database are never touched.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data.schema import (
    SCHEMA_OBJECTS_TABLE,
    SYSTEM_TABLES,
    WRITE_OPTION,
    ObjectTables,
    sqlite_pragma,
)
from objectos.errors import ConfigError, FieldError

#: pg_advisory_xact_lock key that serialises migrations of one database.
_PG_LOCK_KEY = 0x0B7EC7_05

_MANAGED_INDEX = re.compile(r"^(ix|uq)_")


@dataclass(frozen=True)
class MigrationStep:
    """One change to the database, in words (``str(step)``) and in data."""

    action: str
    object: str
    name: str | None
    detail: str
    column: sa.Column[Any] | None = field(default=None, repr=False, compare=False)
    index: sa.Index | None = field(default=None, repr=False, compare=False)
    type_: sa.types.TypeEngine[Any] | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        target = f"{self.object}.{self.name}" if self.name else self.object
        return f"{self.action} {target}: {self.detail}"


@dataclass(frozen=True)
class Refusal:
    """A change that would lose data: which object/field, and why."""

    object: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        target = f"{self.object}.{self.field}" if self.field else self.object
        return f"{target}: {self.reason}"


@dataclass
class MigrationPlan:
    """What :func:`migrate` did (or, for a dry run or a refusal, would do)."""

    steps: list[MigrationStep] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    applied: bool = False

    def __bool__(self) -> bool:
        return bool(self.steps)

    def describe(self) -> str:
        """A human-readable summary, one line per step or refusal."""
        if not self.steps and not self.refusals:
            return "database is up to date"
        lines = [str(step) for step in self.steps]
        lines += [f"REFUSED {refusal}" for refusal in self.refusals]
        return "\n".join(lines)


# --- type comparison -------------------------------------------------------------------------


def _signature(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.load_dialect_impl(dialect)
    return re.sub(r"\s+", " ", type_.compile(dialect=dialect).upper()).replace("( ", "(")


_SIG = re.compile(r"^(?P<name>[A-Z ]+?)\s*(\((?P<args>[^)]*)\))?$")
_INT_DIGITS = {"SMALLINT": 5, "INTEGER": 10, "BIGINT": 19}


def _shape(signature: str) -> tuple[str, tuple[int, ...]]:
    match = _SIG.match(signature)
    if not match:
        return signature, ()
    name = match.group("name").strip()
    args = tuple(int(a) for a in (match.group("args") or "").split(",") if a.strip().isdigit())
    if name in ("VARCHAR", "CHAR", "CHARACTER VARYING", "TEXT", "STRING"):
        return "text", args or (1 << 31,)
    if name in _INT_DIGITS:
        return "int", (_INT_DIGITS[name],)
    if name in ("NUMERIC", "DECIMAL"):
        return "numeric", args
    if name in ("FLOAT", "REAL", "DOUBLE", "DOUBLE PRECISION"):
        return "float", ()
    return name, args


def _widens(old: str, new: str) -> bool:
    """Whether every value of a column typed ``old`` fits unchanged into ``new``."""
    (old_kind, old_args), (new_kind, new_args) = _shape(old), _shape(new)
    if old_kind == "text" and new_kind == "text":
        return new_args[0] >= old_args[0]
    if old_kind == "int" and new_kind == "int":
        return new_args[0] >= old_args[0]
    if old_kind == "int" and new_kind == "numeric" and len(new_args) == 2:
        return new_args[0] - new_args[1] >= old_args[0]
    if old_kind == "numeric" and new_kind == "numeric" and len(old_args) == 2 == len(new_args):
        return new_args[1] >= old_args[1] and new_args[0] - new_args[1] >= old_args[0] - old_args[1]
    return old_kind == "float" and new_kind == "float"


# --- planning --------------------------------------------------------------------------------


class _Planner:
    def __init__(self, conn: sa.Connection, tables: ObjectTables) -> None:
        self.conn = conn
        self.tables = tables
        self.dialect = conn.dialect
        self.inspector = sa.inspect(conn)
        self.existing = set(self.inspector.get_table_names())
        self.plan = MigrationPlan()

    def step(self, action: str, obj: str, name: str | None, detail: str, **payload: Any) -> None:
        self.plan.steps.append(MigrationStep(action, obj, name, detail, **payload))

    def refuse(self, obj: str, name: str | None, reason: str) -> None:
        self.plan.refusals.append(Refusal(obj, name, reason))

    def count(self, table: str, where: str | None = None) -> int:
        t = sa.table(table)
        query = sa.select(sa.func.count()).select_from(t)
        if where is not None:
            query = query.where(sa.column(where).is_not(None))
        return int(self.conn.execute(query).scalar_one())

    def managed_objects(self) -> set[str]:
        if SCHEMA_OBJECTS_TABLE not in self.existing:
            return set()
        t = self.tables.schema_objects
        return set(self.conn.execute(sa.select(t.c.name)).scalars())

    def run(self) -> MigrationPlan:
        for name in SYSTEM_TABLES:
            if name not in self.existing:
                self.create(self.tables.metadata.tables[name], "system table")
        managed = self.managed_objects()
        for table in self.tables.object_tables():
            if table.name not in self.existing:
                self.create(table, f"new object with {len(table.columns)} columns")
            else:
                self.diff_table(table)
            if table.name not in managed:
                self.step("register_object", table.name, None, "recorded as managed by ObjectOS")
        for name in sorted(managed - set(self.tables.objects)):
            if name not in self.existing:
                continue
            rows = self.count(name)
            if rows:
                self.refuse(
                    name,
                    None,
                    f"object removed from metadata but its table holds "
                    f"{rows} record(s); dropping it would lose them",
                )
            else:
                self.step("drop_table", name, None, "object removed from metadata (table empty)")
        return self.plan

    def create(self, table: sa.Table, detail: str) -> None:
        self.step("create_table", table.name, None, detail)
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            self.step("create_index", table.name, str(index.name), _index_words(index), index=index)

    def diff_table(self, table: sa.Table) -> None:
        name = table.name
        live = {c["name"]: c for c in self.inspector.get_columns(name)}
        live_fk = {
            fk["constrained_columns"][0]: fk["referred_table"]
            for fk in self.inspector.get_foreign_keys(name)
            if len(fk["constrained_columns"]) == 1
        }
        live_indexes = {
            str(ix["name"]): ix
            for ix in self.inspector.get_indexes(name)
            if ix.get("name") and _MANAGED_INDEX.match(str(ix["name"]))
        }
        desired_indexes = {str(ix.name): ix for ix in table.indexes}
        changed_columns: set[str] = set()
        # Indexes that no longer exist or changed are dropped first: a column
        # rebuild or drop below may otherwise trip over them.
        for ix_name, live_ix in sorted(live_indexes.items()):
            wanted = desired_indexes.get(ix_name)
            if wanted is None or not _same_index(wanted, live_ix):
                self.step(
                    "drop_index",
                    name,
                    ix_name,
                    "index no longer in metadata" if wanted is None else "index changed",
                )
        for column in table.columns:
            current = live.get(column.name)
            if current is None:
                self.step(
                    "add_column",
                    name,
                    column.name,
                    f"new field ({_signature(column.type, self.dialect)})",
                    column=column,
                )
                changed_columns.add(column.name)
                continue
            new_sig = _signature(column.type, self.dialect)
            old_sig = _signature(current["type"], self.dialect)
            new_fk = _fk_target(column)
            old_fk = live_fk.get(column.name)
            if new_sig == old_sig and new_fk == old_fk:
                continue
            changed_columns.add(column.name)
            if new_fk == old_fk and _widens(old_sig, new_sig):
                self.step(
                    "alter_column",
                    name,
                    column.name,
                    f"{old_sig} -> {new_sig} (widening)",
                    column=column,
                    type_=column.type,
                )
                continue
            why = (
                f"reference {old_fk or 'none'} -> {new_fk or 'none'}"
                if new_fk != old_fk
                else f"type {old_sig} -> {new_sig}"
            )
            holding = self.count(name, column.name)
            if holding:
                self.refuse(
                    name, column.name, f"{why} cannot keep the values of {holding} record(s)"
                )
            else:
                self.step(
                    "replace_column", name, column.name, f"{why} (column is empty)", column=column
                )
        for column_name in sorted(set(live) - {c.name for c in table.columns}):
            holding = self.count(name, column_name)
            if holding:
                self.refuse(
                    name,
                    column_name,
                    f"field removed from metadata but {holding} "
                    f"record(s) hold a value; dropping it loses them",
                )
            else:
                self.step("drop_column", name, column_name, "field removed (column is empty)")
        for ix_name, index in sorted(desired_indexes.items()):
            existing_ix = live_indexes.get(ix_name)
            if existing_ix is not None and _same_index(index, existing_ix):
                continue
            if index.unique and not {c.name for c in index.columns} & changed_columns:
                duplicates = self.duplicates(table, index)
                if duplicates:
                    self.refuse(
                        name,
                        ", ".join(c.name for c in index.columns),
                        f"unique index {ix_name} cannot be created: {duplicates} "
                        f"value(s) occur more than once",
                    )
                    continue
            self.step("create_index", name, ix_name, _index_words(index), index=index)

    def duplicates(self, table: sa.Table, index: sa.Index) -> int:
        cols = [table.c[c.name] for c in index.columns]
        grouped = (
            sa.select(*cols)
            .where(*(c.is_not(None) for c in cols))
            .group_by(*cols)
            .having(sa.func.count() > 1)
            .subquery()
        )
        return int(self.conn.execute(sa.select(sa.func.count()).select_from(grouped)).scalar_one())


def _fk_target(column: sa.Column[Any]) -> str | None:
    for fk in column.foreign_keys:
        return fk.target_fullname.split(".")[0]
    return None


def _same_index(wanted: sa.Index, live: Any) -> bool:
    return [c.name for c in wanted.columns] == list(live["column_names"]) and bool(
        wanted.unique
    ) == bool(live["unique"])


def _index_words(index: sa.Index) -> str:
    kind = "unique index" if index.unique else "index"
    return f"{kind} on ({', '.join(c.name for c in index.columns)})"


# --- applying --------------------------------------------------------------------------------


class _Applier:
    def __init__(self, conn: sa.Connection, tables: ObjectTables, plan: MigrationPlan) -> None:
        self.conn = conn
        self.tables = tables
        self.plan = plan
        self.sqlite = conn.dialect.name == "sqlite"
        self.op = Operations(MigrationContext.configure(conn))

    def by_action(self, *actions: str) -> list[MigrationStep]:
        return [s for s in self.plan.steps if s.action in actions]

    def run(self) -> None:
        for step in self.by_action("drop_index"):
            self.op.drop_index(str(step.name), table_name=step.object)
        to_create = [s.object for s in self.by_action("create_table")]
        created: set[str] = set()
        deferred: list[tuple[str, sa.ForeignKey]] = []
        for table_name in to_create:
            table = self.tables.metadata.tables[table_name]
            columns = []
            for column in table.columns:
                target = _fk_target(column)
                # PostgreSQL checks a REFERENCES target at CREATE time; a table created
                # later in this migration (a reference cycle) gets its key afterwards.
                if (
                    target is not None
                    and not self.sqlite
                    and target != table_name
                    and target in to_create
                    and target not in created
                ):
                    columns.append(_column_copy(column, with_foreign_key=False))
                    deferred.extend((table_name, fk) for fk in column.foreign_keys)
                else:
                    columns.append(_column_copy(column))
            self.op.create_table(table_name, *columns)
            created.add(table_name)
        for table_name, fk in deferred:
            self.op.create_foreign_key(
                str(fk.name), table_name, fk.target_fullname.split(".")[0], [fk.parent.name], ["id"]
            )
        self.column_steps()
        for step in self.by_action("create_index"):
            assert step.index is not None
            self.op.create_index(
                str(step.name),
                step.object,
                [c.name for c in step.index.columns],
                unique=step.index.unique,
            )
        for step in self.by_action("drop_table"):
            self.op.drop_table(step.object)
            self.conn.execute(
                self.tables.schema_objects.delete().where(
                    self.tables.schema_objects.c.name == step.object
                )
            )
        registered = [s.object for s in self.by_action("register_object")]
        if registered:
            now = dt.datetime.now(dt.UTC)
            self.conn.execute(
                self.tables.schema_objects.insert(),
                [{"name": name, "created_at": now} for name in registered],
            )

    def column_steps(self) -> None:
        steps = self.by_action("add_column", "alter_column", "replace_column", "drop_column")
        for table_name in dict.fromkeys(s.object for s in steps):
            mine = [s for s in steps if s.object == table_name]
            if self.sqlite:
                # SQLite cannot ALTER most of this; batch mode rebuilds the table
                # (copy, drop, rename) inside our transaction.
                with self.op.batch_alter_table(table_name, recreate="auto") as batch:
                    for step in mine:
                        self.column_step(batch, step, None)
            else:
                for step in mine:
                    self.column_step(self.op, step, table_name)

    def column_step(self, op: Any, step: MigrationStep, table: str | None) -> None:
        args: tuple[Any, ...] = (table,) if table is not None else ()
        name = str(step.name)
        if step.action == "drop_column":
            op.drop_column(*args, name)
        elif step.action == "alter_column":
            op.alter_column(*args, name, type_=step.type_)
        else:
            assert step.column is not None
            if step.action == "replace_column":
                op.drop_column(*args, name)
            op.add_column(*args, _column_copy(step.column))


def _column_copy(column: sa.Column[Any], *, with_foreign_key: bool = True) -> sa.Column[Any]:
    """A detached copy of ``column`` (``Column._copy`` would drop its foreign key)."""
    keys = (
        [sa.ForeignKey(fk.target_fullname, name=fk.name) for fk in column.foreign_keys]
        if with_foreign_key
        else []
    )
    return sa.Column(
        column.name,
        column.type,
        *keys,
        primary_key=column.primary_key,
        nullable=column.nullable,
        autoincrement=False,
    )


def _migrate_sync(conn: sa.Connection, tables: ObjectTables, dry_run: bool) -> MigrationPlan:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # Rebuilding a referenced table must not fire (or fail) foreign keys; SQLite's
        # documented recipe: keys off outside the transaction, foreign_key_check before commit.
        sqlite_pragma(conn, "foreign_keys=OFF")
    try:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin() as transaction:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            plan = _Planner(conn, tables).run()
            if dry_run or plan.refusals or not plan.steps:
                transaction.rollback()
                return plan
            _Applier(conn, tables, plan).run()
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise ConfigError(
                        f"migration would break {len(broken)} reference(s); nothing applied",
                        details={"violations": [list(map(str, row)) for row in broken[:20]]},
                    )
            plan.applied = True
            return plan
    finally:
        if sqlite:
            sqlite_pragma(conn, "foreign_keys=ON")


async def migrate(
    engine: AsyncEngine, tables: ObjectTables, *, dry_run: bool = False
) -> MigrationPlan:
    """Apply the metadata's schema to the database; return what was done.

    With ``dry_run`` nothing is applied and refusals are returned in the plan
    instead of raised. Otherwise a plan with refusals raises ConfigError
    (``field_errors`` name ``object.field`` and the reason) and changes nothing.
    """
    async with engine.connect() as conn:
        plan = await conn.run_sync(_migrate_sync, tables, dry_run)
    if plan.refusals and not dry_run:
        raise ConfigError(
            "schema migration refused, nothing applied: "
            + "; ".join(str(r) for r in plan.refusals),
            details={
                "refused": [str(r) for r in plan.refusals],
                "planned": [str(s) for s in plan.steps],
            },
            field_errors=[
                FieldError(f"{r.object}.{r.field}" if r.field else r.object, "data_loss", r.reason)
                for r in plan.refusals
            ],
        )
    return plan


__all__ = ["MigrationPlan", "MigrationStep", "Refusal", "migrate"]
