"""The data core plugin without Ray: it migrates once and offers the ``data`` service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from objectos.data import Actor, DataEngine, create_engine
from objectos.errors import ConfigError, ManifestError, RecordNotFound
from objectos.metadata import MetadataRegistry
from objectos.plugins.data import DataPlugin, metadata_fingerprint
from objectos.testing import LocalServiceDirectory, load_plugin

from .conftest import CRM


@pytest.fixture
async def plugin(tmp_path: Path) -> AsyncIterator[DataPlugin]:
    settings = {
        "databaseUrl": "sqlite+aiosqlite:///{dataDir}/hub.db",
        "dataDir": str(tmp_path),
        "metadataDirs": [str(CRM)],
    }
    loaded = await load_plugin(DataPlugin, {}, LocalServiceDirectory(), settings=settings)
    yield loaded
    await loaded.on_disable()


async def test_it_migrates_the_hub_database_and_reports_the_metadata(
    plugin: DataPlugin, tmp_path: Path
) -> None:
    health = await plugin.health()

    assert health["ready"] is True and health["objects"] == 6
    assert health["schema"]["steps"] > 0
    assert health["metadataVersion"] == metadata_fingerprint(MetadataRegistry.load([CRM]))
    # A replica's engine on the same file finds the tables ready (it never migrates).
    replica = DataEngine(
        create_engine(f"sqlite+aiosqlite:///{tmp_path}/hub.db"), MetadataRegistry.load([CRM])
    )
    assert not await replica.migrate(dry_run=True)
    account = await replica.insert("account", {"name": "Acme"}, actor=Actor.user("u"))
    assert account["version"] == 1


async def test_other_plugins_crud_through_the_service_as_a_system_actor(
    plugin: DataPlugin,
) -> None:
    data = plugin.context.services.for_caller("com.example.crm").get("data")

    account = await data.insert("account", {"name": "Acme", "owner": "boss"})
    assert account["created_by"] == "plugin:com.example.crm"
    assert account["owner"] == "boss"  # system actors may set owner
    found = await data.find("account", {"where": {"name": "Acme"}})
    assert [r["id"] for r in found["records"]] == [account["id"]]
    assert await data.count("account", {"name": "Acme"}) == 1
    changed = await data.update("account", account["id"], {"employees": 5}, 1)
    assert changed["version"] == 2
    results = await data.batch("account", [{"operation": "create", "data": {"name": "B"}}])
    assert results[0]["status"] == "applied"
    await data.delete("account", account["id"])
    with pytest.raises(RecordNotFound):
        await data.get("account", account["id"])
    assert "account" in await data.objects()


async def test_missing_settings_and_broken_metadata_fail_the_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        await load_plugin(DataPlugin, {}, settings={"metadataDirs": [str(CRM)]})
    with pytest.raises(ConfigError):
        await load_plugin(DataPlugin, {}, settings={"databaseUrl": "sqlite+aiosqlite://"})
    with pytest.raises(ManifestError):
        await load_plugin(
            DataPlugin,
            {"url": f"sqlite+aiosqlite:///{tmp_path}/x.db", "metadata": [str(tmp_path / "no")]},
        )
