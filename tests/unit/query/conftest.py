"""One small ``items`` table with eight rows, in SQLite and PostgreSQL.

Every SQL-level test gets a fresh table through the ``db`` fixture, which runs
once on SQLite (a file in ``tmp_path``) and once on PostgreSQL when
``OBJECTOS_TEST_POSTGRES_URL`` is set; there the table name is unique to the
test, and the table is dropped afterwards.

The rows are chosen so that each operator both matches and misses: ties on
``amount`` (three rows at 100), NULLs in most columns, text holding LIKE
wildcards (``%``, ``_``), the LIKE escape character (``/``) and SQL
metacharacters, and both kinds of "no value" in a JSON column: JSON ``null``
(r05, what ``sa.JSON`` stores for None) and SQL NULL (r07, column omitted).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from objectos.data.filter import ColumnInfo, compile_filter
from objectos.data.query import QuerySpec, build_aggregate, build_count, build_select

POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")
RUN = uuid.uuid4().hex[:8]
_table_numbers = itertools.count()

COLUMNS: dict[str, ColumnInfo] = {
    "id": ColumnInfo("id", "text"),
    "name": ColumnInfo("name", "text", searchable=True),
    "description": ColumnInfo("description", "textarea", searchable=True),
    "status": ColumnInfo("status", "select"),
    "amount": ColumnInfo("amount", "number"),
    "qty": ColumnInfo("qty", "number"),
    "price": ColumnInfo("price", "currency"),
    "active": ColumnInfo("active", "boolean"),
    "due": ColumnInfo("due", "date"),
    "created_at": ColumnInfo("created_at", "datetime"),
    "opens": ColumnInfo("opens", "time"),
    "tags": ColumnInfo("tags", "tags"),
    "watchers": ColumnInfo("watchers", "lookup", reference="user", multiple=True),
    "owner": ColumnInfo("owner", "lookup", reference="user"),
    "meta": ColumnInfo("meta", "json"),
    "secret": ColumnInfo("secret", "password"),
    "score": ColumnInfo("score", "formula"),
}


def make_table(name: str = "items", metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        name,
        metadata or sa.MetaData(),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("status", sa.String(20)),
        sa.Column("amount", sa.Double),
        sa.Column("qty", sa.Integer),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("active", sa.Boolean),
        sa.Column("due", sa.Date),
        sa.Column("created_at", sa.DateTime),
        sa.Column("opens", sa.Time),
        sa.Column("tags", sa.JSON),
        sa.Column("watchers", sa.JSON),
        sa.Column("owner", sa.String(36)),
        sa.Column("meta", sa.JSON),
        sa.Column("secret", sa.String(100)),
        sa.Column("score", sa.Double),
    )


def _row(
    id: str,
    name: str,
    description: str | None,
    status: str | None,
    amount: float | None,
    qty: int,
    price: str | None,
    active: bool | None,
    due: str | None,
    created_at: str,
    opens: str | None,
    tags: list[str] | None,
    owner: str | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": id,
        "name": name,
        "description": description,
        "status": status,
        "amount": amount,
        "qty": qty,
        "price": Decimal(price) if price is not None else None,
        "active": active,
        "due": date.fromisoformat(due) if due else None,
        "created_at": datetime.fromisoformat(created_at),
        "opens": time.fromisoformat(opens) if opens else None,
        "tags": tags,
        "owner": owner,
        "watchers": extra.get("watchers", []),
        "meta": extra.get("meta", {"v": 0}),
        "secret": "hash",
        "score": extra.get("score"),
    }


# fmt: off
ROWS = [
    _row("r01", "Alpha", "First item", "open", 100.0, 1, "9.99", True, "2024-01-10",
         "2024-01-01T10:00:00", "09:00", ["red", "blue"], "alice",
         watchers=["bob", "carol"], meta={"a": 1}, score=1.5),
    _row("r02", "Beta 50% off", "Discount", "paid", 250.5, 2, "19.50", False, "2024-02-15",
         "2024-01-02T11:00:00", "10:30", ["blue"], "bob", watchers=["alice"]),
    _row("r03", "gamma_ray", "under_score", "open", None, 3, None, True, None,
         "2024-01-03T12:00:00", None, [], "alice", meta=None),
    _row("r04", "Delta/slash", "path a/b", "closed", 100.0, 4, "5.00", None, "2024-03-01",
         "2024-02-01T00:00:00", "08:15", ["green"], "carol"),
    _row("r05", "'; DROP TABLE items; --", "injection", "open", -5.0, 5, "0.00", False,
         "2023-12-31", "2023-12-31T23:59:00", "12:00", None, "bob"),
    _row("r06", "epsilon", None, "paid", 100.0, 6, "12.00", True, "2024-01-10",
         "2024-01-06T00:00:00", "18:00", ["red"], "alice"),
    _row("r07", "ZETA", "UPPER case", None, 0.0, 7, "1.00", False, "2024-01-20",
         "2024-01-07T00:00:00", "07:00", None, None),
    _row("r08", "eta 50 off", "fifty", "open", 75.0, 8, "7.50", True, "2024-01-15",
         "2024-01-08T00:00:00", "13:00", ["blue", "green"], "carol"),
]
# fmt: on
ALL_IDS = frozenset(row["id"] for row in ROWS)


@dataclass
class Db:
    """A populated ``items`` table and the few ways tests read it."""

    engine: AsyncEngine
    table: sa.Table
    columns: dict[str, ColumnInfo]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def rows(self, stmt: sa.Executable) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [dict(row._mapping) for row in result]

    async def ids(self, where: Any) -> set[str]:
        """Ids of the rows ``where`` matches, through compile_filter alone."""
        condition = compile_filter(where, self.table, self.columns)
        stmt = sa.select(self.table.c.id).where(condition)
        return {row["id"] for row in await self.rows(stmt)}

    async def select(
        self, spec: QuerySpec, extra_where: sa.ColumnElement[bool] | None = None
    ) -> list[dict[str, Any]]:
        return await self.rows(
            build_select(spec, self.table, self.columns, extra_where=extra_where)
        )

    async def count(
        self, spec: QuerySpec, extra_where: sa.ColumnElement[bool] | None = None
    ) -> int:
        stmt = build_count(spec, self.table, self.columns, extra_where=extra_where)
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def aggregate(
        self, spec: QuerySpec, extra_where: sa.ColumnElement[bool] | None = None
    ) -> list[dict[str, Any]]:
        return await self.rows(
            build_aggregate(spec, self.table, self.columns, extra_where=extra_where)
        )


async def _populate(engine: AsyncEngine, table: sa.Table) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(table.metadata.create_all)
        # r07 leaves tags out entirely (SQL NULL); the others pass None (JSON null).
        with_tags = [row for row in ROWS if row["id"] != "r07"]
        await conn.execute(sa.insert(table), with_tags)
        await conn.execute(sa.insert(table), [{k: v for k, v in ROWS[6].items() if k != "tags"}])


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'query.db'}")
        table = make_table()
    else:
        if not POSTGRES_URL:
            pytest.skip("set OBJECTOS_TEST_POSTGRES_URL to run the PostgreSQL tests")
        engine = create_async_engine(POSTGRES_URL, poolclass=NullPool)
        table = make_table(f"q_items_{RUN}_{next(_table_numbers)}")
    try:
        await _populate(engine, table)
        yield Db(engine, table, COLUMNS)
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
        await engine.dispose()


@pytest.fixture
def table() -> sa.Table:
    """The items table, unbound: for tests that only compile statements."""
    return make_table()
