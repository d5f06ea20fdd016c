"""HubRecordPermissions in one process: one build, and it follows the metadata files.

A realtime process (gateway, record room) keeps its engine for its whole life,
so it must apply a changed ``*.permission.yml`` or object file as the REST
replicas do, without a restart; and a caller cancelled while the engine builds
must not make the next caller build a second one (each build of a running hub
opens a database engine and starts a role directory's refresh).
"""

from __future__ import annotations

import asyncio
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.gateway import (
    DocumentAuthorizer,
    HubRecordAccess,
    SharedTokenIdentity,
    share_records,
)
from objectos.data import Actor
from objectos.metadata.registry import files_fingerprint
from objectos.realtime.permissions import HubRecordPermissions, RecordPermissions

METADATA = Path(__file__).resolve().parents[3] / "configs" / "metadata"
REP = Actor.user("eve", ["east_rep"])
DEAL = {"id": "o1", "owner": "eve", "name": "Deal", "probability": 40}


@pytest.fixture
def metadata(tmp_path: Path) -> Path:
    """A private copy of the sample CRM's metadata, free to edit."""
    root = tmp_path / "metadata"
    shutil.copytree(METADATA, root)
    return root


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new))


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the change never applied"
        await asyncio.sleep(0.02)


async def test_a_tightened_permission_set_applies_without_a_restart(metadata: Path) -> None:
    records = HubRecordPermissions([str(metadata)], reload_check_s=0.05)
    permissions = await records.ready()
    assert records.can_read(REP, "opportunity", DEAL)
    assert "probability" in records.readable_fields(REP, "opportunity")
    version = records.registry.version
    try:
        rep = metadata / "security" / "sales_rep.permission.yml"
        # Field-level security first: reps no longer see a deal's probability.
        rewrite(
            rep,
            "opportunity.probability: {readable: true, editable: false}",
            "opportunity.probability: {readable: false, editable: false}",
        )
        await eventually(lambda: "probability" not in records.readable_fields(REP, "opportunity"))
        assert records.can_read(REP, "opportunity", DEAL)
        # Then the object permission: no deals at all (the cached predicate recompiles).
        rewrite(
            rep,
            "opportunity: {allowCreate: true, allowRead: true, allowEdit: true, allowDelete: true}",
            "opportunity: {allowCreate: false, allowRead: false, allowEdit: false, "
            "allowDelete: false}",
        )
        await eventually(lambda: not records.can_read(REP, "opportunity", DEAL))
        assert records.readable_fields(REP, "opportunity") == set()
        assert records.registry.version > version
        assert await records.ready() is permissions  # the same engine, reloaded in place
    finally:
        await records.aclose()


async def test_a_new_field_in_an_object_file_is_known_without_a_restart(metadata: Path) -> None:
    records = HubRecordPermissions([str(metadata)], reload_check_s=0.05)
    await records.ready()
    try:
        assert "region" not in records.columns("case")
        case = metadata / "crm" / "case.object.yml"
        case.write_text(
            case.read_text().replace("fields:\n", "fields:\n  region: {type: text}\n", 1)
        )
        await eventually(lambda: "region" in records.columns("case"))
    finally:
        await records.aclose()


async def test_unreadable_metadata_keeps_the_previous_rules(metadata: Path) -> None:
    records = HubRecordPermissions([str(metadata)], reload_check_s=0.05)
    await records.ready()
    try:
        version = records.registry.version
        rep = metadata / "security" / "sales_rep.permission.yml"
        good = rep.read_text()
        rep.write_text(good + "objects: [unclosed\n")  # not even YAML: the registry refuses it
        fingerprint = files_fingerprint([metadata])
        await asyncio.sleep(0.3)  # several checks: the first tries, none applies it
        assert records.registry.version == version
        assert records.can_read(REP, "opportunity", DEAL)
        # Fixed (with a change): the next check reloads.
        rep.write_text(good.replace("  case: {allowRead: true}", "  case: {allowRead: false}"))
        assert files_fingerprint([metadata]) != fingerprint
        await eventually(lambda: records.registry.version > version)
        assert records.readable_fields(REP, "case") == set()
    finally:
        await records.aclose()


