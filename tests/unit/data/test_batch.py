"""Batches: all-or-none in one transaction, or each operation on its own."""

from __future__ import annotations

import pytest

from objectos.data import BatchOperation, DataEngine
from objectos.errors import InvalidField

from .doubles import ALICE


async def test_an_all_or_none_batch_applies_everything_in_one_transaction(
    data: DataEngine,
) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    cursor = (await data.change_log.since(0)).cursor

    results = await data.batch(
        "account",
        [
            {"operation": "create", "data": {"name": "Globex"}},
            {"operation": "update", "id": acme["id"], "data": {"phone": "+1 555 0100"}},
            {"operation": "upsert", "id": "initech", "data": {"name": "Initech"}},
        ],
        actor=ALICE,
    )

    assert [(r.status, r.operation) for r in results] == [
        ("applied", "create"),
        ("applied", "update"),
        ("applied", "upsert"),
    ]
    assert results[1].record is not None and results[1].record["version"] == 2
    assert results[2].id == "initech"
    changes = (await data.change_log.since(cursor)).changes
    assert [c.seq for c in changes] == [cursor + 1, cursor + 2, cursor + 3]


async def test_a_failing_all_or_none_batch_applies_nothing(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    cursor = (await data.change_log.since(0)).cursor

    results = await data.batch(
        "account",
        [
            {"operation": "create", "data": {"name": "Globex"}},
            {"operation": "update", "id": acme["id"], "data": {"website": "not a url"}},
            {"operation": "create", "data": {"name": "Initech"}},
        ],
        actor=ALICE,
    )

    assert [r.status for r in results] == ["rolled_back", "failed", "rolled_back"]
    error = results[1].error
    assert error is not None and error.field_errors[0].field == "website"
    assert await data.count("account", actor=ALICE) == 1
    assert (await data.change_log.since(cursor)).changes == []
    assert results[1].to_dict()["errors"][0]["code"] == "validation_error"


async def test_without_all_or_none_each_operation_stands_alone(data: DataEngine) -> None:
    results = await data.batch(
        "account",
        [
            {"operation": "create", "data": {"name": "Globex"}},
            {"operation": "create", "data": {"name": "Globex"}},
            {"operation": "create", "data": {"name": "Initech"}},
        ],
        actor=ALICE,
        all_or_none=False,
    )

    assert [r.status for r in results] == ["applied", "failed", "applied"]
    assert results[1].error is not None and results[1].error.code == "duplicate_value"
    assert await data.count("account", actor=ALICE) == 2


async def test_upsert_creates_then_updates(data: DataEngine) -> None:
    first = await data.batch(
        "account", [BatchOperation("upsert", {"name": "Acme"}, id="acme")], actor=ALICE
    )
    second = await data.batch(
        "account", [BatchOperation("upsert", {"phone": "+1 555 0100"}, id="acme")], actor=ALICE
    )

    assert first[0].record is not None and first[0].record["version"] == 1
    assert second[0].record is not None and second[0].record["version"] == 2
    assert second[0].record["name"] == "Acme"


async def test_batch_delete_and_its_result_shape(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    [result] = await data.batch("account", [{"operation": "delete", "id": acme["id"]}], actor=ALICE)

    assert result.to_dict() == {
        "index": 0,
        "operation": "delete",
        "success": True,
        "status": "applied",
        "id": acme["id"],
        "data": acme,
    }
    assert await data.count("account", actor=ALICE) == 0


def test_malformed_operations_are_invalid_fields() -> None:
    with pytest.raises(InvalidField):
        BatchOperation.from_dict({"operation": "explode"})
    with pytest.raises(InvalidField):
        BatchOperation.from_dict({"operation": "create", "data": [1, 2]})
    with pytest.raises(InvalidField):
        BatchOperation.from_dict({"operation": "create", "colour": "red"})


async def test_an_update_without_an_id_fails_that_operation(data: DataEngine) -> None:
    results = await data.batch(
        "account", [{"operation": "update", "data": {"name": "x"}}], actor=ALICE
    )

    assert results[0].status == "failed"
    assert results[0].error is not None and results[0].error.field_errors[0].field == "id"
