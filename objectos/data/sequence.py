"""Named counters in the database (``_sequence``): autonumbers and the change log's version.

One statement per allocation — an upsert that increments and returns the new
value (``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``, on SQLite ≥ 3.35 and
PostgreSQL). On PostgreSQL the counter row stays locked until the
transaction ends, so concurrent writers get distinct values *in commit
order* and a rolled-back transaction gives its values back: the change log's
server versions are therefore gapless and never become visible out of order.
On SQLite the write transaction already holds the database lock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

#: Counter of the change log's server version.
CHANGE_LOG_SEQUENCE = "change_log"


def autonumber_sequence(object_name: str, field: str) -> str:
    """Counter name of one autonumber field."""
    return f"autonumber:{object_name}.{field}"


async def allocate(conn: Any, table: sa.Table, name: str, count: int = 1) -> int:
    """Advance counter ``name`` by ``count`` and return its new (last allocated) value.

    ``conn`` is an AsyncConnection inside a transaction; the values
    ``result - count + 1 .. result`` belong to the caller.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    dialect = conn.dialect.name
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:  # pragma: no cover - only the two supported dialects reach here
        raise NotImplementedError(f"no counter upsert for dialect {dialect!r}")
    stmt = (
        insert.values(name=name, value=count)
        .on_conflict_do_update(index_elements=[table.c.name], set_={"value": table.c.value + count})
        .returning(table.c.value)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def current(conn: Any, table: sa.Table, name: str) -> int:
    """The last value allocated from counter ``name`` (0 if never used)."""
    value = (await conn.execute(sa.select(table.c.value).where(table.c.name == name))).scalar()
    return int(value or 0)


__all__ = ["CHANGE_LOG_SEQUENCE", "allocate", "autonumber_sequence", "current"]
