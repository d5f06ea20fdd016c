"""The audit plugin, loaded as the hub loads it (without Ray), on a SQLite hub database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from objectos.audit.export import CSV_COLUMNS
from objectos.data import DataEngine, create_engine
from objectos.errors import ConfigError, ValidationError
from objectos.metadata import MetadataRegistry
from objectos.plugins.audit import AuditPlugin, audit_reads_of
from objectos.protocol.manifest import HubManifest
from objectos.testing import LocalServiceDirectory, load_plugin

from .conftest import ALICE, METADATA, eventually

FAST = {"pollIntervalMs": 20, "flushIntervalMs": 20, "batchSize": 10}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
async def hub_data(url: str) -> AsyncIterator[DataEngine]:
    """The data plugin's part: the CRM migrated into the hub database."""
    database = create_engine(url)
    data = DataEngine(database, MetadataRegistry.load([METADATA]))
    await data.migrate()
    yield data
    await database.dispose()


@pytest.fixture
async def services(url: str, hub_data: DataEngine) -> AsyncIterator[LocalServiceDirectory]:
    directory = LocalServiceDirectory()
    plugin = await load_plugin(AuditPlugin, FAST, directory, settings={"databaseUrl": url})
    yield directory
    await plugin.on_disable()


async def test_writes_appear_in_the_audit_service_with_old_and_new_values(
    hub_data: DataEngine, services: LocalServiceDirectory
) -> None:
    audit = services.for_caller("com.example.tests").get("audit")
    account = await hub_data.insert("account", {"name": "Acme"}, actor=ALICE)
    await hub_data.update("account", account["id"], {"name": "Acme Inc"}, actor=ALICE)

    async def trail() -> list[dict]:
        result = await audit.trail("account", account["id"], {"order": "asc"})
        return result["events"] if len(result["events"]) == 2 else []

    created, updated = await eventually(trail)
    assert created["action"] == "record.created"
    assert updated["changes"] == [{"field": "name", "old": "Acme", "new": "Acme Inc"}]
    assert (updated["actor"], updated["ip"], updated["requestId"]) == (
        "alice",
        "203.0.113.7",
        "req-1",
    )
    status = await audit.status()
    assert status["projection"]["lag"] == 0 and status["projection"]["running"]


async def test_other_plugins_record_events_and_cannot_forge_who_did(
    services: LocalServiceDirectory,
) -> None:
    audit = services.for_caller("com.example.reports").get("audit")

    answer = await audit.record_event(
        {"action": "report.exported", "actor": "ann", "details": {"report": "pipeline"}}
    )

    [event] = (await audit.search({"action": "report.*"}))["events"]
    assert event["id"] == answer["id"]
    assert event["details"] == {"report": "pipeline", "recordedBy": "com.example.reports"}
    with pytest.raises(ValidationError) as caught:
        await audit.record_event({"action": "record.deleted", "actor": "ann"})
    assert caught.value.field_errors[0].field == "action"


async def test_an_export_comes_in_chunks_through_the_service(
    hub_data: DataEngine, services: LocalServiceDirectory
) -> None:
    audit = services.get("audit")
    for name in ("Acme", "Globex", "Initech"):
        await hub_data.insert("account", {"name": name}, actor=ALICE)

    async def all_projected() -> bool:
        return len((await audit.search({}))["events"]) == 3

    await eventually(all_projected)

    first = await audit.export_chunk("csv", {"order": "asc"}, 2)
    second = await audit.export_chunk("csv", {"order": "asc", "cursor": first["cursor"]}, 2)

    assert first["data"].startswith(",".join(CSV_COLUMNS))
    assert not first["done"] and second["done"]
    assert (first["data"] + second["data"]).count("record.created") == 3


async def test_prune_applies_the_retention_now(services: LocalServiceDirectory) -> None:
    audit = services.get("audit")
    await audit.record_event({"action": "auth.signed_in", "at": "2000-01-01T00:00:00Z"})
    await audit.record_event({"action": "auth.signed_in"})

    assert await audit.prune() == {"removed": 1}
    assert len((await audit.search({}))["events"]) == 1


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"pruneSchedule": "nightly"}, "pruneSchedule"),
        ({"batchSize": 0}, "batchSize"),
        ({"pollIntervalMs": 1}, "pollIntervalMs"),
        ({"retentionDays": -5}, "retentionDays"),
        ({"auditReads": ["account", 7]}, "auditReads"),
    ],
)
async def test_bad_configuration_fails_the_load_naming_the_key(
    url: str, hub_data: DataEngine, config: dict, field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        await load_plugin(AuditPlugin, config, settings={"databaseUrl": url})

    assert caught.value.details["field"] == field


async def test_disable_stops_everything_it_started(url: str, hub_data: DataEngine) -> None:
    plugin = await load_plugin(AuditPlugin, FAST, settings={"databaseUrl": url})
    assert (await plugin.health())["ready"]

    await plugin.on_disable()

    assert (await plugin.health()) == {"ready": False, "reason": "not loaded"}


def test_replicas_learn_the_audited_reads_from_the_hub_manifest() -> None:
    hub = HubManifest.model_validate(
        {
            "id": "com.test.hub",
            "plugins": {
                "com.objectos.audit": {
                    "module": "objectos.plugins.audit:AuditPlugin",
                    "config": {"auditReads": ["opportunity"]},
                }
            },
        }
    )

    assert audit_reads_of(hub.plugins) == {"opportunity"}
    assert audit_reads_of({}) == frozenset()
