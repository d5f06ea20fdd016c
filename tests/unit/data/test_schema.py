"""Tables from metadata, and the SQLite settings of the engine factory."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data import DataEngine, ObjectTables
from objectos.data.schema import DecimalType, UTCDateTime, new_id
from objectos.metadata import MetadataRegistry

from .conftest import OpenEngine
from .doubles import ALICE


def test_ids_are_uuid7() -> None:
    ids = [new_id() for _ in range(100)]

    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 100


def test_column_types_follow_field_types(crm: MetadataRegistry) -> None:
    tables = ObjectTables(crm)
    opportunity = tables.table("opportunity")
    case = tables.table("case")

    assert isinstance(opportunity.c.amount.type, DecimalType)
    assert (opportunity.c.amount.type.precision, opportunity.c.amount.type.scale) == (18, 2)
    assert isinstance(opportunity.c.expected_revenue.type, DecimalType)  # returnType currency
    assert isinstance(opportunity.c.line_item_count.type, sa.Integer)  # a count summary
    assert isinstance(opportunity.c.line_item_total.type, DecimalType)  # sum of a currency
    assert isinstance(opportunity.c.close_date.type, sa.Date)
    assert isinstance(case.c.closed_at.type, UTCDateTime)
    assert isinstance(case.c.description.type, sa.Text)
    assert isinstance(tables.table("account").c.billing_address.type, sa.JSON)
    assert [fk.target_fullname for fk in case.c.contact.foreign_keys] == ["contact.id"]
    assert [c.name for c in case.columns][:7] == [
        "id",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
        "owner",
        "version",
    ]


def test_columns_describe_fields_for_the_query_compiler(crm: MetadataRegistry) -> None:
    columns = ObjectTables(crm).columns("opportunity")

    assert columns["expected_revenue"].type == "currency"
    assert columns["line_item_total"].type == "currency"
    assert columns["account"].reference == "account"
    assert columns["name"].searchable


async def test_sqlite_connections_use_wal_and_foreign_keys(
    data: DataEngine, database: AsyncEngine
) -> None:
    if database.dialect.name != "sqlite":
        pytest.skip("SQLite connection settings")
    async with database.connect() as conn:
        pragmas = {
            name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout")
        }

    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000}


async def test_the_clock_stamps_records_and_autonumber_dates(open_engine: OpenEngine) -> None:
    moment = dt.datetime(2026, 3, 5, 8, 0, tzinfo=dt.UTC)
    registry = MetadataRegistry.from_objects(
        [
            {
                "name": "invoice",
                "fields": {
                    "number": {"type": "autonumber", "autonumberFormat": "INV-{YYYY}{MM}-{000}"}
                },
            }
        ]
    )
    data = await open_engine(registry, clock=lambda: moment)

    invoice = await data.insert("invoice", {}, actor=ALICE)

    assert invoice["number"] == "INV-202603-001"
    assert invoice["created_at"] == "2026-03-05T08:00:00Z"


async def test_every_index_of_the_crm_exists(data: DataEngine, database: AsyncEngine) -> None:
    def names(conn: sa.Connection) -> set[str]:
        inspector = sa.inspect(conn)
        return {
            str(ix["name"])
            for table in data.registry.objects
            for ix in inspector.get_indexes(table)
        }

    async with database.connect() as conn:
        found = await conn.run_sync(names)

    assert {
        "uq_account_name",
        "ix_account_account_industry",
        "uq_contact_email",
        "ix_contact_account",
        "ix_opportunity_opportunity_stage_close",
        "ix_case_closed_at",
        "uq_industry_code_code",
    } <= found
    assert all(re.match(r"^(ix|uq)_", n) for n in found)
