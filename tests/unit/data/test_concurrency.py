"""Optimistic concurrency: versions, expected_version, and concurrent writers."""

from __future__ import annotations

import asyncio

import pytest

from objectos.data import DataEngine
from objectos.errors import ConcurrentModification

from .doubles import ALICE, BOB


async def test_update_with_a_stale_version_is_refused(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=BOB)

    with pytest.raises(ConcurrentModification) as info:
        await data.update(
            "account", account["id"], {"phone": "+1 555 0199"}, actor=ALICE, expected_version=1
        )

    assert info.value.status == 409
    assert info.value.details["currentVersion"] == 2
    assert (await data.find_one("account", account["id"], actor=ALICE))["phone"] == "+1 555 0100"


async def test_update_with_the_current_version_succeeds(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    updated = await data.update(
        "account", account["id"], {"phone": "+1 555 0100"}, actor=ALICE, expected_version=1
    )

    assert updated["version"] == 2


async def test_delete_with_a_stale_version_is_refused(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    await data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=BOB)

    with pytest.raises(ConcurrentModification):
        await data.delete("account", account["id"], actor=ALICE, expected_version=1)

    assert await data.find_one("account", account["id"], actor=ALICE)


async def test_concurrent_updates_of_one_record_each_get_a_version(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    results = await asyncio.gather(
        *(
            data.update("account", account["id"], {"employees": n}, actor=ALICE)
            for n in range(1, 11)
        )
    )

    assert sorted(r["version"] for r in results) == list(range(2, 12))
    assert (await data.find_one("account", account["id"], actor=ALICE))["version"] == 11


async def test_only_one_of_two_racing_expected_version_updates_wins(data: DataEngine) -> None:
    account = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    results = await asyncio.gather(
        data.update("account", account["id"], {"employees": 1}, actor=ALICE, expected_version=1),
        data.update("account", account["id"], {"employees": 2}, actor=BOB, expected_version=1),
        return_exceptions=True,
    )

    assert sorted(type(r).__name__ for r in results) == ["ConcurrentModification", "dict"]
