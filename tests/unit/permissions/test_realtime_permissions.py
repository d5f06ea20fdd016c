"""The realtime permission adapter answers in memory what REST answers with SQL.

Every user of the sample CRM, every object, read and edit: the records the
in-memory check lets through (evaluated on the change log's records, which is
what subscription rooms see) are exactly those the engine's SQL record
condition selects -- except for ``controlled_by_parent`` details whose master
record is not in memory, where the adapter may only refuse more, never less.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from objectos.data import Actor
from objectos.errors import FieldNotAccessible, InvalidField, PermissionDenied, RecordNotFound
from objectos.realtime.permissions import (
    HubRecordPermissions,
    RecordPermissions,
    record_field_access,
)
from objectos.security.permissions import Action

from .conftest import METADATA, RECORDS, SEED, USERS, Hub

PARENT_CONTROLLED = {"opportunity_line_item"}


async def change_log_records(crm: Hub) -> dict[str, dict[str, dict[str, Any]]]:
    """object -> id -> the record as the change log holds it (last write wins)."""
    page = await crm.data.change_log.since(0, None, 10_000)
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in page.changes:
        assert entry.record is not None
        found.setdefault(entry.object, {})[entry.record_id] = entry.record
    return found


async def sql_ids(crm: Hub, actor: Actor, object_name: str, action: Action) -> set[str]:
    table = crm.data.table(object_name)
    condition = crm.permissions.record_condition(actor, object_name, action, table)
    query = sa.select(table.c.id)
    if condition is not None:
        query = query.where(condition)
    async with crm.database.connect() as conn:
        return {row[0] for row in await conn.execute(query)}


@pytest.mark.parametrize("action", ["read", "edit"])
async def test_in_memory_checks_match_the_sql_record_conditions(crm: Hub, action: Action) -> None:
    permissions = RecordPermissions(crm.permissions)
    records = await change_log_records(crm)
    compared = 0
    for user in USERS:
        actor = crm.as_(user)
        for object_name in RECORDS:
            expected = await sql_ids(crm, actor, object_name, action)
            allowed = {
                record_id
                for record_id, record in records[object_name].items()
                if permissions.allows(actor, object_name, action, record)
            }
            if object_name in PARENT_CONTROLLED:
                assert allowed <= expected, (user, object_name)
            else:
                assert allowed == expected, (user, object_name, action)
            compared += len(records[object_name])
    assert compared == len(USERS) * sum(len(r) for r in RECORDS.values())


async def test_reps_see_their_own_deals_and_no_revenue(crm: Hub) -> None:
    permissions = RecordPermissions(crm.permissions)
    records = await change_log_records(crm)
    eve, wes, carol = crm.as_("eve"), crm.as_("wes"), crm.as_("carol")
    deal = records["opportunity"]["o1"]  # eve's
    assert permissions.can_read(eve, "opportunity", deal)
    assert not permissions.can_read(wes, "opportunity", deal)
    assert permissions.can_read(carol, "opportunity", deal)
    assert "annual_revenue" not in permissions.readable_fields(eve, "account")
    assert "annual_revenue" in permissions.readable_fields(crm.as_("erin"), "account")
    # Nobody holds no permission set: nothing at all, and no error.
    assert not permissions.can_read(crm.as_("nobody"), "account", records["account"]["acme"])


async def test_record_field_access_reads_the_record_and_narrows(crm: Hub) -> None:
    permissions = RecordPermissions(crm.permissions)

    async def read(object_name: str, record_id: str) -> dict[str, Any] | None:
        try:
            return await crm.stored(object_name, record_id)
        except RecordNotFound:
            return None

    async def access(user: str, object_name: str, record_id: str, field: str) -> Any:
        return await record_field_access(
            permissions, read, crm.as_(user), object_name, record_id, field
        )

    # Accounts are public_read: a rep reads others' accounts but edits only their own.
    assert (await access("eve", "account", "acme", "description")).write
    globex = await access("eve", "account", "globex", "description")
    assert globex.read and not globex.write
    with pytest.raises(RecordNotFound):  # a private deal of someone else
        await access("wes", "opportunity", "o1", "description")
    with pytest.raises(RecordNotFound):
        await access("eve", "opportunity", "nope", "description")
    with pytest.raises(FieldNotAccessible):
        await access("eve", "account", "acme", "annual_revenue")
    with pytest.raises(PermissionDenied):
        await access("nobody", "account", "acme", "description")
    with pytest.raises(InvalidField):
        await access("eve", "account", "acme", "no_such_field")
    # The auditor reads every deal, edits none.
    audit = await access("ann", "opportunity", "o1", "description")
    assert audit.read and not audit.write


def test_hub_permissions_pickle_as_configuration(tmp_path: Path) -> None:
    hub = HubRecordPermissions([str(METADATA)])
    assert "annual_revenue" not in hub.readable_fields(Actor.user("x", ["east_rep"]), "account")
    copy = pickle.loads(pickle.dumps(hub))
    assert copy._permissions is None and copy.metadata_dirs == hub.metadata_dirs
    record = {"id": "a", "owner": "x", "name": "A"}
    assert copy.can_read(Actor.user("x", ["east_rep"]), "opportunity", record)
    assert not copy.can_read(Actor.user("y", ["west_rep"]), "opportunity", record)
    assert copy.can_read(SEED, "opportunity", record)
