"""The change log: one row per committed change, in order, never for a failed write."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from objectos.data import DataEngine
from objectos.errors import DuplicateValue, PermissionDenied

from .conftest import OpenEngine
from .doubles import ALICE, RecordingHooks


async def test_each_write_is_logged_with_actor_version_and_snapshot(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=ALICE)
    await data.delete("account", account["id"], actor=ALICE)

    page = await data.change_log.since(0)

    assert [(c.seq, c.operation, c.version) for c in page.changes] == [
        (1, "create", 1),
        (2, "update", 2),
        (3, "delete", 2),
    ]
    update = page.changes[1]
    assert update.changed_fields == ["phone"]
    assert update.actor == "alice"
    assert update.record is not None and update.record["phone"] == "+1 555 0100"
    assert page.cursor == 3 and not page.has_more
    assert update.to_dict()["recordId"] == account["id"]


async def test_a_failed_write_leaves_no_log_row(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)

    with pytest.raises(DuplicateValue):
        await data.insert("account", {"name": "Acme"}, actor=ALICE)

    assert len((await data.change_log.since(0)).changes) == 1
    assert await data.change_log.latest() == 1


async def test_a_write_vetoed_by_a_hook_leaves_no_log_row(open_engine: OpenEngine) -> None:
    hooks = RecordingHooks()

    def refuse(payload: dict) -> dict:
        raise PermissionDenied("accounts are frozen")

    hooks.before["data.beforeInsert.account"] = refuse
    data = await open_engine(hooks=hooks)

    with pytest.raises(PermissionDenied):
        await data.insert("account", {"name": "Acme"}, actor=ALICE)

    assert (await data.change_log.since(0)).changes == []


async def test_since_pages_and_filters_by_object(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    for name in ("Ada", "Bob", "Cy"):
        await data.insert("contact", {"last_name": name, "account": account["id"]}, actor=ALICE)

    first = await data.change_log.since(0, objects=["contact"], limit=2)
    second = await data.change_log.since(first.cursor, objects=["contact"], limit=2)

    assert [c.record and c.record["last_name"] for c in first.changes] == ["Ada", "Bob"]
    assert first.has_more
    assert [c.record and c.record["last_name"] for c in second.changes] == ["Cy"]
    assert not second.has_more and second.cursor == 4
    assert (await data.change_log.since(second.cursor)).changes == []


async def test_versions_are_gapless_under_concurrent_writers(data: DataEngine) -> None:
    await asyncio.gather(
        *(data.insert("account", {"name": f"Account {i}"}, actor=ALICE) for i in range(15))
    )

    seqs = [c.seq for c in (await data.change_log.since(0, limit=100)).changes]
    assert seqs == list(range(1, 16))


async def test_prune_drops_old_entries(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)

    removed = await data.change_log.prune(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))

    assert removed == 1
    assert (await data.change_log.since(0)).changes == []
    assert await data.change_log.latest() == 1  # versions never go back
