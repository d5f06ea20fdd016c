"""The role directory fed from the identity store, on SQLite and PostgreSQL.

Two "replicas" are two :class:`IdentityService` s with their own connection
pools on one database: one changes roles, the other's directory must follow
(on its own refresh tick), and the replica that made the change must see it
at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import sqlalchemy as sa

from objectos.data import Actor
from objectos.metadata import MetadataRegistry
from objectos.security import start_permission_engine
from objectos.security.directory import StoreRoleDirectory
from objectos.security.identity import AuthEvent, UserRecord
from objectos.security.store import USER_CHANGES_TABLE, AuthDatabase, SQLUserStore

from .conftest import START, EngineFactory, MakeHub

CRM = Path(__file__).resolve().parents[3] / "configs" / "metadata"


def user(user_id: str, *roles: str, email: str | None = None) -> UserRecord:
    return UserRecord(
        id=user_id,
        email=email or f"{user_id}@example.test",
        name=user_id,
        roles=roles,
        created_at=START,
        updated_at=START,
    )


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_marker_moves_on_new_accounts_and_role_changes_only(
    auth_db: AuthDatabase,
) -> None:
    store = auth_db.users
    before = await store.role_marker()
    await store.add(user("u1", "east_rep"))
    added = await store.role_marker()
    assert added != before
    await store.update("u1", at=START + 1, name="Renamed")
    assert await store.role_marker() == added  # a name is not a membership
    await store.update("u1", at=START + 2, roles=["west_rep"])
    assert await store.role_marker() != added
    unchanged = await store.role_marker()
    assert await store.update("ghost", at=START + 3, roles=["ceo"]) is None
    assert await store.role_marker() == unchanged  # no such account, nothing changed
    assert await store.role_memberships() == {"u1": ("west_rep",)}


async def test_a_database_from_before_the_marker_gets_it(new_engine: EngineFactory) -> None:
    old = AuthDatabase(new_engine())
    await old.users.add(user("u1", "ceo"))
    async with old.engine.begin() as conn:
        await conn.execute(sa.text(f"DROP TABLE {USER_CHANGES_TABLE}"))
    upgraded = AuthDatabase(new_engine())  # the next start of a replica
    marker = await upgraded.users.role_marker()
    await upgraded.users.update("u1", at=START + 1, roles=["vp_sales"])
    assert await upgraded.users.role_marker() != marker
    assert await upgraded.users.role_memberships() == {"u1": ("vp_sales",)}


async def test_start_loads_memberships_and_indexes_roles(auth_db: AuthDatabase) -> None:
    await auth_db.users.add(user("erin", "east_manager"))
    await auth_db.users.add(user("eve", "east_rep"))
    await auth_db.users.add(user("ed", "east_rep", "support_agent"))
    await auth_db.users.add(user("nobody"))
    directory = StoreRoleDirectory(auth_db.users, refresh_interval_s=60)
    assert directory.version == 0 and directory.users_with_role("east_rep") == frozenset()
    await directory.start()
    try:
        assert directory.started
        assert directory.version == 1
        assert directory.users_with_role("east_rep") == {"eve", "ed"}
        assert directory.users_with_role("support_agent") == {"ed"}
        assert directory.users_with_role("ceo") == frozenset()
        assert directory.roles_of("ed") == {"east_rep", "support_agent"}
        assert directory.roles_of("nobody") == frozenset()
    finally:
        await directory.aclose()
    assert not directory.started


async def test_refresh_reloads_only_when_the_marker_moved(auth_db: AuthDatabase) -> None:
    await auth_db.users.add(user("eve", "east_rep"))
    directory = StoreRoleDirectory(auth_db.users, refresh_interval_s=60)
    await directory.refresh()
    loads, version = directory.loads, directory.version
    assert await directory.refresh() is False
    assert (directory.loads, directory.version) == (loads, version)  # one marker read only

    await auth_db.users.update("eve", at=START + 1, roles=["west_rep"])
    assert await directory.refresh() is True
    assert directory.version == version + 1
    assert directory.users_with_role("west_rep") == {"eve"}
    assert directory.users_with_role("east_rep") == frozenset()

    # A forced reload that finds the same memberships keeps the version (and the
    # permission engine's caches).
    assert await directory.refresh(force=True) is False
    assert directory.version == version + 1


async def test_removing_every_role_removes_the_user(auth_db: AuthDatabase) -> None:
    await auth_db.users.add(user("eve", "east_rep"))
    await auth_db.users.add(user("ed", "east_rep"))
    directory = StoreRoleDirectory(auth_db.users)
    await directory.refresh()
    version = directory.version
    await auth_db.users.update("eve", at=START + 1, roles=[])
    assert await directory.refresh() is True
    assert directory.version > version
    assert directory.users_with_role("east_rep") == {"ed"}
    assert directory.roles_of("eve") == frozenset()


async def test_another_replicas_change_shows_on_the_next_tick(make_hub: MakeHub) -> None:
    writer = await make_hub(own_engine=True)
    reader = await make_hub(own_engine=True)
    eve = await writer.identity.create_user("eve@example.test", None, "Eve", ["east_rep"])
    store = reader.identity.users
    assert isinstance(store, SQLUserStore)
    directory = StoreRoleDirectory(store, refresh_interval_s=0.05)
    await directory.start()
    try:
        assert directory.users_with_role("east_rep") == {eve.id}
        await writer.identity.set_roles(eve.id, ["west_rep"])
        await eventually(lambda: directory.users_with_role("west_rep") == {eve.id})
        assert directory.users_with_role("east_rep") == frozenset()
    finally:
        await directory.aclose()


async def test_a_change_made_by_this_process_counts_before_the_call_returns(
    make_hub: MakeHub,
) -> None:
    directories: list[StoreRoleDirectory] = []

    async def forward(event: AuthEvent) -> None:
        for directory in directories:
            await directory.on_auth_event(event)

    hub = await make_hub(on_event=forward)
    store = hub.identity.users
    assert isinstance(store, SQLUserStore)
    directory = StoreRoleDirectory(store, refresh_interval_s=3600)  # no tick will come
    directories.append(directory)
    await directory.start()
    try:
        eve = await hub.identity.create_user("eve@example.test", None, "Eve", ["east_rep"])
        assert directory.users_with_role("east_rep") == {eve.id}
        await hub.identity.set_roles(eve.id, ["west_rep"])
        assert directory.users_with_role("west_rep") == {eve.id}
        assert directory.users_with_role("east_rep") == frozenset()
    finally:
        await directory.aclose()


class Outage:
    """The real user store behind a switch that makes every read fail, like a lost database."""

    def __init__(self, store: SQLUserStore) -> None:
        self.store = store
        self.down = False

    async def role_marker(self) -> int:
        if self.down:
            raise ConnectionError("database unreachable")
        return await self.store.role_marker()

    async def role_memberships(self) -> Mapping[str, tuple[str, ...]]:
        if self.down:
            raise ConnectionError("database unreachable")
        return await self.store.role_memberships()


async def test_a_failing_store_keeps_the_last_copy_and_is_retried(auth_db: AuthDatabase) -> None:
    await auth_db.users.add(user("eve", "east_rep"))
    source = Outage(auth_db.users)
    directory = StoreRoleDirectory(source, refresh_interval_s=0.02)
    await directory.start()
    try:
        source.down = True
        await eventually(lambda: directory.failures >= 2)
        assert directory.started  # the task survived
        assert directory.users_with_role("east_rep") == {"eve"}
        await auth_db.users.update("eve", at=START + 1, roles=["west_rep"])
        source.down = False
        await eventually(lambda: directory.users_with_role("west_rep") == {"eve"})
    finally:
        await directory.aclose()


async def test_start_fails_when_the_store_cannot_be_read(auth_db: AuthDatabase) -> None:
    source = Outage(auth_db.users)
    source.down = True
    directory = StoreRoleDirectory(source)
    with pytest.raises(ConnectionError):
        await directory.start()
    assert not directory.started


async def test_the_shared_engine_follows_the_hierarchy_of_the_store(
    auth_db: AuthDatabase,
) -> None:
    """start_permission_engine: the engine other processes build, on the same store."""
    await auth_db.users.add(user("erin", "east_manager"))
    await auth_db.users.add(user("eve", "east_rep"))
    registry = MetadataRegistry.load([str(CRM)])
    permissions = await start_permission_engine(registry, auth_db, refresh_interval_s=3600)
    try:
        erin = Actor.user("erin", ["east_manager"])
        hierarchy = [
            g
            for g in permissions.engine.grants(erin, "opportunity", "read")
            if g.kind == "hierarchy"
        ]
        assert [g.filter for g in hierarchy] == [{"owner": {"$in": ["eve"]}}]

        await auth_db.users.update("eve", at=START + 1, roles=["west_rep"])
        await permissions.directory.refresh()
        kinds = {g.kind for g in permissions.engine.grants(erin, "opportunity", "read")}
        assert "hierarchy" not in kinds
    finally:
        await permissions.aclose()
    assert not permissions.directory.started


async def test_the_shared_engine_opens_and_closes_its_own_database(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///{dataDir}/hub.db"
    registry = MetadataRegistry.load([str(CRM)])
    permissions = await start_permission_engine(registry, url, data_dir=str(tmp_path))
    try:
        assert (tmp_path / "hub.db").exists()
        assert permissions.directory.started and permissions.directory.version == 0
    finally:
        await permissions.aclose()
