"""The storage plugin: engines agree on what they store, and no plugin reaches another's keys."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from objectos.errors import ConfigError, ServiceUnavailable, ValidationError
from objectos.plugins.storage import (
    MAX_KEY_LENGTH,
    MAX_VALUE_BYTES,
    MAX_VALUE_DEPTH,
    MemoryStorageEngine,
    ServiceBackedStorage,
    SQLStorageEngine,
    StorageEngine,
    StoragePlugin,
    StorageService,
)
from objectos.testing import LocalServiceDirectory, load_plugin

JSON_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**70),
    3.25,
    "",
    "héllo wörld ✓ 日本 🎉",
    "nul \x00 inside a value is fine",
    [],
    [1, "two", None, [3.5, {"four": 4}]],
    {},
    {"nested": {"list": [1, 2], "flag": False}, "üñí": "ok"},
]


# --------------------------------------------------------------------------- engines


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
async def test_every_json_value_round_trips(engine: StorageEngine, ids, value: Any) -> None:
    await engine.set(ids.a, "k", value)
    assert await engine.get(ids.a, "k", default="missing") == value


async def test_a_stored_null_is_not_a_missing_key(engine: StorageEngine, ids) -> None:
    await engine.set(ids.a, "nothing", None)
    assert await engine.get(ids.a, "nothing", default="missing") is None
    assert await engine.get(ids.a, "absent", default="missing") == "missing"
    assert await engine.keys(ids.a) == ["nothing"]


async def test_set_overwrites_and_delete_says_whether_the_key_existed(
    engine: StorageEngine, ids
) -> None:
    await engine.set(ids.a, "k", 1)
    await engine.set(ids.a, "k", {"v": 2})
    assert await engine.get(ids.a, "k") == {"v": 2}
    assert await engine.delete(ids.a, "k") is True
    assert await engine.delete(ids.a, "k") is False
    assert await engine.get(ids.a, "k", 0) == 0


async def test_key_prefixes_are_literal_and_case_sensitive(engine: StorageEngine, ids) -> None:
    for key in ["a%", "a_b", "ab", "A1", "b", "añ", "a"]:
        await engine.set(ids.a, key, 1)
    assert await engine.keys(ids.a) == ["A1", "a", "a%", "a_b", "ab", "añ", "b"]
    assert await engine.keys(ids.a, "a") == ["a", "a%", "a_b", "ab", "añ"]
    assert await engine.keys(ids.a, "a%") == ["a%"]  # not a LIKE wildcard
    assert await engine.keys(ids.a, "a_") == ["a_b"]
    assert await engine.keys(ids.a, "añ") == ["añ"]
    assert await engine.keys(ids.a, "zzz") == []


async def test_scopes_do_not_share_keys(engine: StorageEngine, ids) -> None:
    await engine.set(ids.a, "shared-name", "a's")
    await engine.set(ids.b, "shared-name", "b's")
    assert await engine.get(ids.a, "shared-name") == "a's"
    assert await engine.get(ids.b, "shared-name") == "b's"
    assert await engine.delete(ids.a, "shared-name") is True
    assert await engine.get(ids.b, "shared-name") == "b's"


async def test_values_are_copies_not_shared_objects(engine: StorageEngine, ids) -> None:
    original = {"items": [1, 2]}
    await engine.set(ids.a, "k", original)
    original["items"].append(3)
    fetched = await engine.get(ids.a, "k")
    fetched["items"].append(4)
    assert await engine.get(ids.a, "k") == {"items": [1, 2]}


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _circular() -> Any:
    value: list[Any] = []
    value.append(value)
    return value


NOT_JSON: dict[str, Any] = {
    "tuple": (1, 2),
    "set": {1, 2},
    "bytes": b"raw",
    "nan": math.nan,
    "infinity": math.inf,
    "decimal": Decimal("1.5"),
    "datetime": datetime(2026, 1, 1),
    "object": object(),
    "int dict key": {1: "one"},
    "tuple inside dict": {"ok": [1, {"bad": (2,)}]},
    "lone surrogate": "\ud800",
    "too deep": _nested(MAX_VALUE_DEPTH + 5),
    "circular": _circular(),
    "too large": "x" * MAX_VALUE_BYTES,
}


@pytest.mark.parametrize("value", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_non_json_values_are_refused_and_change_nothing(
    engine: StorageEngine, ids, value: Any
) -> None:
    await engine.set(ids.a, "k", "before")
    with pytest.raises(ValidationError) as raised:
        await engine.set(ids.a, "k", value)
    assert raised.value.code == "validation_error"
    assert await engine.get(ids.a, "k") == "before"


async def test_deepest_allowed_value_is_stored(engine: StorageEngine, ids) -> None:
    await engine.set(ids.a, "deep", _nested(MAX_VALUE_DEPTH))
    assert await engine.get(ids.a, "deep") == _nested(MAX_VALUE_DEPTH)


BAD_KEYS: dict[str, Any] = {
    "empty": "",
    "too long": "k" * (MAX_KEY_LENGTH + 1),
    "NUL": "a\x00b",
    "not a string": 42,
    "lone surrogate": "\udfff",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
async def test_bad_keys_are_refused_by_every_method(engine: StorageEngine, ids, key: Any) -> None:
    with pytest.raises(ValidationError):
        await engine.set(ids.a, key, 1)
    with pytest.raises(ValidationError):
        await engine.get(ids.a, key)
    with pytest.raises(ValidationError):
        await engine.delete(ids.a, key)
    assert await engine.keys(ids.a) == []


async def test_the_longest_allowed_key_works(engine: StorageEngine, ids) -> None:
    key = "ü" * MAX_KEY_LENGTH  # characters, not bytes
    await engine.set(ids.a, key, 1)
    assert await engine.keys(ids.a) == [key]


async def test_persistent_data_survives_a_new_engine(durable_url: str, ids) -> None:
    async with SQLStorageEngine(durable_url) as first:
        await first.set(ids.a, "config", {"theme": "dark"})
        await first.set(ids.b, "config", {"theme": "light"})
    async with SQLStorageEngine(durable_url) as second:
        assert await second.get(ids.a, "config") == {"theme": "dark"}
        assert await second.get(ids.b, "config") == {"theme": "light"}


async def test_sqlite_file_is_created_in_wal_mode(sqlite_url: str, ids) -> None:
    async with SQLStorageEngine(sqlite_url) as engine:
        await engine.set(ids.a, "k", 1)
        path = engine.url.database
    assert path is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sql_engine_refuses_use_before_start_and_after_close(sqlite_url: str, ids) -> None:
    engine = SQLStorageEngine(sqlite_url)
    with pytest.raises(ServiceUnavailable):
        await engine.get(ids.a, "k")
    await engine.start()
    with pytest.raises(RuntimeError):
        await engine.start()
    await engine.close()
    with pytest.raises(ServiceUnavailable):
        await engine.get(ids.a, "k")


@pytest.mark.parametrize("url", ["mysql+aiomysql://db/objectos", "not a url"])
def test_unsupported_database_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLStorageEngine(url)


# --------------------------------------------------------------------------- the service


@pytest.fixture(params=["memory", "persistent"])
async def services(request: pytest.FixtureRequest, sqlite_url: str):
    """A directory in which the storage plugin runs, in each mode."""
    directory = LocalServiceDirectory()
    config = {"mode": request.param}
    if request.param == "persistent":
        config["url"] = sqlite_url
    plugin = await load_plugin(StoragePlugin, config, directory)
    yield directory
    await plugin.on_disable()


CRAFTED_KEYS = [
    "../beta/secret",
    "../../com.t.beta/secret",
    "beta/secret",
    "secret\n",
    "secret ",
    "SECRET",
    "%",
    "*",
    "sécret",
    "🔑secret",
]


async def test_a_plugin_cannot_read_or_overwrite_anothers_keys(
    services: LocalServiceDirectory, ids
) -> None:
    alpha = ServiceBackedStorage(services.for_caller(ids.a))
    beta = ServiceBackedStorage(services.for_caller(ids.b))
    await beta.set("secret", "beta's")
    await beta.set(f"{ids.a}/secret", "also beta's")

    assert await alpha.get("secret") is None
    assert await alpha.keys() == []
    for key in [*CRAFTED_KEYS, f"{ids.b}/secret", f"../{ids.b}/secret", ids.b]:
        assert await alpha.get(key) is None
        await alpha.set(key, "alpha's")
    with pytest.raises(ValidationError):
        await alpha.set("secret\x00", "alpha's")
    assert await alpha.delete("secret") is False

    assert await beta.get("secret") == "beta's"
    assert await beta.keys() == sorted(["secret", f"{ids.a}/secret"])
    assert len(await alpha.keys()) == len(CRAFTED_KEYS) + 3


async def test_the_caller_cannot_be_chosen_by_plugin_code(
    services: LocalServiceDirectory, ids
) -> None:
    await ServiceBackedStorage(services.for_caller(ids.b)).set("secret", "beta's")
    storage = services.for_caller(ids.a).get("storage")
    with pytest.raises(TypeError):
        await storage.get("secret", caller=ids.b)


async def test_the_service_refuses_calls_without_a_caller() -> None:
    service = StorageService(MemoryStorageEngine())
    with pytest.raises(TypeError):
        await service.get("k")  # type: ignore[call-arg]
    for caller in ("", None):
        with pytest.raises(ValidationError):
            await service.set("k", 1, caller=caller)  # type: ignore[arg-type]


async def test_storage_through_the_service_has_the_scoped_storage_semantics(
    services: LocalServiceDirectory, ids
) -> None:
    storage = ServiceBackedStorage(services.for_caller(ids.a))
    await storage.set("n", None)
    assert await storage.get("n", "default") is None
    assert await storage.get("missing", "default") == "default"
    await storage.set("list", [1, 2])
    assert await storage.keys("l") == ["list"]
    assert await storage.delete("list") is True
    with pytest.raises(ValidationError):
        await storage.set("t", (1, 2))


# --------------------------------------------------------------------------- the plugin


def test_configuration_defaults_to_persistent_and_checks_mode() -> None:
    manifest = StoragePlugin.manifest
    assert manifest.resolve_config({}) == {"mode": "persistent", "url": None}
    with pytest.raises(ValueError, match="mode"):
        manifest.resolve_config({"mode": "cloud"})
    with pytest.raises(ValueError, match="url"):
        manifest.resolve_config({"url": 5432})


async def test_persistent_plugin_keeps_data_across_restarts(sqlite_url: str, ids) -> None:
    config = {"mode": "persistent", "url": sqlite_url}
    first = LocalServiceDirectory()
    plugin = await load_plugin(StoragePlugin, config, first)
    await ServiceBackedStorage(first.for_caller(ids.a)).set("visits", 3)
    await plugin.on_disable()

    second = LocalServiceDirectory()
    plugin = await load_plugin(StoragePlugin, config, second)
    assert await ServiceBackedStorage(second.for_caller(ids.a)).get("visits") == 3
    assert await plugin.health() == {"ready": True, "mode": "persistent"}
    await plugin.on_disable()


async def test_storage_plugin_uses_the_hub_database_setting(tmp_path: Path) -> None:
    url = "sqlite+aiosqlite:///{dataDir}/hub.db"
    plugin = await load_plugin(
        StoragePlugin, settings={"databaseUrl": url, "dataDir": str(tmp_path / "data")}
    )
    await ServiceBackedStorage(plugin.context.services).set("k", 1)
    await plugin.on_disable()
    assert (tmp_path / "data" / "hub.db").exists()


async def test_memory_plugin_forgets_on_restart(ids) -> None:
    first = LocalServiceDirectory()
    plugin = await load_plugin(StoragePlugin, {"mode": "memory"}, first)
    await ServiceBackedStorage(first.for_caller(ids.a)).set("visits", 3)
    await plugin.on_disable()

    second = LocalServiceDirectory()
    await load_plugin(StoragePlugin, {"mode": "memory"}, second)
    assert await ServiceBackedStorage(second.for_caller(ids.a)).get("visits") is None


async def test_disable_closes_the_engine(sqlite_url: str, ids) -> None:
    directory = LocalServiceDirectory()
    plugin = await load_plugin(StoragePlugin, {"url": sqlite_url}, directory)
    storage = ServiceBackedStorage(directory.for_caller(ids.a))
    await storage.set("k", 1)
    await plugin.on_disable()
    with pytest.raises(ServiceUnavailable):
        await storage.get("k")
    assert (await plugin.health())["ready"] is False


@pytest.mark.postgres
async def test_storage_plugin_runs_against_postgres(postgres_rows: str, ids) -> None:
    directory = LocalServiceDirectory()
    plugin = await load_plugin(StoragePlugin, {"url": postgres_rows}, directory)
    alpha = ServiceBackedStorage(directory.for_caller(ids.a))
    beta = ServiceBackedStorage(directory.for_caller(ids.b))
    await alpha.set("k", {"who": "alpha"})
    assert await beta.get("k") is None
    assert await alpha.get("k") == {"who": "alpha"}
    assert await plugin.health() == {"ready": True, "mode": "persistent"}
    await plugin.on_disable()
