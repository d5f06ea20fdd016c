"""Migrations change the schema in place and refuse anything that would lose data."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data import DataEngine
from objectos.errors import ConfigError
from objectos.metadata import MetadataRegistry

from .conftest import OpenEngine
from .doubles import ALICE


def note(**extra_fields: Any) -> dict[str, Any]:
    """The ``note`` object with a title and ``extra_fields``."""
    return {"name": "note", "fields": {"title": {"type": "text"}, **extra_fields}}


def registry(*objects: dict[str, Any]) -> MetadataRegistry:
    return MetadataRegistry.from_objects(objects)


async def columns_of(database: AsyncEngine, table: str) -> dict[str, str]:
    """``{column: type}`` of a live table."""

    def inspect(conn: sa.Connection) -> dict[str, str]:
        return {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns(table)}

    async with database.connect() as conn:
        return await conn.run_sync(inspect)


async def index_names(database: AsyncEngine, table: str) -> set[str]:
    def inspect(conn: sa.Connection) -> set[str]:
        return {str(ix["name"]) for ix in sa.inspect(conn).get_indexes(table)}

    async with database.connect() as conn:
        return await conn.run_sync(inspect)


async def test_an_empty_database_gets_every_table_once(open_engine: OpenEngine) -> None:
    data = await open_engine(migrate=False)

    first = await data.migrate()
    second = await data.migrate()

    created = {s.object for s in first.steps if s.action == "create_table"}
    assert created == {*data.registry.objects, "_change_log", "_sequence", "_schema_objects"}
    assert first.applied
    assert not second and second.describe() == "database is up to date"


async def test_new_fields_indexes_and_objects_are_added_keeping_data(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    v1 = await open_engine(registry(note()))
    kept = await v1.insert("note", {"title": "Keep me"}, actor=ALICE)
    v2_objects = (
        {
            **note(body={"type": "textarea"}, pinned={"type": "boolean", "index": True}),
            "indexes": [{"name": "by_title", "fields": ["title"]}],
        },
        {
            "name": "comment",
            "fields": {"note": {"type": "master_detail", "reference": "note"}},
        },
    )

    v2 = await open_engine(registry(*v2_objects), migrate=False)
    plan = await v2.migrate()

    assert sorted(str(s) for s in plan.steps if s.action != "create_index") == [
        "add_column note.body: new field (TEXT)",
        "add_column note.pinned: new field (BOOLEAN)",
        "create_table comment: new object with 8 columns",
        "register_object comment: recorded as managed by ObjectOS",
    ]
    assert {"ix_note_pinned", "ix_note_by_title"} <= await index_names(database, "note")
    assert await v2.find_one("note", kept["id"], actor=ALICE) == {
        **kept,
        "body": None,
        "pinned": None,
    }
    comment = await v2.insert("comment", {"note": kept["id"]}, actor=ALICE)
    assert comment["note"] == kept["id"]


async def test_widening_a_type_alters_the_column_in_place(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    v1 = await open_engine(registry(note(price={"type": "currency", "precision": 10})))
    kept = await v1.insert("note", {"title": "A" * 300, "price": 12345678.9}, actor=ALICE)

    v2 = await open_engine(
        registry(note(price={"type": "currency", "precision": 14})),
        migrate=False,
    )
    plan = await v2.migrate()

    if database.dialect.name == "postgresql":
        assert [str(s) for s in plan.steps] == [
            "alter_column note.price: NUMERIC(10, 2) -> NUMERIC(14, 2) (widening)"
        ]
    else:  # SQLite keeps decimals in a DOUBLE column whatever their precision
        assert not plan
    assert (await v2.find_one("note", kept["id"], actor=ALICE))["price"] == 12345678.9
    await v2.update("note", kept["id"], {"price": 123456789012.5}, actor=ALICE)
    assert (await v2.find_one("note", kept["id"], actor=ALICE))["price"] == 123456789012.5


async def test_text_to_textarea_keeps_values(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    v1 = await open_engine(registry(note()))
    kept = await v1.insert("note", {"title": "Short title"}, actor=ALICE)

    v2 = await open_engine(
        registry({"name": "note", "fields": {"title": {"type": "textarea"}}}), migrate=False
    )
    plan = await v2.migrate()

    assert [s.action for s in plan.steps] == ["alter_column"]
    assert (await columns_of(database, "note"))["title"] == "TEXT"
    assert (await v2.find_one("note", kept["id"], actor=ALICE))["title"] == "Short title"


async def test_changes_that_lose_data_are_refused_and_nothing_is_applied(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    v1 = await open_engine(registry(note(score={"type": "number"})))
    kept = await v1.insert("note", {"title": "Hello", "score": 7}, actor=ALICE)
    before = await columns_of(database, "note")

    # v2 drops `score`, turns `title` into a number and adds `body`.
    v2 = await open_engine(
        registry(
            {"name": "note", "fields": {"title": {"type": "number"}, "body": {"type": "text"}}}
        ),
        migrate=False,
    )
    with pytest.raises(ConfigError) as info:
        await v2.migrate()

    assert sorted(e.field for e in info.value.field_errors) == ["note.score", "note.title"]
    assert all(e.code == "data_loss" for e in info.value.field_errors)
    assert "nothing applied" in info.value.message
    assert await columns_of(database, "note") == before  # `body` was not added either
    assert (await v1.find_one("note", kept["id"], actor=ALICE))["score"] == 7


async def test_a_dry_run_reports_refusals_without_raising(open_engine: OpenEngine) -> None:
    v1 = await open_engine(registry(note(score={"type": "number"})))
    await v1.insert("note", {"title": "Hello", "score": 7}, actor=ALICE)

    v2 = await open_engine(registry(note()), migrate=False)
    plan = await v2.migrate(dry_run=True)

    assert not plan.applied
    assert [str(r) for r in plan.refusals] == [
        "note.score: field removed from metadata but 1 record(s) hold a value; dropping it "
        "loses them"
    ]
    assert "REFUSED note.score" in plan.describe()


async def test_empty_fields_and_objects_can_be_removed(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    v1 = await open_engine(
        registry(note(score={"type": "number"}), {"name": "draft", "fields": {}})
    )
    await v1.insert("note", {"title": "No score"}, actor=ALICE)

    v2 = await open_engine(registry(note()), migrate=False)
    plan = await v2.migrate()

    assert sorted(str(s) for s in plan.steps) == [
        "drop_column note.score: field removed (column is empty)",
        "drop_table draft: object removed from metadata (table empty)",
    ]
    assert "score" not in await columns_of(database, "note")


async def test_a_removed_object_with_records_is_refused(open_engine: OpenEngine) -> None:
    v1 = await open_engine(registry(note(), {"name": "draft", "fields": {"x": {"type": "text"}}}))
    await v1.insert("draft", {"x": "keep"}, actor=ALICE)

    v2 = await open_engine(registry(note()), migrate=False)
    with pytest.raises(ConfigError) as info:
        await v2.migrate()

    assert [e.field for e in info.value.field_errors] == ["draft"]


async def test_a_type_change_of_an_empty_column_replaces_it(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    v1 = await open_engine(registry(note(due={"type": "text"})))
    kept = await v1.insert("note", {"title": "x"}, actor=ALICE)

    v2 = await open_engine(registry(note(due={"type": "date"})), migrate=False)
    plan = await v2.migrate()

    assert [s.action for s in plan.steps] == ["replace_column"]
    assert (await v2.update("note", kept["id"], {"due": "2026-01-31"}, actor=ALICE))["due"] == (
        "2026-01-31"
    )


async def test_a_unique_index_over_duplicates_is_refused(open_engine: OpenEngine) -> None:
    v1 = await open_engine(registry(note()))
    for _ in range(2):
        await v1.insert("note", {"title": "Same"}, actor=ALICE)

    v2 = await open_engine(registry(note(title={"type": "text", "unique": True})), migrate=False)
    with pytest.raises(ConfigError) as info:
        await v2.migrate()

    assert "occur more than once" in info.value.field_errors[0].message


async def test_tables_of_other_components_are_never_touched(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    async with database.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE auth_user (id VARCHAR PRIMARY KEY)"))
        await conn.execute(sa.text("INSERT INTO auth_user (id) VALUES ('u1')"))

    data = await open_engine(registry(note()))

    assert not await data.migrate()
    async with database.connect() as conn:
        assert (await conn.execute(sa.text("SELECT id FROM auth_user"))).scalars().all() == ["u1"]


async def test_rebuilding_a_referenced_table_keeps_its_rows_and_references(
    open_engine: OpenEngine, database: AsyncEngine
) -> None:
    account = {"name": "account", "fields": {"name": {"type": "text"}}}
    contact = {
        "name": "contact",
        "fields": {"account": {"type": "lookup", "reference": "account"}},
    }
    v1 = await open_engine(registry(account, contact))
    acme = await v1.insert("account", {"name": "Acme"}, actor=ALICE)
    doe = await v1.insert("contact", {"account": acme["id"]}, actor=ALICE)

    # A new reference column makes SQLite rebuild `account`, which `contact` references.
    account_v2 = {**account, "fields": {**account["fields"], "parent": {"type": "tree"}}}
    v2 = await open_engine(registry(account_v2, contact), migrate=False)
    await v2.migrate()

    assert (await v2.find_one("contact", doe["id"], actor=ALICE))["account"] == acme["id"]
    child = await v2.insert("account", {"name": "Acme EU", "parent": acme["id"]}, actor=ALICE)
    assert child["parent"] == acme["id"]
    with pytest.raises(sa.exc.IntegrityError):  # the database still enforces the reference
        async with database.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO contact (id, created_at, updated_at, version, account) "
                    "VALUES ('c2', '2026-01-01', '2026-01-01', 1, 'ghost')"
                )
            )


async def test_the_engine_follows_a_registry_reload(open_engine: OpenEngine, tmp_path: Any) -> None:
    folder = tmp_path / "metadata"
    folder.mkdir()
    path = folder / "note.object.yml"
    path.write_text("name: note\nfields:\n  title: {type: text}\n")
    loaded = MetadataRegistry.load([folder])
    data: DataEngine = await open_engine(loaded)
    path.write_text("name: note\nfields:\n  title: {type: text}\n  body: {type: textarea}\n")

    changes = loaded.reload()
    await data.migrate()

    assert changes.changed == [("object", "note")]
    note_record = await data.insert("note", {"title": "t", "body": "b"}, actor=ALICE)
    assert note_record["body"] == "b"
