"""The audit plugin on real Ray: writes made anywhere show up in the trail, and a killed
audit process loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import CRM_METADATA, wait_until

from objectos.data import Actor, DataEngine, create_engine
from objectos.metadata import MetadataRegistry

AUDIT = "com.objectos.audit"
ALICE = Actor.user(
    "alice", ["sales_rep"], context={"ip": "203.0.113.7", "userAgent": "it/1", "requestId": "r1"}
)


def hub_plugins(**audit_config: Any) -> dict[str, dict[str, Any]]:
    return {
        "com.objectos.data": {"module": "objectos.plugins.data:DataPlugin"},
        AUDIT: {"module": "objectos.plugins.audit:AuditPlugin", "config": audit_config},
    }


def call(ray: Any, method: str, *args: Any) -> Any:
    from actors.factory import get_plugin_host

    host = get_plugin_host(AUDIT)
    assert host is not None
    return ray.get(host.call_service.remote("audit", method, list(args), {}, "tests"), timeout=30)


def audit_row(ray: Any, kernel: Any) -> dict[str, Any]:
    return next(p for p in ray.get(kernel.plugins.remote()) if p["id"] == AUDIT)


class HubDatabase:
    """The hub's SQLite file, written by this test process as an HTTP replica would."""

    def __init__(self, path: Path) -> None:
        self.runner = asyncio.Runner()
        self.url = f"sqlite+aiosqlite:///{path}"
        self.database = create_engine(self.url)
        self.data = DataEngine(self.database, MetadataRegistry.load([CRM_METADATA]))

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    def audited_seqs(self) -> list[int]:
        async def read() -> list[int]:
            async with self.database.connect() as conn:
                rows = await conn.execute(
                    sa.text("SELECT seq FROM _audit_events WHERE seq IS NOT NULL ORDER BY seq")
                )
                return [int(seq) for (seq,) in rows]

        return list(self.run(read()))

    def close(self) -> None:
        self.run(self.database.dispose())
        self.runner.close()


@pytest.fixture
def hub_db(tmp_path: Path) -> Iterator[HubDatabase]:
    db = HubDatabase(tmp_path / "objectos.db")  # the file hub_manifest points the hub at
    yield db
    db.close()


def test_writes_are_audited_with_old_and_new_values_and_their_request(
    ray_session: Any, start_hub: Any, hub_db: HubDatabase
) -> None:
    ray = ray_session
    kernel = start_hub(hub_plugins(pollIntervalMs=50))
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=120)

    account = hub_db.run(hub_db.data.insert("account", {"name": "Acme"}, actor=ALICE))
    hub_db.run(hub_db.data.update("account", account["id"], {"phone": "+1 555 0100"}, actor=ALICE))

    def trail() -> list[dict[str, Any]]:
        events = call(ray, "trail", "account", account["id"], {"order": "asc"})["events"]
        return events if len(events) == 2 else []

    created, updated = wait_until(trail, timeout=60)
    assert created["action"] == "record.created"
    assert {"field": "name", "old": None, "new": "Acme"} in created["changes"]
    assert updated["changes"] == [{"field": "phone", "old": None, "new": "+1 555 0100"}]
    assert (updated["actor"], updated["ip"], updated["userAgent"], updated["requestId"]) == (
        "alice",
        "203.0.113.7",
        "it/1",
        "r1",
    )
    assert audit_row(ray, kernel)["lifecycle"]["health"]["ready"]


def test_a_killed_audit_process_resumes_without_losing_or_duplicating_events(
    ray_session: Any, start_hub: Any, hub_db: HubDatabase
) -> None:
    ray = ray_session
    # Small batches: the projection is still busy when the process dies.
    kernel = start_hub(hub_plugins(batchSize=5, pollIntervalMs=20))
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=120)
    stop = threading.Event()
    written: list[int] = []
    until = [0]  # once stop is set, write on until this many

    def keep_writing() -> None:
        # Writes go on before, during and after the crash, as live traffic would.
        with asyncio.Runner() as runner:
            database = create_engine(hub_db.url)
            data = DataEngine(database, MetadataRegistry.load([CRM_METADATA]))
            n = 0
            while not stop.is_set() or n < until[0]:
                runner.run(data.insert("account", {"name": f"Account {n}"}, actor=ALICE))
                written.append(n)
                n += 1
            runner.run(database.dispose())

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        wait_until(lambda: hub_db.audited_seqs(), timeout=60)  # the projection is running
        pid = audit_row(ray, kernel)["lifecycle"]["pid"]

        os.kill(pid, signal.SIGKILL)
        until[0] = len(written) + 30  # some writes land while no audit process runs
        stop.set()

        def restarted() -> bool:
            row = audit_row(ray, kernel)
            return row["status"] == "running" and row["restarts"] >= 1

        wait_until(restarted, timeout=120)
        assert audit_row(ray, kernel)["lifecycle"]["pid"] != pid
    finally:
        stop.set()
        writer.join(timeout=120)

    latest = hub_db.run(hub_db.data.change_log.latest())
    assert latest == len(written) >= until[0]
    wait_until(lambda: len(hub_db.audited_seqs()) >= latest, timeout=120)
    # Every version exactly once: nothing lost in the crash, nothing projected twice.
    assert hub_db.audited_seqs() == list(range(1, latest + 1))
    status = call(ray, "status")
    assert status["projection"]["lag"] == 0