async def test_security_metadata_that_does_not_fit_fails_closed(metadata: Path) -> None:
    # The registry loads it, the permission engine refuses it: like REST (503), every
    # record is refused until it is fixed -- never the old, possibly looser, rules.
    records = HubRecordPermissions([str(metadata)], reload_check_s=0.05)
    await records.ready()
    try:
        rep = metadata / "security" / "sales_rep.permission.yml"
        good = rep.read_text()
        rewrite(rep, "  case: {allowRead: true}", "  spaceship: {allowRead: true}")
        await eventually(lambda: not records.can_read(REP, "opportunity", DEAL))
        rep.write_text(good)
        await eventually(lambda: records.can_read(REP, "opportunity", DEAL))
    finally:
        await records.aclose()


async def test_aclose_stops_following_the_files(metadata: Path) -> None:
    records = HubRecordPermissions([str(metadata)], reload_check_s=0.05)
    await records.ready()
    following = records._following
    assert following is not None and not following.done()
    await records.aclose()
    assert following.done() and records._following is None
    await records.aclose()  # idempotent
    version = records.registry.version
    rewrite(
        metadata / "security" / "sales_rep.permission.yml",
        "  case: {allowRead: true}",
        "  case: {allowRead: false}",
    )
    await asyncio.sleep(0.2)
    assert records.registry.version == version


async def test_a_cancelled_waiter_does_not_start_a_second_build(metadata: Path) -> None:
    builds = 0
    records = HubRecordPermissions([str(metadata)], reload_check_s=60)
    build = records._start

    async def counted_build() -> RecordPermissions:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.1)
        return await build()

    records._start = counted_build  # type: ignore[method-assign]
    first = asyncio.create_task(records.ready())
    await asyncio.sleep(0.01)
    first.cancel()  # e.g. the client disconnected during subscribe
    with pytest.raises(asyncio.CancelledError):
        await first
    second = await records.ready()
    assert builds == 1
    assert await records.ready() is second
    await records.aclose()


async def test_a_failed_build_is_retried(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    records = HubRecordPermissions([str(missing)], reload_check_s=60)
    with pytest.raises(Exception, match="does not exist"):
        await records.ready()
    shutil.copytree(METADATA, missing)
    permissions = await records.ready()
    assert permissions.can_read(REP, "opportunity", DEAL)
    await records.aclose()


async def test_a_gateway_shares_one_instance_with_its_record_access(
    metadata: Path, tmp_path: Path
) -> None:
    # As Ray delivers them: the gateway's records and the authorizer's are two copies.
    records = HubRecordPermissions([str(metadata)], reload_check_s=60)
    authorizer = DocumentAuthorizer(
        SharedTokenIdentity("token"),
        HubRecordAccess(records, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"),
    )
    records = pickle.loads(pickle.dumps(records))
    authorizer = pickle.loads(pickle.dumps(authorizer))
    access = authorizer.record_access
    assert isinstance(access, HubRecordAccess) and access.records is not records
    assert share_records(authorizer, records)
    assert access.records is records
    await records.ready()
    await access.records.ready()  # the same build: one engine, one metadata check
    following = records._following
    assert following is not None and not following.done()
    await authorizer.aclose()  # the authorizer's close closes the shared records
    assert following.done() and records._following is None
    # Nothing to share without records or without a HubRecordAccess.
    assert not share_records(authorizer, None)
    assert not share_records(DocumentAuthorizer(SharedTokenIdentity("token")), records)


async def test_aclose_during_the_build_leaves_nothing_running(metadata: Path) -> None:
    records = HubRecordPermissions([str(metadata)], reload_check_s=0.05)
    waiter = asyncio.create_task(records.ready())
    await asyncio.sleep(0)  # the build has started
    await records.aclose()
    assert records._following is None
    await waiter  # the build finished, but follows nothing
    assert records._following is None
