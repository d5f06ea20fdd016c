"""Permission denials and reads of audited objects are recorded by the data service wrapper."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.audit import AuditedDataService, AuditQuery, AuditStore, SQLAuditSink
from objectos.data import Actor, DataEngine
from objectos.errors import PermissionDenied
from objectos.metadata import MetadataRegistry
from objectos.security.guard import SecuredDataService
from objectos.security.loading import load_security
from objectos.security.permissions import PermissionEngine
from objectos.security.sharing import InMemoryRoleDirectory

from .conftest import SEED

ANN = Actor.user("ann", ["auditor"], context={"ip": "203.0.113.7", "requestId": "r-ann"})
EVE = Actor.user("eve", ["east_rep"], context={"ip": "198.51.100.2", "requestId": "r-eve"})


@pytest.fixture
async def service(
    data: DataEngine, database: AsyncEngine, crm: MetadataRegistry, store: AuditStore
):
    await data.insert("account", {"id": "acme", "name": "Acme", "owner": "eve"}, actor=SEED)
    await data.insert("case", {"id": "k1", "subject": "Printer on fire"}, actor=SEED)
    directory = InMemoryRoleDirectory({"ann": ["auditor"], "eve": ["east_rep"]})
    permissions = PermissionEngine(load_security(crm), crm, directory)
    secured = SecuredDataService(data, permissions, database=database)
    async with SQLAuditSink(store) as sink:
        yield AuditedDataService(secured, sink, audit_reads={"account"})


async def recorded(store: AuditStore, service: AuditedDataService, action: str) -> list:
    await service.sink.flush()
    return (await store.search(AuditQuery.from_params({"action": action}))).events


async def test_a_refused_write_is_recorded_and_still_refused(
    service: AuditedDataService, store: AuditStore
) -> None:
    with pytest.raises(PermissionDenied):
        await service.insert("account", {"name": "Not allowed"}, actor=ANN)

    [denied] = await recorded(store, service, "permission.denied")
    assert (denied.actor, denied.object, denied.ip, denied.request_id) == (
        "ann",
        "account",
        "203.0.113.7",
        "r-ann",
    )
    assert denied.details["operation"] == "insert"
    assert denied.details["code"] == "permission_denied"
    assert denied.details["roles"] == ["auditor"]


async def test_refused_operations_inside_a_batch_are_recorded(
    service: AuditedDataService, store: AuditStore
) -> None:
    results = await service.batch(
        "account", [{"operation": "delete", "id": "acme"}], actor=ANN, all_or_none=False
    )

    assert results[0].status == "failed"
    [denied] = await recorded(store, service, "permission.denied")
    assert (denied.record_id, denied.details["operation"]) == ("acme", "batch.delete")


async def test_reads_of_audited_objects_name_the_records_read(
    service: AuditedDataService, store: AuditStore
) -> None:
    await service.find_one("account", "acme", actor=EVE)
    page = await service.find("account", actor=ANN)
    await service.find("case", actor=ANN)  # not an audited object

    listing, single = sorted(await recorded(store, service, "record.read"), key=lambda e: e.actor)
    assert (listing.actor, listing.record_id, listing.request_id) == ("ann", None, "r-ann")
    assert listing.details["ids"] == [r["id"] for r in page.records]
    assert (single.actor, single.record_id, single.details["operation"]) == (
        "eve",
        "acme",
        "findOne",
    )


async def test_writes_that_pass_are_left_to_the_change_log(
    service: AuditedDataService, store: AuditStore
) -> None:
    await service.update("account", "acme", {"phone": "+1 555 0100"}, actor=EVE)

    assert await recorded(store, service, "permission.denied") == []
    assert await recorded(store, service, "record.read") == []
